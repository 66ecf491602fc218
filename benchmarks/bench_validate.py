"""The whole rule catalogue over a generated province with injected faults.

    .venv/bin/python -m benchmarks.bench_validate --parcels 1000000

Generates N parcels over the communes of ``synth.placeable_communes()`` (each with the
generator's faults), maps them onto canonical parcels, then times ``validate()`` (every rule
of ``schemas/rules.yaml``, topology included) and reports wall time, peak memory (RSS) and
whether the findings are exactly the injected faults.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
import warnings
from collections import Counter

import pandas as pd

from landpipe import synth
from landpipe.sources.fields import map_fields
from landpipe.validate import validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=100_000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    communes = synth.placeable_communes()
    per_commune = math.ceil(args.parcels / len(communes))
    count = math.ceil(args.parcels / per_commune)
    start = time.perf_counter()
    frames = [
        synth.generate_delivery(code, n_parcels=per_commune, seed=index)
        for index, code in enumerate(communes[:count])
    ]
    delivery = pd.concat(frames, ignore_index=True)
    parcels, _ = map_fields(delivery)
    print(
        f"generated {len(parcels):,} parcels in {count} communes: "
        f"{time.perf_counter() - start:.1f} s",
        flush=True,
    )
    start = time.perf_counter()
    result = validate(parcels)
    elapsed = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    expected = Counter()
    for fault in synth.FAULTS:
        expected[fault.rule_code] += count
    if count > 1:  # every commune's unknown-commune fault carries the same key 99999/1/12
        expected["ATTR_KEY_DUPLICATE"] += count
    print(
        f"validate (whole catalogue): {elapsed:.1f} s wall, "
        f"{len(parcels) / elapsed:,.0f} parcels/s, peak RSS {peak_gb:.2f} GB"
    )
    print(f"findings: {dict(result.counts())}")
    print(f"exactly the injected faults: {result.counts() == dict(sorted(expected.items()))}")


if __name__ == "__main__":
    main()
