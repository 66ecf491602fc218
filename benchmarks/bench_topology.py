"""Time landpipe's topology rules on a generated province, and PostGIS's overlap search beside it.

    .venv/bin/python -m benchmarks.bench_topology --parcels 100000

Generates N valid parcels over communes of about 8,000 (more per commune when the placeable
communes run out), injects faults (0.1 % of parcels shifted 0.3 m east, some boundaries drawn
twice 0.3 m apart, a few parcels shrunk to slivers), then times in one run:

* landpipe ``topology_findings`` (the four rules) and ``overlaps`` alone, with the process's
  peak resident memory (``ru_maxrss``, generated data included);
* the usual PostGIS overlap search on the same parcels: a table in the scratch database
  ``landpipe_bench_topology`` (created for the run and dropped after; loaded with COPY and
  indexed, untimed), then ``a.geom && b.geom AND ST_Relate(a.geom, b.geom, '2********')``.

Both overlap searches are asked the same question, any shared interior (landpipe with
``min_area_m2=0``), and the pair sets are compared. Geometries go to PostGIS without an SRID:
the relate test does not use it, and the scratch database then needs no landpipe migration.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from collections import Counter
from contextlib import contextmanager

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa
from shapely import affinity

from landpipe import synth, topology
from landpipe.config import Settings
from landpipe.db import database_url, make_engine

SCRATCH_DATABASE = "landpipe_bench_topology"
OVERLAP_SQL = """
SELECT a.id, b.id FROM parcel_bench a JOIN parcel_bench b
    ON a.id < b.id AND a.geom && b.geom AND ST_Relate(a.geom, b.geom, '2********')
"""


@contextmanager
def timed(label: str, results: dict[str, float]):
    """Time the block; a label timed again keeps its best time (``--repeat``)."""
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    results[label] = min(seconds, results.get(label, seconds))
    print(f"{label:<52} {seconds:8.2f} s", flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def generate(n_parcels: int, per_commune: int) -> gpd.GeoDataFrame:
    """``n_parcels`` valid parcels over placeable communes, with a ``source_row``."""
    communes = synth.placeable_communes()
    per_commune = max(per_commune, math.ceil(n_parcels / len(communes)))
    count = math.ceil(n_parcels / per_commune)
    frames = [
        synth.generate_parcels(
            code, n_parcels=min(per_commune, n_parcels - i * per_commune), faults=False
        )
        for i, code in enumerate(communes[:count])
    ]
    parcels = pd.concat(frames, ignore_index=True)
    parcels["source_row"] = np.arange(len(parcels))
    print(f"{len(parcels)} parcels in {count} communes of up to {per_commune}")
    return gpd.GeoDataFrame(parcels, geometry="geometry", crs=synth.CRS)


def inject_faults(parcels: gpd.GeoDataFrame, seed: int = 1) -> dict[str, int]:
    """Shift 0.1 % of parcels 0.3 m east, draw 0.02 % of boundaries twice, shrink a few."""
    rng = np.random.default_rng(seed)
    geometry = np.asarray(parcels.geometry.array, dtype=object).copy()
    n = len(geometry)
    chosen = rng.permutation(n)
    shifted = chosen[: max(1, n // 1000)]
    twice = chosen[len(shifted) : len(shifted) + max(1, n // 5000)]
    shrunk = chosen[len(shifted) + len(twice) :][: max(1, n // 50_000)]
    geometry[shifted] = shapely.transform(geometry[shifted], lambda xy: xy + np.array([0.3, 0.0]))
    # A boundary drawn twice: a lot's back edge pulled 0.3 m away from the lot behind it,
    # leaving a strip closed by the lots on either side. (Pulled from a side neighbour instead,
    # the strip would open onto the street and be no gap.)
    tree = shapely.STRtree(geometry)
    for parcel in twice:
        near = tree.query(geometry[parcel], predicate="touches")
        behind = _lot_behind(geometry[parcel], geometry[near])
        if behind is None:
            continue
        pulled = geometry[parcel].difference(geometry[near[behind]].buffer(0.3, join_style="mitre"))
        geometry[parcel] = max(shapely.get_parts(pulled), key=lambda part: part.area)
    centre = shapely.centroid(geometry[shrunk])
    scale = np.sqrt(0.5 / shapely.area(geometry[shrunk]))
    geometry[shrunk] = [
        affinity.scale(g, s, s, origin=c)
        for g, s, c in zip(geometry[shrunk], scale, centre, strict=True)
    ]
    parcels.geometry = gpd.GeoSeries(geometry, index=parcels.index, crs=parcels.crs)
    return {"shifted 0.3 m": len(shifted), "drawn twice": len(twice), "slivers": len(shrunk)}


def _lot_behind(lot: shapely.Polygon, neighbours: np.ndarray) -> int | None:
    """The neighbour sharing the longest edge across the lot's long axis (its back edge)."""
    corners = shapely.get_coordinates(shapely.oriented_envelope(lot))
    sides = np.diff(corners[:3], axis=0)
    axis = sides[np.argmax(np.hypot(*sides.T))]
    axis /= np.hypot(*axis)
    shared = shapely.intersection(shapely.boundary(lot), neighbours)
    ends = [shapely.get_coordinates(line)[[0, -1]] for line in shared]
    best, best_length = None, 2.0  # at least 2 m of shared edge
    for k, (line, (start, end)) in enumerate(zip(shared, ends, strict=True)):
        along = abs(np.dot(end - start, axis)) / max(np.hypot(*(end - start)), 1e-9)
        if along < 0.3 and line.length > best_length:
            best, best_length = k, line.length
    return best


def _admin(settings: Settings, statements: list[str]) -> sa.URL:
    url = sa.make_url(database_url(settings))
    admin = make_engine(settings, url=url.set(database="postgres").render_as_string(False))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    admin.dispose()
    return url


def scratch_engine(settings: Settings) -> sa.Engine:
    url = _admin(
        settings,
        [
            f'DROP DATABASE IF EXISTS "{SCRATCH_DATABASE}" WITH (FORCE)',
            f'CREATE DATABASE "{SCRATCH_DATABASE}"',
        ],
    )
    return make_engine(settings, url=url.set(database=SCRATCH_DATABASE).render_as_string(False))


def drop_scratch(settings: Settings) -> None:
    """Drop the scratch database: a million-parcel table is not worth keeping."""
    _admin(settings, [f'DROP DATABASE IF EXISTS "{SCRATCH_DATABASE}" WITH (FORCE)'])


def load_table(engine: sa.Engine, parcels: gpd.GeoDataFrame) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
        connection.execute(
            sa.text("CREATE TABLE parcel_bench (id integer PRIMARY KEY, geom geometry)")
        )
    wkb = shapely.to_wkb(np.asarray(parcels.geometry.array, dtype=object), hex=True)
    ids = parcels["source_row"].to_numpy()
    raw = engine.raw_connection()
    try:
        with (
            raw.driver_connection.cursor() as cursor,
            cursor.copy("COPY parcel_bench (id, geom) FROM STDIN") as copy,
        ):
            for start in range(0, len(ids), 50_000):
                rows = zip(ids[start : start + 50_000], wkb[start : start + 50_000], strict=True)
                copy.write("".join(f"{i}\t{g}\n" for i, g in rows))
        raw.driver_connection.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text("CREATE INDEX ON parcel_bench USING gist (geom)"))
        connection.execute(sa.text("VACUUM ANALYZE parcel_bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=100_000)
    parser.add_argument("--per-commune", type=int, default=8_000)
    parser.add_argument("--workers", type=int, default=None, help="threads (default: CPUs)")
    parser.add_argument("--chunk-size", type=int, default=topology.DEFAULT_CHUNK_SIZE)
    parser.add_argument("--no-postgis", action="store_true", help="time landpipe only")
    parser.add_argument(
        "--repeat", type=int, default=1, help="time each search this many times, keep the best"
    )
    args = parser.parse_args()
    results: dict[str, float] = {}

    with timed(f"generate {args.parcels} parcels + inject faults", results):
        parcels = generate(args.parcels, args.per_commune)
        injected = inject_faults(parcels)
    print(f"injected: {injected}")
    rss_before = peak_rss_mb()
    options = {"chunk_size": args.chunk_size, "workers": args.workers}
    for _ in range(args.repeat):
        with timed("landpipe topology_findings (4 rules)", results):
            findings = topology.topology_findings(parcels, {}, **options)
    rss_after = peak_rss_mb()
    print(f"findings: {dict(sorted(Counter(f.rule_code for f in findings).items()))}")
    print(f"peak RSS: {rss_before:.0f} MB before the rules, {rss_after:.0f} MB after")
    for _ in range(args.repeat):
        with timed("landpipe overlaps(min_area_m2=0)", results):
            overlaps = topology.overlaps(parcels, min_area_m2=0.0, **options)
    landpipe_pairs = {
        tuple(sorted((f.source_row, other)))
        for f, other in zip(overlaps, _other_rows(parcels, overlaps), strict=True)
    }
    print(f"landpipe: {len(landpipe_pairs)} overlapping pairs")
    if args.no_postgis:
        return

    settings = Settings()
    engine = scratch_engine(settings)
    try:
        start = time.perf_counter()
        load_table(engine, parcels)
        print(f"{'(untimed) COPY + GiST index + ANALYZE':<52} {time.perf_counter() - start:8.2f} s")
        with engine.connect() as connection:
            plan = connection.execute(sa.text("EXPLAIN " + OVERLAP_SQL)).scalars().all()
            workers = [line.strip() for line in plan if "Workers Planned" in line]
            print(f"PostGIS plan: {workers[0] if workers else 'no parallel workers'}")
            for _ in range(args.repeat):
                with timed("PostGIS && + ST_Relate('2********') self-join", results):
                    rows = connection.execute(sa.text(OVERLAP_SQL)).all()
    finally:
        engine.dispose()
        drop_scratch(settings)
    postgis_pairs = {(min(a, b), max(a, b)) for a, b in rows}
    print(f"PostGIS: {len(postgis_pairs)} overlapping pairs")
    ratio = (
        results["PostGIS && + ST_Relate('2********') self-join"]
        / results["landpipe overlaps(min_area_m2=0)"]
    )
    best = " (best of each)" if args.repeat > 1 else ""
    print(f"overlap search: landpipe {ratio:.1f}× faster than PostGIS{best}")
    only_landpipe = landpipe_pairs - postgis_pairs
    only_postgis = sorted(postgis_pairs - landpipe_pairs)
    # ST_Relate decides with exact predicates; landpipe measures the overlay's area. Where a
    # computed vertex lies a hair inside a neighbour the relate says "2" while the area is 0.
    geometry = np.asarray(parcels.geometry.array, dtype=object)
    first, second = np.array(only_postgis, dtype=np.int64).reshape(-1, 2).T
    area = shapely.area(shapely.intersection(geometry[first], geometry[second]))
    noise = int((area == 0).sum())
    verdict = "agree" if not only_landpipe and noise == len(only_postgis) else "DIFFER"
    print(
        f"overlap pair sets {verdict}: {len(landpipe_pairs & postgis_pairs)} in both, "
        f"{len(only_landpipe)} only in landpipe, {len(only_postgis)} only in PostGIS "
        f"({noise} of them with an intersection area of exactly 0 m²)"
    )
    if verdict == "DIFFER":
        print(f"  e.g. {sorted(only_landpipe)[:5]} {only_postgis[:5]}")


def _other_rows(parcels: gpd.GeoDataFrame, findings) -> list[int]:
    """Source row of each finding's second parcel, found by its key."""
    keys = parcels.set_index(["commune_code", "sheet_no", "parcel_no"])["source_row"]
    return [
        int(keys.loc[(f.other_commune_code, f.other_sheet_no, f.other_parcel_no)]) for f in findings
    ]


if __name__ == "__main__":
    main()
