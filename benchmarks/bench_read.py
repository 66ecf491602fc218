"""Reading speed: landpipe's reader against plain ``pyogrio.read_dataframe`` on one file.

    .venv/bin/python -m benchmarks.bench_read --parcels 100000

Writes a generated N-parcel ViLIS Shapefile (UTF-8 with a .cpg) into a temporary folder, then
times, alternately and ``--repeat`` times each, ``pyogrio.read_dataframe(path)`` and
``landpipe.sources.read_delivery(path)`` (open, fingerprint, encoding detection, read, field
mapping, CRS check, reprojection). Prints the best time of each and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import pyogrio

from landpipe import synth
from landpipe.sources import read_delivery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    communes = synth.placeable_communes()
    per_commune = 8_000
    frames = []
    for index, code in enumerate(communes):
        remaining = args.parcels - index * per_commune
        if remaining <= 0:
            break
        frames.append(
            synth.generate_delivery(code, n_parcels=min(per_commune, remaining), faults=False)
        )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "thua_dat.shp"
        synth.write_delivery(pd.concat(frames, ignore_index=True), path)
        timings: dict[str, list[float]] = {"pyogrio.read_dataframe": [], "landpipe": []}
        for _ in range(args.repeat):
            start = time.perf_counter()
            pyogrio.read_dataframe(path)
            timings["pyogrio.read_dataframe"].append(time.perf_counter() - start)
            start = time.perf_counter()
            read_delivery(path)
            timings["landpipe"].append(time.perf_counter() - start)
    best = {name: min(times) for name, times in timings.items()}
    for name, seconds in best.items():
        print(f"{name:<24} {seconds:6.3f} s  ({args.parcels / seconds:,.0f} parcels/s)")
    print(f"ratio landpipe / pyogrio: {best['landpipe'] / best['pyogrio.read_dataframe']:.2f}")


if __name__ == "__main__":
    main()
