"""Loading the register against named peers, on one generated N-parcel GeoPackage.

    .venv/bin/python -m benchmarks.bench_register --parcels 1000000 [--rounds 3]

Times, in one run and on the same file (each round in a new scratch database; with
``--rounds``, the medians of the rounds' ratios at the end):
(a) ``ogr2ogr -f PostgreSQL`` (COPY) into a fresh table, plus a GiST index;
(b) ``GeoDataFrame.to_postgis`` (read with pyogrio) into a fresh table, plus a GiST index;
(c) landpipe's load into an empty register: read, map, validate (the whole catalogue), merge;
(d) landpipe's re-delivery of the same communes with 1 % of the parcels changed.
(c) and (d) run the steps of a load (:func:`landpipe_load`): read; look which parcels the
register holds unchanged (``landpipe.load.look_at_register``); validate the others; load. Each
is broken down by step. Needs ``ogr2ogr`` (Debian's gdal-bin; ``make bench`` installs it). Uses
a scratch database.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyogrio
import sqlalchemy as sa

from benchmarks.bench_load import scratch_engine
from landpipe import load as loader
from landpipe import register, synth
from landpipe.config import Settings
from landpipe.memory import collector_paused
from landpipe.migrate import upgrade
from landpipe.sources import read_delivery
from landpipe.validate import validate

#: Steps inside a load, timed where they are called: (module, function, label).
_LOAD_STEPS = (
    (loader, "lock_communes", "  commune locks"),
    (register, "take_empty_register", "  drop indexes (empty register)"),
    (register, "registered", "  current versions (key, hash)"),
    (register, "plan", "  plan (compare with the current versions)"),
    (loader, "lock_area", "  area locks"),
    (register, "merge", "  close + hash + COPY new versions"),
    (register, "rebuild", "  build indexes, keys, ANALYZE"),
    (loader, "_against_register", "  topology against the register"),
    (loader, "_close_superseded", "  close superseded findings"),
    (loader, "_copy_findings", "  findings COPY"),
    (loader, "_copy_rejected", "  rejected records COPY"),
)


#: The steps of a load as the flow runs them (:func:`landpipe_load`).
_STEPS = (
    "read, map fields, CRS",
    "unchanged parcels (hashes, register look)",
    "validate (per-parcel rules; topology starts)",
    "load, one transaction:",
)
_BACKGROUND = "topology search, beside the load, ended after"


class CPU:
    """CPU seconds spent by this process, its finished children (``ogr2ogr``) and, when the
    database runs on this machine, the database server (its processes and the ones it reaped).

    Wall time on a machine of few cores is bounded below by the CPU seconds all of them need
    divided by the cores; this shows how much work each contender does, not only how long.
    The server's share is counted once the contender's connections have ended (a backend's
    time reaches the postmaster when it is reaped), and autovacuum is paused meanwhile
    (:meth:`autovacuum_paused`), so that one contender's table is not vacuumed on another's
    account.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        with engine.connect() as connection:
            data_dir = connection.exec_driver_sql("SHOW data_directory").scalar()
        try:
            pid_file = Path(data_dir) / "postmaster.pid"
            self.postmaster = int(pid_file.read_text().split()[0])
            self.server()
        except (OSError, ValueError):
            self.postmaster = None

    @staticmethod
    def _ticks(stat: str) -> tuple[int, int, int, int, int]:
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        ppid, utime, stime, cutime, cstime = (int(fields[i]) for i in (1, 11, 12, 13, 14))
        return ppid, utime, stime, cutime, cstime

    def _children(self) -> dict[int, int]:
        """The postmaster's child processes and their CPU ticks."""
        children = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid, utime, stime, _, _ = self._ticks((entry / "stat").read_text())
            except OSError:
                continue  # ended meanwhile: its time is the postmaster's now
            if ppid == self.postmaster:
                children[int(entry.name)] = utime + stime
        return children

    def server(self) -> float | None:
        if self.postmaster is None:
            return None
        _, utime, stime, cutime, cstime = self._ticks(
            Path(f"/proc/{self.postmaster}/stat").read_text()
        )
        total = utime + stime + cutime + cstime + sum(self._children().values())
        return total / os.sysconf("SC_CLK_TCK")

    def client(self) -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    @contextmanager
    def autovacuum_paused(self) -> Iterator[None]:
        """Autovacuum off on a local server while the contenders run (superuser only)."""
        if self.postmaster is None:
            yield
            return
        with self.engine.connect() as connection:
            superuser = connection.exec_driver_sql("SHOW is_superuser").scalar() == "on"
        if not superuser:
            yield
            return
        self._autovacuum("ALTER SYSTEM SET autovacuum = off")
        try:
            yield
        finally:
            self._autovacuum("ALTER SYSTEM RESET autovacuum")

    def _autovacuum(self, statement: str) -> None:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(statement)
            connection.exec_driver_sql("SELECT pg_reload_conf()")

    @contextmanager
    def measured(self, label: str, into: dict[str, tuple[float, float | None]]) -> Iterator[None]:
        self.engine.dispose()
        before = set(self._children()) if self.postmaster is not None else set()
        client, server = self.client(), self.server()
        yield
        self.engine.dispose()
        deadline = time.monotonic() + 30
        while self.postmaster is not None and time.monotonic() < deadline:
            if set(self._children()) <= before:  # every backend of the contender has ended
                break
            time.sleep(0.05)
        after = self.server()
        into[label] = (
            self.client() - client,
            None if server is None or after is None else after - server,
        )


def generate(n_parcels: int) -> pd.DataFrame:
    communes = synth.placeable_communes()
    per_commune = max(1000, math.ceil(n_parcels / len(communes)))
    frames, remaining = [], n_parcels
    for code in communes:
        if remaining <= 0:
            break
        size = min(per_commune, remaining)
        frames.append(synth.generate_delivery(code, n_parcels=size, faults=False))
        remaining -= size
    return pd.concat(frames, ignore_index=True)


@contextmanager
def timed_steps(steps: dict[str, float]) -> Iterator[None]:
    """Add the time spent in each function of :data:`_LOAD_STEPS` to ``steps``."""
    originals = []
    for module, name, label in _LOAD_STEPS:
        function = getattr(module, name)
        originals.append((module, name, function))

        def wrapper(*args, _function=function, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                steps[_label] += time.perf_counter() - start

        setattr(module, name, wrapper)
    try:
        yield
    finally:
        for module, name, function in originals:
            setattr(module, name, function)


@collector_paused()  # as the flow runs its steps
def landpipe_load(engine: sa.Engine, path: Path, steps: dict[str, float]) -> dict:
    """One load as the flow runs it: read; find the parcels the register holds unchanged;
    validate the others; load."""
    start = time.perf_counter()
    delivery = read_delivery(path)
    steps[_STEPS[0]] = time.perf_counter() - start
    start = time.perf_counter()
    look, unchanged = loader.look_at_register(engine, delivery)
    steps[_STEPS[1]] = time.perf_counter() - start
    start = time.perf_counter()
    validation = validate(delivery.parcels, delivery.findings, unchanged=unchanged)
    returned = time.perf_counter()
    steps[_STEPS[2]] = returned - start
    pending = validation._pending  # the topology search, when it goes on in the background
    if pending is not None:
        pending.add_done_callback(
            lambda _: steps.__setitem__(_BACKGROUND, time.perf_counter() - returned)
        )
    start = time.perf_counter()
    with timed_steps(steps):
        result = loader.load(engine, delivery, validation, started_at=datetime.now(UTC), look=look)
    steps[_STEPS[3]] = time.perf_counter() - start
    body = result.as_json()
    body["checked"] = int(len(validation.parcels) - (validation.unchanged.sum()))
    return body


def run_round(
    engine: sa.Engine, meter: CPU, pg: str, ogr2ogr: str, first: Path, second: Path
) -> tuple[dict[str, float], dict[str, tuple[float, float | None]], dict, dict]:
    """The four contenders once, one after the other, on the same files."""
    times: dict[str, float] = {}
    cpu: dict[str, tuple[float, float | None]] = {}
    steps = {"(c)": defaultdict(float), "(d)": defaultdict(float)}

    label = "(a) ogr2ogr -f PostgreSQL + GiST"
    command = [ogr2ogr, "-f", "PostgreSQL", pg, str(first), "-nln", "peer_ogr2ogr"]
    command += ["-lco", "GEOMETRY_NAME=geom", "-lco", "SPATIAL_INDEX=GIST", "-overwrite"]
    command += ["--config", "PG_USE_COPY", "YES"]
    start = time.perf_counter()
    with meter.measured(label, cpu):
        subprocess.run(command, check=True)
    times[label] = time.perf_counter() - start

    label = "(b) GeoDataFrame.to_postgis + GiST"
    start = time.perf_counter()
    with meter.measured(label, cpu):
        peer = pyogrio.read_dataframe(first).rename_geometry("geom")
        peer.to_postgis("peer_to_postgis", engine, if_exists="replace")
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE INDEX ON peer_to_postgis USING gist (geom)"))
    times[label] = time.perf_counter() - start
    del peer

    label = "(c) landpipe load, empty register"
    start = time.perf_counter()
    with meter.measured(label, cpu):
        first_result = landpipe_load(engine, first, steps["(c)"])
    times[label] = time.perf_counter() - start
    label = "(d) landpipe re-delivery, 1 % changed"
    start = time.perf_counter()
    with meter.measured(label, cpu):
        second_result = landpipe_load(engine, second, steps["(d)"])
    times[label] = time.perf_counter() - start
    return times, cpu, steps, {"(c)": first_result, "(d)": second_result}


def print_round(n: int, times, cpu, steps, results) -> tuple[float, float, float]:
    """The round's times, CPU seconds, steps and ratios; returns the three ratios."""
    cores = os.cpu_count() or 1
    print(f"wall time, rows per second, and CPU seconds (client + database server; {cores} cores)")
    for label, seconds in times.items():
        client, server = cpu[label]
        used = (
            f"{client:6.1f} + {server:5.1f} = {client + server:5.1f}"
            if server is not None
            else (f"{client:6.1f} + n/a (database not on this machine)")
        )
        print(f"{label:<42} {seconds:7.1f} s  {n / seconds:>10,.0f} parcels/s   CPU {used} s")
    a, b, c, d = times.values()
    order = [*_STEPS[:4], *(label for _, _, label in _LOAD_STEPS), _BACKGROUND]
    for run, result in results.items():
        print(f"{run} changes {result['changes']}, {result['checked']:,} parcels checked")
        for label in order:
            if label in steps[run]:
                print(f"    {label:<44} {steps[run][label]:7.2f} s")
    ratios = (a / c, b / c, c / d)
    print(
        f"(c) vs (a): {ratios[0]:.2f}x (target >= 1)   (c) vs (b): {ratios[1]:.2f}x (target >= 3)"
        f"   (d) vs (c): {ratios[2]:.2f}x (target >= 5)",
        flush=True,
    )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=100_000)
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the four contenders this many times"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    ogr2ogr = shutil.which("ogr2ogr")
    if ogr2ogr is None:
        raise SystemExit("ogr2ogr not found: apt-get install gdal-bin (or make bench)")
    with tempfile.TemporaryDirectory() as folder:
        frame = generate(args.parcels)
        first = Path(folder) / "first.gpkg"
        synth.write_delivery(frame, first)
        changed = frame.copy()
        rows = changed.sample(frac=0.01, random_state=1).index
        changed.loc[rows, "TenChu"] = changed.loc[rows, "TenChu"] + " (đã chuyển nhượng)"
        second = Path(folder) / "second.gpkg"
        synth.write_delivery(changed, second)
        n = len(frame)
        print(f"{n:,} parcels in {frame['MaXa'].nunique()} communes", flush=True)
        del frame, changed
        all_ratios = []
        for round_no in range(1, args.rounds + 1):
            # Each round in a new scratch database: (c) loads into an empty register.
            engine = scratch_engine(Settings(), "landpipe_bench_register")
            upgrade(engine)
            url = engine.url
            pg = f"PG:host={url.query['host']} port={url.query.get('port', 5432)}"
            pg += f" dbname={url.database}"
            if url.username:
                pg += f" user={url.username}"
            meter = CPU(engine)
            with meter.autovacuum_paused():
                measured = run_round(engine, meter, pg, ogr2ogr, first, second)
            engine.dispose()
            if args.rounds > 1:
                print(f"-- round {round_no} of {args.rounds}")
            all_ratios.append(print_round(n, *measured))
    if args.rounds > 1:
        medians = [statistics.median(r[i] for r in all_ratios) for i in range(3)]
        print(
            f"medians of {args.rounds} rounds: (c) vs (a) {medians[0]:.2f}x (target >= 1)"
            f"   (c) vs (b) {medians[1]:.2f}x (target >= 3)"
            f"   (d) vs (c) {medians[2]:.2f}x (target >= 5)"
        )


if __name__ == "__main__":
    main()
