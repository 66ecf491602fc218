"""Time each step of a load on a generated delivery, and GeoDataFrame.to_postgis beside it.

    .venv/bin/python -m benchmarks.bench_load --parcels 100000

Uses the embedded cluster of LANDPIPE_HOME (or LANDPIPE_DATABASE_URL) and a scratch database
`landpipe_bench` that it drops and recreates. Prints one line per step with wall seconds.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from landpipe import synth
from landpipe.config import Settings
from landpipe.db import database_url, make_engine
from landpipe.load import load
from landpipe.migrate import upgrade
from landpipe.sources import read_delivery
from landpipe.validate import validate


@contextmanager
def timed(label: str, results: dict[str, float]):
    start = time.perf_counter()
    yield
    results[label] = time.perf_counter() - start
    print(f"{label:<40} {results[label]:8.2f} s", flush=True)


def scratch_engine(settings: Settings, name: str) -> sa.Engine:
    url = sa.make_url(database_url(settings))
    admin = make_engine(settings, url=url.set(database="postgres").render_as_string(False))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_engine(settings, url=url.set(database=name).render_as_string(False))


def generate(n_parcels: int, per_commune: int) -> pd.DataFrame:
    """``n_parcels`` valid parcels spread over communes of ``per_commune`` inside the province."""
    communes = synth.placeable_communes()
    count = math.ceil(n_parcels / per_commune)
    if count > len(communes):
        raise SystemExit(f"{n_parcels} parcels need more than {len(communes)} communes")
    frames = [
        synth.generate_delivery(
            code, n_parcels=min(per_commune, n_parcels - i * per_commune), faults=False
        )
        for i, code in enumerate(communes[:count])
    ]
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=100_000)
    parser.add_argument("--per-commune", type=int, default=8_000)
    args = parser.parse_args()
    settings = Settings()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "delivery.gpkg"
        with timed(f"generate {args.parcels} parcels (GeoPackage)", results):
            synth.write_delivery(generate(args.parcels, args.per_commune), path)
        engine = scratch_engine(settings, "landpipe_bench")
        upgrade(engine)
        with timed("landpipe read + map + CRS + reproject", results):
            delivery = read_delivery(path)
        with timed("landpipe validate (topology included)", results):
            validation = validate(delivery.parcels)
            validation.findings  # noqa: B018 (wait for the topology search to finish)
        with timed("landpipe load (COPY + indexes, one transaction)", results):
            load(engine, delivery, validation, started_at=datetime.now(UTC))
        frame = validation.parcels.rename_geometry("geom")
        frame["land_use_codes"] = frame["land_use_codes"].str.join("+")
        with timed("peer: GeoDataFrame.to_postgis + GiST index", results):
            frame.to_postgis("parcel_peer", engine, schema="public", if_exists="replace")
            with engine.begin() as connection:
                connection.execute(sa.text("CREATE INDEX ON public.parcel_peer USING gist (geom)"))
        engine.dispose()


if __name__ == "__main__":
    main()
