"""Revalidating the register, and what a Prefect run adds to a small load.

    .venv/bin/python -m benchmarks.bench_revalidate --parcels 1000000
    .venv/bin/python -m benchmarks.bench_revalidate --overhead

Revalidation (``--parcels N``), on a register of N generated parcels in the communes that
synth places in the province (loaded once into the scratch database
``landpipe_bench_revalidate``; ``--reuse`` keeps it between runs):
(a) the plain function, commune after commune, in this process (no Prefect);
(b) the ``revalidate`` flow on local worker processes (one per core);
(c) the ``revalidate`` flow on a Dask ``LocalCluster`` of 2 worker processes.
(b) and (c) must leave the same findings in force; the script checks.

Overhead (``--overhead``), on the demo's 2,000-parcel sample, each on an emptied register:
(d) the plain functions: read, validate, load, report;
(e) the ``load_delivery`` flow called in this process, with a Prefect server running;
(f) ``landpipe load`` (a new process) with PREFECT_API_URL pointing at that server;
(g) ``landpipe load`` with no Prefect server configured (Prefect's temporary server);
(h) ``python -c 'import landpipe.flows.load_delivery'``: what a new process costs first.

Prefect flows run against PREFECT_API_URL when it is set; otherwise this script starts a
``prefect server`` of its own for the run. The database is the one of LANDPIPE_HOME or
LANDPIPE_DATABASE_URL, as for the other benchmarks.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from benchmarks.bench_load import scratch_engine
from benchmarks.bench_register import generate, landpipe_load
from landpipe import synth
from landpipe.config import Settings
from landpipe.db import database_url, make_engine
from landpipe.errors import DatabaseError
from landpipe.migrate import upgrade

DATA_TABLES = "land.batch, land.parcel_version, land.parcel_lineage, land.certificate, land.finding"
IN_FORCE = """
SELECT f.rule_code, count(*) FROM land.finding f JOIN land.batch b ON b.id = f.batch_id
WHERE b.kind = 'revalidation' AND f.closed_by_batch_id IS NULL GROUP BY 1 ORDER BY 1
"""


@contextmanager
def prefect_server() -> Iterator[str]:
    """PREFECT_API_URL if set, else a ``prefect server`` started for this run."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tempfile.mkdtemp(prefix="bench-prefect-")
    env = {**os.environ, "PREFECT_HOME": home, "PREFECT_UI_ENABLED": "false", "DO_NOT_TRACK": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise SystemExit("the Prefect server did not start") from None
            time.sleep(0.5)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def timed(label: str, times: dict[str, float], action) -> object:
    start = time.perf_counter()
    value = action()
    times[label] = time.perf_counter() - start
    print(f"{label:<58} {times[label]:8.1f} s", flush=True)
    return value


def register_of(engine: sa.Engine, n_parcels: int, reuse: bool) -> int:
    """Load ``n_parcels`` generated parcels unless ``reuse`` finds them already there."""
    with engine.connect() as connection:
        present = connection.execute(
            sa.text("SELECT count(*) FROM land.parcel_version WHERE valid_to IS NULL")
        ).scalar()
    if reuse and present:
        print(f"reusing the register: {present:,} current parcels", flush=True)
        return present
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "register.gpkg"
        start = time.perf_counter()
        synth.write_delivery(generate(n_parcels), path)
        result = landpipe_load(engine, path)
        print(
            f"register loaded: {result['parcels']['loaded']:,} parcels"
            f" in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    # Damage it, as hand edits would: 1 % of declared areas off by a fifth, 0.1 % of the
    # parcels moved 30 cm onto a neighbour. A revalidation then has findings to make.
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE land.parcel_version SET declared_area_m2 = declared_area_m2 * 1.2"
                " WHERE valid_to IS NULL AND id % 100 = 7;"
                "UPDATE land.parcel_version SET geom = ST_Translate(geom, 0.3, 0)"
                " WHERE valid_to IS NULL AND id % 1000 = 3"
            )
        )
    return result["parcels"]["loaded"]


def in_force(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(IN_FORCE))]


def scratch(name: str, reuse: bool) -> sa.Engine:
    """The scratch database ``name``: made anew, or the one there with ``reuse``."""
    if reuse:
        url = sa.make_url(database_url(Settings())).set(database=name)
        try:
            return make_engine(Settings(), url=url.render_as_string(False))
        except DatabaseError:
            pass  # not there yet
    return scratch_engine(Settings(), name)


def bench_revalidation(n_parcels: int, reuse: bool) -> None:
    engine = scratch("landpipe_bench_revalidate", reuse)
    upgrade(engine)
    n = register_of(engine, n_parcels, reuse)
    os.environ["LANDPIPE_DATABASE_URL"] = engine.url.render_as_string(False)
    os.environ.pop("LANDPIPE_DASK_ADDRESS", None)
    times: dict[str, float] = {}
    from landpipe.revalidate import communes_in_register, revalidate_commune

    communes = communes_in_register(engine)
    print(f"{n:,} parcels in {len(communes)} communes; {os.cpu_count()} cores", flush=True)
    timed(
        "(a) plain function, one commune after another",
        times,
        lambda: [revalidate_commune(engine, code) for code in communes],
    )
    with prefect_server() as api:
        os.environ["PREFECT_API_URL"] = api
        # Prefect reads its settings when first imported: only now, with the API set.
        from distributed import LocalCluster

        from landpipe.flows.revalidate import revalidate

        local = timed(
            f"(b) flow, local processes ({os.cpu_count()})",
            times,
            lambda: revalidate(return_state=True),
        )
        assert local.is_completed(), local.message
        expected = in_force(engine)
        cluster = timed(
            "(c0) start a Dask LocalCluster of 2 worker processes",
            times,
            lambda: LocalCluster(
                n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
            ),
        )
        with cluster:
            dask = timed(
                "(c) flow, Dask LocalCluster (2 worker processes)",
                times,
                lambda: revalidate(dask_address=cluster.scheduler_address, return_state=True),
            )
        assert dask.is_completed(), dask.message
        same = in_force(engine) == expected
    engine.dispose()
    print()
    for label, seconds in times.items():
        print(f"{label:<58} {seconds:8.1f} s  {n / seconds:>10,.0f} parcels/s")
    print(f"findings in force after (b) and after (c) identical: {same}")
    print("in force:", dict(expected))
    if not same:
        raise SystemExit("the Dask run left other findings in force than the local one")


def bench_overhead(repeats: int) -> None:
    engine = scratch("landpipe_bench_overhead", reuse=False)
    upgrade(engine)
    url = engine.url.render_as_string(False)
    os.environ["LANDPIPE_DATABASE_URL"] = url
    home = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    sample = synth.write_delivery(synth.generate_delivery("22924"), home / "thua_dat_22924.shp")
    landpipe = str(Path(sys.executable).with_name("landpipe"))

    def emptied(action):
        def run():
            with engine.begin() as connection:
                connection.execute(sa.text(f"TRUNCATE {DATA_TABLES} RESTART IDENTITY CASCADE"))
            return action()

        return run

    def direct():
        from landpipe.load import load
        from landpipe.report import write_report
        from landpipe.sources import read_delivery
        from landpipe.validate import validate

        delivery = read_delivery(sample)
        validation = validate(delivery.parcels, delivery.findings)
        result = load(engine, delivery, validation, started_at=datetime.now(UTC))
        write_report(engine, result.batch, home / "reports")

    def cli(env):
        def run():
            done = subprocess.run(
                [landpipe, "load", str(sample), "--json"], env=env, capture_output=True
            )
            assert done.returncode == 0, done.stderr.decode()

        return run

    samples: dict[str, list[float]] = {}

    def measure(label: str, action) -> None:
        emptied(action)()  # warm-up (imports, caches, Prefect's database)
        samples[label] = []
        for _ in range(repeats):
            run = emptied(action)
            start = time.perf_counter()
            run()
            samples[label].append(time.perf_counter() - start)
        print(f"{label:<58} {statistics.median(samples[label]):8.2f} s", flush=True)

    measure("(d) plain functions: read, validate, load, report", direct)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    base["LANDPIPE_HOME"] = str(home / "landpipe-home")
    with prefect_server() as api:
        os.environ["PREFECT_API_URL"] = api
        from landpipe.flows.load_delivery import load_delivery

        def flow_in_process():
            state = load_delivery(str(sample), report_dir=str(home / "reports"), return_state=True)
            assert state.is_completed(), state.message

        measure("(e) load_delivery flow in this process (server)", flow_in_process)
        measure(
            "(f) landpipe load, PREFECT_API_URL set (server)", cli({**base, "PREFECT_API_URL": api})
        )
    measure("(g) landpipe load, no server (temporary server)", cli(base))
    measure(
        "(h) new process: import landpipe.flows.load_delivery",
        lambda: subprocess.run(
            [sys.executable, "-c", "import landpipe.flows.load_delivery"], check=True
        ),
    )
    engine.dispose()
    d = statistics.median(samples["(d) plain functions: read, validate, load, report"])
    print()
    for label, values in samples.items():
        median = statistics.median(values)
        print(f"{label:<58} {median:8.2f} s  (+{median - d:5.2f} s vs (d); runs {values})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=100_000)
    parser.add_argument("--reuse", action="store_true", help="keep the register if present")
    parser.add_argument("--overhead", action="store_true", help="measure Prefect's overhead")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.overhead:
        bench_overhead(args.repeats)
    else:
        bench_revalidation(args.parcels, args.reuse)


if __name__ == "__main__":
    main()
