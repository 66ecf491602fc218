"""The register's history, re-deliveries, lineage, certificates, atomicity and concurrency,
against a real PostGIS."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from shapely.geometry import MultiPolygon, Polygon, box

from landpipe import load as loader
from landpipe import synth
from landpipe.sources import read_delivery
from landpipe.validate import validate
from tests.conftest import REPO
from tests.parcels import BOW_TIE, SELF_TOUCHING, X0, Y0, delivery, lot, record
from tests.test_load import load_file, write


def half(i: int, side: int):
    """The west (0) or east (1) half of lot i."""
    return box(X0 + i * 10 + side * 5, Y0, X0 + i * 10 + side * 5 + 5, Y0 + 10)


def both(i: int, j: int):
    return box(X0 + i * 10, Y0, X0 + (j + 1) * 10, Y0 + 10)


def scalar(engine, sql, **params):
    with engine.connect() as connection:
        return connection.execute(sa.text(sql), params).scalar()


def rows(engine, sql, **params):
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(sql), params)]


def current(engine):
    return rows(
        engine,
        "SELECT sheet_no, parcel_no, owner_name, land_use_codes, area_m2"
        " FROM land.parcel ORDER BY 1, 2",
    )


def certify(engine, serial: str, *, parcel_no: int, sheet_no: int = 5) -> None:
    """Issue certificate ``serial`` on the current version of a parcel, to its owner."""
    with engine.begin() as connection:
        connection.execute(
            sa.text("""
            INSERT INTO land.certificate (serial, commune_code, sheet_no, parcel_no,
                                          parcel_version_id, holder, issued_on)
            SELECT :serial, commune_code, sheet_no, parcel_no, id, owner_name, '2026-05-01'
            FROM land.parcel WHERE sheet_no = :sheet AND parcel_no = :parcel"""),
            {"serial": serial, "sheet": sheet_no, "parcel": parcel_no},
        )


def first_delivery():
    """Sheet 5: six lots, parcels 1-6; sheet 6: one lot, far east."""
    return [record(i) for i in range(6)] + [record(20, SoHieuToBanDo=6, SoThuTuThua=1)]


def second_delivery():
    """Sheet 5 only: 1 unchanged, 2 new owner, 3 split into 7+8, 4+5 merged into 9, 6 gone."""
    return [
        record(0),
        record(1, TenChu="Lê Thị Hoa"),
        record(2, SoThuTuThua=7, geometry=half(2, 0), DienTich=50.0),
        record(2, SoThuTuThua=8, geometry=half(2, 1), DienTich=50.0),
        record(3, SoThuTuThua=9, geometry=both(3, 4), DienTich=200.0),
    ]


def test_a_date_means_vietnamese_midnight_in_the_register(register, tmp_path):
    """The register's sessions count time in Vietnam's: the README's
    land.parcels_at('22924', '2026-01-01') is the commune when that day began in Bình Thuận.
    (Under the server's UTC the date was 07:00 there, and a load made at 03:00 showed.)"""
    load_file(register, write(tmp_path, first_delivery(), "d1.gpkg"))
    with register.begin() as connection:
        connection.execute(
            sa.text("UPDATE land.parcel_version SET valid_from = :at"),
            {
                "at": datetime(2025, 12, 31, 20, tzinfo=UTC)  # 03:00 on 1 January in Vietnam
            },
        )
    fresh = sa.create_engine(register.url)  # a session as psql, QGIS or a notebook opens it
    try:
        assert scalar(fresh, "SHOW timezone") == "Asia/Ho_Chi_Minh"
        count = "SELECT count(*) FROM land.parcels_at('22924', '{}')"
        assert scalar(fresh, count.format("2026-01-01")) == 0
        assert scalar(fresh, count.format("2026-01-01 03:00")) == 7
        assert scalar(fresh, count.format("2026-01-02")) == 7
        assert scalar(fresh, "SELECT min(loaded_at)::text FROM land.parcel").endswith("+07")
    finally:
        fresh.dispose()


def test_three_deliveries_keep_every_version(register, tmp_path):
    first = load_file(register, write(tmp_path, first_delivery(), "d1.gpkg"))
    assert first.changes == {"added": 7, "changed": 0, "unchanged": 0, "retired": 0}
    between = scalar(register, "SELECT clock_timestamp()")
    time.sleep(0.01)

    second = load_file(register, write(tmp_path, second_delivery(), "d2.gpkg"))
    assert second.changes == {"added": 3, "changed": 1, "unchanged": 1, "retired": 4}

    third_records = second_delivery()
    third_records[0]["KyHieuMucDichSuDung"] = "ODT+CLN"
    third = load_file(register, write(tmp_path, third_records, "d3.gpkg"))
    assert third.changes == {"added": 0, "changed": 1, "unchanged": 4, "retired": 0}

    # land.parcel shows exactly the current parcels; sheet 6 was never touched.
    assert [(s, p) for s, p, *_ in current(register)] == [
        (5, 1),
        (5, 2),
        (5, 7),
        (5, 8),
        (5, 9),
        (6, 1),
    ]
    assert current(register)[0][3] == ["ODT", "CLN"]
    assert current(register)[1][2] == "Lê Thị Hoa"
    # Every version stays: 7 + 3 added + 1 changed, + 1 changed.
    assert scalar(register, "SELECT count(*) FROM land.parcel_version") == 12
    # The commune as it was between the first and second delivery.
    then = rows(
        register,
        "SELECT sheet_no, parcel_no, owner_name FROM land.parcels_at('22924', :at) ORDER BY 1, 2",
        at=between,
    )
    assert then == [(5, n, "Nguyễn Văn An") for n in range(1, 7)] + [(6, 1, "Nguyễn Văn An")]
    # The batch records the counts.
    counts = rows(
        register, "SELECT n_added, n_changed, n_unchanged, n_retired FROM land.batch ORDER BY id"
    )
    assert counts == [(7, 0, 0, 0), (3, 1, 1, 4), (0, 1, 4, 0)]
    # Lineage: 3 was split into 7 and 8; 4 and 5 were merged into 9.
    ancestry = rows(
        register,
        "SELECT parcel_no, how FROM land.parcel_ancestry('22924', 5, 9)"
        " WHERE generation = 1 ORDER BY parcel_no",
    )
    assert ancestry == [(4, "split/merge"), (5, "split/merge")]
    # A key retired since: its last version, and the versions before it.
    assert rows(
        register, "SELECT generation, parcel_no, how FROM land.parcel_ancestry('22924', 5, 6)"
    ) == [(0, 6, "retired")]
    children = rows(
        register,
        """
        SELECT c.parcel_no, l.shared_area_m2 FROM land.parcel_lineage l
        JOIN land.parcel_version p ON p.id = l.parent_version_id
        JOIN land.parcel_version c ON c.id = l.child_version_id
        WHERE p.parcel_no = 3 ORDER BY 1""",
    )
    assert children == [(7, 50.0), (8, 50.0)]
    # Parcel 1's ancestry holds its earlier version.
    assert rows(register, "SELECT generation, how FROM land.parcel_ancestry('22924', 5, 1)") == [
        (0, "current"),
        (1, "earlier version"),
    ]


def test_a_rejected_record_keeps_its_current_version(register, tmp_path):
    load_file(register, write(tmp_path, first_delivery(), "d1.gpkg"))
    records = first_delivery()[:6]
    records[0] = record(0, geometry=BOW_TIE, TenChu="Sai Hình")
    result = load_file(register, write(tmp_path, records, "d2.gpkg"))
    assert result.rejected == 1
    assert result.changes == {"added": 0, "changed": 0, "unchanged": 5, "retired": 0}
    assert current(register)[0][2] == "Nguyễn Văn An"


def test_a_record_rejected_again_or_loaded_closes_the_findings_of_its_earlier_rejection(
    register, tmp_path
):
    """A broken record of a kept parcel, delivered again and again (renamed, in another
    format), leaves one rejection in force, not one per delivery; delivered fixed, none."""
    load_file(register, write(tmp_path, first_delivery(), "d1.gpkg"))
    broken = first_delivery()[:6]
    broken[0] = record(0, geometry=BOW_TIE, TenChu="Sai Hình")
    open_findings = (
        "SELECT batch_id, rule_code FROM land.finding WHERE closed_by_batch_id IS NULL"
        " AND sheet_no = 5 AND parcel_no = 1 ORDER BY 1, 2"
    )
    batches = []
    for name in ("d2.gpkg", "d2 copy.gpkg", "d2.geojson"):
        result = load_file(register, write(tmp_path, broken, name))
        assert result.rejected == 1 and result.changes["unchanged"] == 5
        batches.append(result.batch)
        assert rows(register, open_findings) == [(result.batch, "GEOM_INVALID")]
    assert result.closed == 1
    assert scalar(register, "SELECT n_closed FROM land.batch WHERE id = :b", b=result.batch) == 1
    # The earlier ones are closed by the batch that delivered the key again.
    assert rows(
        register,
        "SELECT batch_id, closed_by_batch_id FROM land.finding WHERE parcel_no = 1 ORDER BY 1",
    ) == [(batches[0], batches[1]), (batches[1], batches[2]), (batches[2], None)]
    fixed = load_file(register, write(tmp_path, first_delivery()[:6], "d3.gpkg"))
    assert fixed.changes == {"added": 0, "changed": 0, "unchanged": 6, "retired": 0}
    assert rows(register, open_findings) == []
    assert fixed.closed == 1


def test_a_certified_parcel_that_changes_is_flagged_and_its_history_kept(register, tmp_path):
    load_file(register, write(tmp_path, first_delivery(), "d1.gpkg"))
    certify(register, "CS 123456", parcel_no=2)
    ready_before = rows(register, "SELECT parcel_no FROM land.parcel_ready WHERE sheet_no = 5")
    assert (2,) not in ready_before and (3,) in ready_before  # it holds a certificate already
    result = load_file(register, write(tmp_path, second_delivery(), "d2.gpkg"))
    assert result.issues.get("CERT_CHANGED") == 1
    flagged = rows(
        register,
        "SELECT parcel_no, severity, detail->>'certificate' FROM land.finding"
        " WHERE rule_code = 'CERT_CHANGED'",
    )
    assert flagged == [(2, "block", "CS 123456")]
    assert (2,) not in rows(register, "SELECT parcel_no FROM land.parcel_ready WHERE sheet_no = 5")
    # The certified version is still there, closed, and the new one is current.
    certified = rows(
        register,
        """
        SELECT v.owner_name, v.valid_to IS NOT NULL FROM land.certificate c
        JOIN land.parcel_version v ON v.id = c.parcel_version_id""",
    )
    assert certified == [("Nguyễn Văn An", True)]
    assert current(register)[1][2] == "Lê Thị Hoa"


def test_ready_view_needs_an_owner_and_known_land_use(register, tmp_path):
    records = [record(0), record(1, TenChu=None), record(2, KyHieuMucDichSuDung="XYZ")]
    # A dash or question mark typed where the owner is not known is no owner's name.
    records += [record(3, TenChu="-"), record(4, TenChu=" ? "), record(5, TenChu="Ân")]
    load_file(register, write(tmp_path, records, "d.gpkg"))
    assert rows(register, "SELECT parcel_no FROM land.parcel_ready") == [(1,), (6,)]


def _worker(path, env):
    return subprocess.Popen(
        [sys.executable, "-m", "tests.load_worker", str(path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _worker_env(settings):
    return {
        **os.environ,
        "LANDPIPE_DATABASE_URL": settings.database_url,
        "LANDPIPE_HOME": str(settings.home),
    }


def _quiet(engine, timeout: float = 60) -> None:
    """Wait until no other session works in the database: the server ends a killed client's
    session only when it next talks to it, and that session may still hold its locks."""
    deadline = time.monotonic() + timeout
    while (
        scalar(
            engine,
            """
            SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()
              AND state <> 'idle'""",
        )
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)


def _consistent(engine) -> None:
    """Every batch is whole: its versions and findings are all there, and nothing else."""
    broken = scalar(
        engine,
        """
        SELECT count(*) FROM land.batch b
        WHERE b.status = 'loaded' AND (
            (SELECT count(*) FROM land.parcel_version v WHERE v.batch_id = b.id)
                <> b.n_added + b.n_changed
            OR b.n_added + b.n_changed + b.n_unchanged <> b.n_loaded)""",
    )
    assert broken == 0
    orphans = scalar(
        engine,
        "SELECT count(*) FROM land.parcel_version v"
        " WHERE NOT EXISTS (SELECT 1 FROM land.batch b WHERE b.id = v.batch_id)",
    )
    assert orphans == 0


def test_sigkill_at_random_points_leaves_no_partial_batch(register, settings, tmp_path):
    env = _worker_env(settings)
    base = synth.generate_delivery("22924", n_parcels=3000, faults=False)
    paths = []
    for run in range(20):
        changed = base.copy()
        changed.loc[run * 100 : run * 100 + 150, "TenChu"] = f"Chủ lần {run}"
        paths.append(synth.write_delivery(changed, tmp_path / f"run{run}" / "thua_dat.gpkg"))
    # How long one load takes here, to spread the kills over it.
    started = time.monotonic()
    done = _worker(paths[0], env)
    assert done.wait(timeout=300) == 0, done.stderr.read()
    duration = time.monotonic() - started
    rng = random.Random(20261127)
    outcomes = {"killed": 0, "finished": 0}
    for path in paths[1:] + paths[:1]:
        before = current(register)
        batches = scalar(register, "SELECT count(*) FROM land.batch")
        worker = _worker(path, env)
        time.sleep(rng.uniform(0.0, duration * 1.1))
        worker.send_signal(signal.SIGKILL)
        code = worker.wait(timeout=60)
        outcomes["finished" if code == 0 else "killed"] += 1
        _quiet(register)
        _consistent(register)
        after = current(register)
        if scalar(register, "SELECT count(*) FROM land.batch") == batches:
            assert after == before  # killed before commit: exactly as before
        else:
            assert len(after) == len(before)  # committed: no parcel lost
    assert outcomes["killed"] >= 5, outcomes


def test_loads_of_one_commune_are_serialised_and_others_are_not(register, settings, tmp_path):
    env = _worker_env(settings)
    mine = write(tmp_path, first_delivery(), "mine.gpkg")
    other = write(
        tmp_path,
        [record(i, MaXa="22927", SoHieuToBanDo=1) for i in range(3)],
        "other.gpkg",
    )
    url = settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(hashtext('landpipe:commune:' || '22924'))")
        blocked, free = _worker(mine, env), _worker(other, env)
        assert free.wait(timeout=120) == 0, free.stderr.read()  # another commune goes ahead
        time.sleep(2)
        assert blocked.poll() is None  # this commune waits for the lock
        holder.execute("ROLLBACK")
    assert blocked.wait(timeout=120) == 0, blocked.stderr.read()
    assert sorted(rows(register, "SELECT DISTINCT commune_code FROM land.parcel")) == [
        ("22924",),
        ("22927",),
    ]


def test_two_concurrent_loads_of_one_commune_both_land_in_turn(register, settings, tmp_path):
    env = _worker_env(settings)
    load_file(register, write(tmp_path, first_delivery(), "d1.gpkg"))
    a = write(tmp_path, [record(i, TenChu="Chủ A") for i in range(6)], "a.gpkg")
    b = write(tmp_path, [record(i, TenChu="Chủ B") for i in range(6)], "b.gpkg")
    workers = [_worker(a, env), _worker(b, env)]
    codes = [w.wait(timeout=120) for w in workers]
    assert codes == [0, 0], [w.stderr.read()[-2000:] for w in workers]
    changes = rows(register, "SELECT n_changed, n_unchanged FROM land.batch ORDER BY id")
    assert changes == [(0, 0), (6, 0), (6, 0)]  # each saw the other's result, none lost
    owners = {owner for _, _, owner, *_ in current(register) if owner != "Nguyễn Văn An"}
    assert len(owners) == 1
    _consistent(register)


def west_then_east(register, monkeypatch, west, east) -> tuple[dict, bool]:
    """Load ``west``, hold it before it commits, load ``east`` beside it, then let both end.
    Returns their results by name, and whether ``east`` was still waiting after 2 s."""
    inside, release = threading.Event(), threading.Event()
    copy_rejected = loader._copy_rejected

    def held_before_commit(conn, *args):
        copy_rejected(conn, *args)
        if threading.current_thread().name == "west":
            inside.set()  # its checks are made; it has not committed
            assert release.wait(timeout=60)

    monkeypatch.setattr(loader, "_copy_rejected", held_before_commit)
    outcomes = {}

    def run(name, delivery):
        try:
            outcomes[name] = loader.load(
                register, delivery, validate(delivery.parcels), started_at=datetime.now(UTC)
            )
        except Exception as err:  # reported below
            outcomes[name] = err

    first = threading.Thread(target=run, args=("west", west), name="west")
    first.start()
    assert inside.wait(timeout=60)
    second = threading.Thread(target=run, args=("east", east), name="east")
    second.start()
    second.join(timeout=2)
    waited = second.is_alive()  # it waits for the squares the first holds
    release.set()
    first.join(timeout=120)
    second.join(timeout=120)
    assert all(isinstance(o, loader.LoadResult) for o in outcomes.values()), outcomes
    return outcomes, waited


def test_loads_of_neighbouring_communes_side_by_side_see_each_others_overlap(
    register, tmp_path, monkeypatch
):
    """Two loads of different communes whose parcels overlap across the border: the second
    waits for the first (they lock the same squares of the plane) and finds the overlap;
    side by side, each would have checked against a register without the other's parcels."""
    load_file(register, write(tmp_path, [record(20, SoHieuToBanDo=6, SoThuTuThua=1)], "e.gpkg"))
    west = read_delivery(write(tmp_path, [record(0), record(1)], "west.gpkg"))
    east = read_delivery(
        write(
            tmp_path,
            [
                record(
                    0,
                    MaXa="22927",
                    SoHieuToBanDo=1,
                    geometry=box(X0 + 19.5, Y0, X0 + 29.5, Y0 + 10),
                )
            ],
            "east.gpkg",
        )
    )
    _, waited = west_then_east(register, monkeypatch, west, east)
    assert waited
    overlaps = rows(
        register,
        "SELECT commune_code, sheet_no, parcel_no, other_commune_code, other_sheet_no,"
        " other_parcel_no FROM land.finding WHERE rule_code = 'TOPO_OVERLAP'",
    )
    assert {frozenset([(a, b, c), (d, e, f)]) for a, b, c, d, e, f in overlaps} == {
        frozenset([("22924", 5, 2), ("22927", 1, 1)])
    }


def test_a_load_waits_for_a_neighbour_retiring_the_parcel_it_would_overlap(
    register, tmp_path, monkeypatch
):
    """A re-delivery that retires a border parcel, and writes nothing near it, locks the
    squares around it: a load of the next commune that adds a parcel there waits for it, and
    checks against the register without the retired parcel (no overlap)."""
    load_file(register, write(tmp_path, [record(0), record(1)], "west1.gpkg"))
    west = read_delivery(write(tmp_path, [record(0)], "west2.gpkg"))  # parcel 2 is gone
    east = read_delivery(
        write(
            tmp_path,
            [record(0, MaXa="22927", SoHieuToBanDo=1, geometry=box(X0 + 12, Y0, X0 + 22, Y0 + 10))],
            "east.gpkg",
        )
    )
    outcomes, waited = west_then_east(register, monkeypatch, west, east)
    assert outcomes["west"].changes["retired"] == 1
    assert waited
    assert (
        scalar(register, "SELECT count(*) FROM land.finding WHERE rule_code = 'TOPO_OVERLAP'") == 0
    )


def test_a_hand_edit_that_sets_a_content_hash_still_forgets_the_record_hash(register, tmp_path):
    load_file(register, write(tmp_path, [record(i) for i in range(2)], "d1.gpkg"))
    with register.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE land.parcel_version SET owner_name = 'Trần Văn Bình',"
                " content_hash = land.parcel_content_hash(geom, land_use_codes, declared_area_m2,"
                " legal_area_m2, 'Trần Văn Bình', address) WHERE parcel_no = 2"
            )
        )
    assert rows(
        register,
        "SELECT parcel_no, record_hash IS NULL, content_hash IS NULL FROM land.parcel_version"
        " ORDER BY 1",
    ) == [(1, False, True), (2, True, False)]
    result, _ = load_as_the_flow_does(
        register, write(tmp_path, [record(i) for i in range(2)], "d2.gpkg")
    )
    assert result.changes == {"added": 0, "changed": 1, "unchanged": 1, "retired": 0}


def advisory_locks(conn) -> list[tuple[str, int, int]]:
    """(mode, key 1, key 2) of the two-key advisory locks this session holds."""
    return sorted(
        conn.execute(
            "SELECT mode, classid::int, objid::int FROM pg_locks WHERE locktype = 'advisory'"
            " AND objsubid = 2 AND pid = pg_backend_pid()"
        ).fetchall()
    )


def test_lock_area_takes_squares_or_the_whole_plane(register):
    from landpipe.load import AREA_LOCK_CELL_M, AREA_LOCK_MAX_CELLS, lock_area

    whole = -(2**31)
    size = AREA_LOCK_CELL_M
    few = np.array([box(2.5 * size, 3.5 * size, 2.5 * size + 10, 3.5 * size + 10)], dtype=object)
    wide = np.array([box(0, 0, size * (AREA_LOCK_MAX_CELLS + 5), 10)], dtype=object)
    raw = register.raw_connection()
    try:
        conn = raw.driver_connection
        conn.autocommit = True  # each block below its own transaction
        for shared in (False, True):
            with conn.transaction():
                lock_area(conn, few, shared=shared)
                mode = "ShareLock" if shared else "ExclusiveLock"
                assert advisory_locks(conn) == sorted([("ShareLock", whole, whole), (mode, 2, 3)])
            with conn.transaction():
                lock_area(conn, wide, shared=shared)
                assert advisory_locks(conn) == [(mode, whole, whole)]
            assert advisory_locks(conn) == []  # let go at the end of the transaction
    finally:
        conn.autocommit = False
        raw.close()


def test_declining_to_take_the_register_whole_lets_go_of_the_table(register, tmp_path):
    load_file(register, write(tmp_path, [record(0)], "d1.gpkg"))  # not empty any more
    raw = register.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.transaction():
            assert loader.register.take_empty_register(conn) is None
            held = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()"
                " AND relation = 'land.parcel_version'::regclass AND mode = 'AccessExclusiveLock'"
            ).fetchone()[0]
            assert held == 0
    finally:
        raw.close()


def test_area_cells_cover_each_parcel_and_its_reach():
    from landpipe.load import AREA_LOCK_CELL_M, area_cells

    size = AREA_LOCK_CELL_M
    parcels = np.array(
        [
            box(2.5 * size, 3.5 * size, 2.5 * size + 10, 3.5 * size + 10),  # inside one
            box(5 * size - 0.4, 7 * size - 0.4, 5 * size + 9, 7 * size + 9),  # on a corner
            box(-1.2 * size, 0, 1.1 * size, 10),  # wider than a square
            None,
        ],
        dtype=object,
    )
    assert area_cells(parcels, reach=0.5) == sorted(
        [
            (2, 3),
            (4, 6),
            (4, 7),
            (5, 6),
            (5, 7),
            (-2, -1),
            (-1, -1),
            (0, -1),
            (1, -1),
            (-2, 0),
            (-1, 0),
            (0, 0),
            (1, 0),
        ]
    )
    # A parcel 0.3 m from a square's edge reaches into it when the reach is 0.5 m.
    near = np.array([box(size - 10.3, 10, size - 0.3, 20)], dtype=object)
    assert area_cells(near, reach=0.5) == [(0, 0), (1, 0)]
    assert area_cells(near, reach=0.2) == [(0, 0)]


def test_a_load_that_began_before_another_of_its_commune_dates_its_changes_after_it(
    register, tmp_path, monkeypatch
):
    """A load whose transaction began first but got the commune's lock second (a thread
    held up between the two) changes versions the other made: it dates its changes after
    them, never before they began."""
    load_file(register, write(tmp_path, first_delivery(), "d1.gpkg"))
    late = read_delivery(write(tmp_path, [record(i, TenChu="Chủ B") for i in range(6)], "b.gpkg"))
    began, other_done = threading.Event(), threading.Event()
    lock_communes = loader.lock_communes

    def held_up(conn, codes):
        if threading.current_thread().name == "late":
            conn.execute("SELECT now()")  # its transaction has begun
            began.set()
            assert other_done.wait(timeout=60)
        lock_communes(conn, codes)

    monkeypatch.setattr(loader, "lock_communes", held_up)
    outcome = {}

    def run_late():
        try:
            outcome["result"] = loader.load(
                register, late, validate(late.parcels), started_at=datetime.now(UTC)
            )
        except Exception as err:  # reported below
            outcome["error"] = err

    thread = threading.Thread(target=run_late, name="late")
    thread.start()
    assert began.wait(timeout=60)
    load_file(register, write(tmp_path, [record(i, TenChu="Chủ A") for i in range(6)], "a.gpkg"))
    other_done.set()
    thread.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].changes["changed"] == 6
    assert (
        scalar(register, "SELECT count(*) FROM land.parcel_version WHERE valid_to < valid_from")
        == 0
    )
    owners = rows(register, "SELECT DISTINCT owner_name FROM land.parcel WHERE sheet_no = 5")
    assert owners == [("Chủ B",)]
    # As of any moment, one version per key.
    assert (
        scalar(
            register,
            "SELECT count(*) FROM land.parcel_version a JOIN land.parcel_version b"
            " ON (a.commune_code, a.sheet_no, a.parcel_no) = (b.commune_code, b.sheet_no,"
            " b.parcel_no) AND a.id < b.id"
            " AND tstzrange(a.valid_from, a.valid_to) && tstzrange(b.valid_from, b.valid_to)",
        )
        == 0
    )
    _consistent(register)


# --------------------------------------------------------------------------- re-deliveries


def load_as_the_flow_does(engine, path):
    """Read, find the parcels the register holds unchanged, validate the others, load."""
    read = read_delivery(path)
    look, unchanged = loader.look_at_register(engine, read)
    validation = validate(read.parcels, read.findings, unchanged=unchanged)
    result = loader.load(engine, read, validation, started_at=datetime.now(UTC), look=look)
    return result, validation


def test_the_load_plans_from_the_looks_comparison_as_from_its_own(register, tmp_path):
    """The load takes the look's comparison of every delivered parcel instead of comparing
    again (but for a geometry validation repaired, compared as repaired): the same plan as
    comparing afresh, for unchanged, changed, repaired, rejected, added and retired parcels."""
    from landpipe import register as registry

    repaired = record(2, geometry=shift(SELF_TOUCHING, 20), DienTich=round(SELF_TOUCHING.area, 1))
    load_file(register, write(tmp_path, [record(i) for i in (0, 1, 3, 4)] + [repaired], "1.gpkg"))
    again = [
        record(0),  # unchanged
        record(1, TenChu="Lê Thị Hoa"),  # changed
        repaired,  # delivered as invalid as before: unchanged once repaired
        record(3, geometry=BOW_TIE, TenChu="Sai Hình"),  # rejected: its version stays
        record(5),  # added; parcel 5 (lot 4) is retired
    ]
    read = read_delivery(write(tmp_path, again, "2.gpkg"))
    look, unchanged = loader.look_at_register(register, read)
    validation = validate(read.parcels, read.findings, unchanged=unchanged)
    assert look.delivered is not None and validation.repaired and len(validation.rejected)
    raw = register.raw_connection()
    try:
        conn = raw.driver_connection
        reused = registry.plan(conn, look.current, read, validation, delivered=look.delivered)
        afresh = registry.plan(conn, look.current, read, validation)
    finally:
        raw.close()
    for name in ("records", "previous", "same", "stale", "retired"):
        assert np.array_equal(getattr(reused, name), getattr(afresh, name)), name
    assert list(reused.same) == [True, False, True, False]
    assert len(reused.retired) == 1


def findings_of(engine, batch):
    return rows(
        engine,
        "SELECT rule_code, parcel_no, other_parcel_no FROM land.finding WHERE batch_id = :batch"
        " ORDER BY 1, 2, 3",
        batch=batch,
    )


def test_stored_content_hash_is_the_sql_definition(register, tmp_path):
    # A first load leaves content hashes to the SQL function: load into a register that is
    # not empty (another sheet), so that the loader stores its own.
    load_file(register, write(tmp_path, [record(40, SoHieuToBanDo=6)], "other.gpkg"))
    hole = box(X0, Y0, X0 + 10, Y0 + 10).difference(box(X0 + 4, Y0 + 4, X0 + 6, Y0 + 6))
    records = [
        record(0),
        record(1, KyHieuMucDichSuDung=None, DienTich=None, TenChu=None, DiaChi=None),
        record(2, KyHieuMucDichSuDung="ONT+CLN", DienTich=99.96, TenChu="Đặng Thị Ánh Tuyết"),
        record(3, geometry=MultiPolygon([box(X0 + 30, Y0, X0 + 34, Y0 + 10), half(3, 1)])),
        record(5, geometry=hole, DienTich=96.0),
        record(6, DienTich=-3.04, TenChu="  Ông  Ba  "),
        record(7, geometry=shift(SELF_TOUCHING, 80), DienTich=round(SELF_TOUCHING.area, 1)),
    ]
    assert load_file(register, write(tmp_path, records, "d.gpkg")).repaired == 1
    stored = rows(
        register,
        "SELECT parcel_no, content_hash = land.parcel_content_hash(geom, land_use_codes,"
        " declared_area_m2, legal_area_m2, owner_name, address) FROM land.parcel_version"
        " WHERE sheet_no = 5 ORDER BY 1",
    )
    assert stored == [(n, True) for n in (1, 2, 3, 4, 6, 7, 8)]


def shift(geometry, dx, dy=0.0):
    from shapely.affinity import translate

    return translate(geometry, xoff=dx, yoff=dy)


def test_a_repaired_parcel_delivered_again_is_unchanged(register, tmp_path):
    records = [
        record(0),
        record(2, geometry=shift(SELF_TOUCHING, 20), DienTich=round(SELF_TOUCHING.area, 1)),
    ]
    load_file(register, write(tmp_path, records, "d1.gpkg"))
    # The repaired version keeps no record hash: its record makes it only through the repair.
    assert rows(
        register, "SELECT parcel_no, record_hash IS NULL FROM land.parcel_version ORDER BY 1"
    ) == [(1, False), (3, True)]
    # Delivered as invalid as before: compared by content, so checked and repaired again, into
    # what the register holds.
    result, validation = load_as_the_flow_does(register, write(tmp_path, records, "d2.gpkg"))
    assert list(validation.unchanged) == [True, False]
    assert result.changes == {"added": 0, "changed": 0, "unchanged": 2, "retired": 0}
    assert result.repaired == 1
    # Its findings stay those of the batch that loaded it: no second GEOM_REPAIRED.
    assert findings_of(register, result.batch) == [] and result.issues == {}
    assert (
        scalar(register, "SELECT count(*) FROM land.parcel_version WHERE record_hash IS NULL") == 1
    )


@pytest.mark.parametrize(
    ("overrides", "changed"),
    [
        ({}, False),
        ({"DienTich": 100.04}, False),  # the register keeps areas to 0.1 m²
        ({"DienTich": 100.06}, True),
        ({"DienTich": None}, True),
        ({"DienTichPhapLy": 100.0}, True),
        ({"TenChu": "Lê Thị Hoa"}, True),  # the same geometry with another owner
        ({"TenChu": None}, True),
        ({"DiaChi": "14 Trần Hưng Đạo, phường Phú Thủy"}, True),
        ({"KyHieuMucDichSuDung": "ODT+CLN"}, True),
        ({"KyHieuMucDichSuDung": "CLN+ODT"}, True),  # the order of the codes counts
        ({"KyHieuMucDichSuDung": "ODT, "}, False),  # read as the same one code
        ({"geometry": box(X0, Y0, X0 + 10, Y0 + 10.001)}, True),  # two corners moved 1 mm
        ({"geometry": box(X0, Y0, X0 + 10, Y0 + 10.0001)}, False),  # a round trip's 0.1 mm
        # The same square drawn the other way round, or from another corner: the same vertices
        # (the coordinate table numbers them clockwise from the north-west either way).
        (
            {"geometry": Polygon([(X0, Y0), (X0, Y0 + 10), (X0 + 10, Y0 + 10), (X0 + 10, Y0)])},
            False,
        ),
        (
            {"geometry": Polygon([(X0, Y0 + 10), (X0, Y0), (X0 + 10, Y0), (X0 + 10, Y0 + 10)])},
            False,
        ),
        # One more vertex, on the boundary as it was: the coordinate table changes.
        (
            {
                "geometry": Polygon(
                    [(X0, Y0), (X0 + 5, Y0), (X0 + 10, Y0), (X0 + 10, Y0 + 10), (X0, Y0 + 10)]
                )
            },
            True,
        ),
        ({"GhiChu": "đã kiểm tra"}, False),  # another delivered field: not what 'changed' means
    ],
)
def test_changed_means_what_the_register_compares(register, tmp_path, overrides, changed):
    first = [record(i, DienTichPhapLy=None) for i in range(3)]
    for r in first:
        r["GhiChu"] = ""
    load_file(register, write(tmp_path, first, "d1.gpkg"))
    again = [dict(r) for r in first]
    again[0].update(overrides)
    result, validation = load_as_the_flow_does(register, write(tmp_path, again, "d2.gpkg"))
    assert result.changes == {
        "added": 0,
        "changed": int(changed),
        "unchanged": 3 - int(changed),
        "retired": 0,
    }
    assert list(validation.unchanged) == [not changed, True, True]
    # The same verdict as comparing the columns themselves, the way the register stored them
    # (the geometry: as many vertices, none farther than half a millimetre from the other).
    delivered = read_delivery(tmp_path / "d2.gpkg").parcels.iloc[[0]]
    same = scalar(
        register,
        """
        SELECT ST_NPoints(v.geom) = ST_NPoints(ST_GeomFromWKB(:wkb, 9218))
           AND ST_HausdorffDistance(v.geom, ST_GeomFromWKB(:wkb, 9218)) <= 0.0005
           AND v.land_use_codes = CAST(:codes AS text[])
           AND v.declared_area_m2 IS NOT DISTINCT FROM CAST(:declared AS numeric(14, 1))
           AND v.legal_area_m2 IS NOT DISTINCT FROM CAST(:legal AS numeric(14, 1))
           AND v.owner_name IS NOT DISTINCT FROM :owner AND v.address IS NOT DISTINCT FROM :address
        FROM land.parcel_version v WHERE v.parcel_no = 1 AND v.batch_id = 1""",
        wkb=delivered.geometry.iloc[0].wkb,
        codes=delivered["land_use_codes"].iloc[0],
        declared=_number(delivered["declared_area_m2"].iloc[0]),
        legal=_number(delivered["legal_area_m2"].iloc[0]),
        owner=_text(delivered["owner_name"].iloc[0]),
        address=_text(delivered["address"].iloc[0]),
    )
    assert same is (not changed)


def _number(value):
    return None if value != value else round(float(value), 1)


def _text(value):
    return value if isinstance(value, str) else None


def test_redelivery_checks_changed_parcels_against_their_unchanged_neighbours(register, tmp_path):
    first = [record(i) for i in range(6)]
    first[4]["KyHieuMucDichSuDung"] = "XYZ"  # blocked from the first load on
    one = load_file(register, write(tmp_path, first, "d1.gpkg"))
    assert findings_of(register, one.batch) == [("ATTR_LAND_USE_UNKNOWN", 5, None)]
    # Parcel 2 reaches 0.5 m into parcel 3, which is delivered unchanged.
    again = [dict(r) for r in first]
    again[1]["geometry"] = box(X0 + 10, Y0, X0 + 20.5, Y0 + 10)
    again[1]["DienTich"] = 105.0
    result, validation = load_as_the_flow_does(register, write(tmp_path, again, "d2.gpkg"))
    assert result.changes == {"added": 0, "changed": 1, "unchanged": 5, "retired": 0}
    assert list(validation.unchanged) == [True, False, True, True, True, True]
    # The overlap is found (and parcel 2's edges that do not meet parcel 3's); the unchanged
    # parcels' own findings are not made again.
    assert findings_of(register, result.batch) == [
        ("TOPO_EDGE_MISMATCH", 2, None),
        ("TOPO_OVERLAP", 2, 3),
    ]
    assert result.issues == {"TOPO_EDGE_MISMATCH": 1, "TOPO_OVERLAP": 1}
    # Both parcels of the overlap are blocked, and parcel 5 still is, by the first batch.
    blocked = rows(register, "SELECT parcel_no FROM land.parcel_detail WHERE blocked ORDER BY 1")
    assert blocked == [(2,), (3,), (5,)]


def test_redelivery_finds_a_changed_parcels_overlap_with_a_registered_sheet(register, tmp_path):
    from shapely.affinity import translate

    load_file(register, write(tmp_path, [record(i) for i in range(3)], "sheet5.gpkg"))
    sheet6 = [
        record(0, SoHieuToBanDo=6, geometry=translate(lot(2), xoff=10)),
        record(1, SoHieuToBanDo=6, geometry=translate(lot(3), xoff=10)),
    ]
    assert load_file(register, write(tmp_path, sheet6, "s6a.gpkg")).issues == {}
    sheet6[0]["geometry"] = translate(lot(2), xoff=9.5)  # now 0.5 m into parcel 5/3
    result, _ = load_as_the_flow_does(register, write(tmp_path, sheet6, "s6b.gpkg"))
    assert result.changes == {"added": 0, "changed": 1, "unchanged": 1, "retired": 0}
    assert findings_of(register, result.batch) == [("TOPO_OVERLAP", 1, 3)]


def blocked_parcels(engine):
    return [
        n
        for (n,) in rows(
            engine, "SELECT parcel_no FROM land.parcel_detail WHERE blocked ORDER BY 1"
        )
    ]


def test_a_redelivery_that_fixes_an_overlap_unblocks_the_unchanged_neighbour(register, tmp_path):
    first = [record(i) for i in range(4)]
    first[1]["geometry"] = box(X0 + 10, Y0, X0 + 20.5, Y0 + 10)  # 0.5 m into parcel 3
    first[1]["DienTich"] = 105.0
    one = load_file(register, write(tmp_path, first, "d1.gpkg"))
    assert ("TOPO_OVERLAP", 2, 3) in findings_of(register, one.batch)
    assert blocked_parcels(register) == [2, 3]
    # Parcel 2 comes back fixed; parcel 3 is delivered unchanged.
    fixed = [record(i) for i in range(4)]
    two, _ = load_as_the_flow_does(register, write(tmp_path, fixed, "d2.gpkg"))
    assert two.changes == {"added": 0, "changed": 1, "unchanged": 3, "retired": 0}
    assert findings_of(register, two.batch) == []
    assert blocked_parcels(register) == []
    closed = rows(
        register,
        "SELECT rule_code, parcel_no, other_parcel_no FROM land.finding"
        " WHERE closed_by_batch_id = :b ORDER BY 1",
        b=two.batch,
    )
    assert ("TOPO_OVERLAP", 2, 3) in closed
    assert scalar(register, "SELECT n_closed FROM land.batch WHERE id = :b", b=two.batch) == len(
        closed
    )
    assert two.closed == len(closed) and two.as_json()["closed"] == len(closed)
    # It overlaps again: both are blocked again, by the new batch's finding.
    three, _ = load_as_the_flow_does(register, write(tmp_path, first, "d3.gpkg"))
    assert ("TOPO_OVERLAP", 2, 3) in findings_of(register, three.batch)
    assert blocked_parcels(register) == [2, 3]
    # Findings of other rules, and of parcels the delivery left alone, stay in force.
    assert scalar(
        register,
        "SELECT count(*) FROM land.finding WHERE batch_id = :b AND closed_by_batch_id IS NULL",
        b=three.batch,
    ) == len(findings_of(register, three.batch))


def test_a_gap_filled_by_a_third_parcel_no_longer_blocks_the_two_it_was_reported_between(
    register, tmp_path
):
    top = box(X0, Y0 + 10, X0 + 20.3, Y0 + 20)
    parcels = [
        record(0),  # parcel 1: west of the gap
        record(1, geometry=box(X0 + 10.3, Y0, X0 + 20.3, Y0 + 10)),  # parcel 2: east of it
        record(2, geometry=top, DienTich=203.0),  # parcel 3: above
        record(3, geometry=box(X0, Y0 - 10, X0 + 20.3, Y0), DienTich=203.0),  # 4: below
    ]
    one = load_file(register, write(tmp_path, parcels, "d1.gpkg"))
    assert ("TOPO_GAP", 1, 2) in findings_of(register, one.batch)
    assert {1, 2} <= set(blocked_parcels(register))
    # Parcel 3 comes back with a tongue that fills the gap; the gap named parcels 1 and 2.
    filled = [dict(r) for r in parcels]
    filled[2]["geometry"] = top.union(box(X0 + 10, Y0, X0 + 10.3, Y0 + 10))
    filled[2]["DienTich"] = 206.0
    two, _ = load_as_the_flow_does(register, write(tmp_path, filled, "d2.gpkg"))
    assert two.changes == {"added": 0, "changed": 1, "unchanged": 3, "retired": 0}
    assert "TOPO_GAP" not in {rule for rule, *_ in findings_of(register, two.batch)}
    assert (
        scalar(
            register,
            "SELECT count(*) FROM land.finding WHERE rule_code = 'TOPO_GAP'"
            " AND closed_by_batch_id IS NULL",
        )
        == 0
    )
    assert not {1, 2} & set(blocked_parcels(register))


def test_register_changed_since_the_look_is_validated_again(register, tmp_path):
    first = [record(i) for i in range(3)]
    load_file(register, write(tmp_path, first, "d1.gpkg"))
    late = [dict(r) for r in first]
    late[2]["KyHieuMucDichSuDung"] = "XYZ"
    read = read_delivery(write(tmp_path, late, "d2.gpkg"))
    look, unchanged = loader.look_at_register(register, read)
    assert list(unchanged) == [True, True, False]
    stale = validate(read.parcels, read.findings, unchanged=unchanged)
    # Meanwhile another load of the commune changes parcels 1 and 3.
    between = [dict(r) for r in first]
    between[0]["TenChu"] = "Lê Thị Hoa"
    between[2]["TenChu"] = "Lê Thị Hoa"
    load_file(register, write(tmp_path, between, "between.gpkg"))
    result = loader.load(register, read, stale, started_at=datetime.now(UTC), look=look)
    # Parcel 1 is changed back, parcel 3 changed again: both checked, as if never skipped.
    assert result.changes == {"added": 0, "changed": 2, "unchanged": 1, "retired": 0}
    assert findings_of(register, result.batch) == [("ATTR_LAND_USE_UNKNOWN", 3, None)]
    assert [owner for *_, owner, _, _ in current(register)] == ["Nguyễn Văn An"] * 3


def reads_of_the_register(monkeypatch) -> list[list[tuple[str, int]]]:
    """The sheets of each read of current versions (register.registered), in a load or a look."""
    calls = []
    registered = loader.register.registered

    def counted(conn, sheets):
        calls.append(sheets)
        return registered(conn, sheets)

    monkeypatch.setattr(loader.register, "registered", counted)
    return calls


def test_the_load_uses_the_look_when_nothing_changed_since(register, tmp_path, monkeypatch):
    first = [record(i) for i in range(3)]
    load_file(register, write(tmp_path, first, "d1.gpkg"))
    # Loads and revalidations of other communes since the look do not matter.
    load_file(register, write(tmp_path, [record(0, MaXa="22927")], "other.gpkg"))
    again = [dict(r) for r in first]
    again[1]["TenChu"] = "Lê Thị Hoa"
    read = read_delivery(write(tmp_path, again, "d2.gpkg"))
    reads = reads_of_the_register(monkeypatch)
    look, unchanged = loader.look_at_register(register, read)
    load_file(register, write(tmp_path, [record(1, MaXa="22927")], "other2.gpkg"))
    validation = validate(read.parcels, read.findings, unchanged=unchanged)
    result = loader.load(register, read, validation, started_at=datetime.now(UTC), look=look)
    assert reads.count([("22924", 5)]) == 1  # the look's read only
    assert result.changes == {"added": 0, "changed": 1, "unchanged": 2, "retired": 0}
    # Without a look, or after a batch of the commune since, the load reads again.
    read = read_delivery(write(tmp_path, first, "d3.gpkg"))
    look, unchanged = loader.look_at_register(register, read)
    load_file(register, write(tmp_path, [record(9)], "d4.gpkg"))  # sheet 5 of 22924 again
    validation = validate(read.parcels, read.findings, unchanged=unchanged)
    result = loader.load(register, read, validation, started_at=datetime.now(UTC), look=look)
    assert reads.count([("22924", 5)]) == 4  # the look, d4's load, and this load again
    assert result.changes == {"added": 3, "changed": 0, "unchanged": 0, "retired": 1}


def test_a_parcel_edited_in_the_database_is_compared_as_it_now_is(register, tmp_path):
    first = [record(i) for i in range(3)]
    load_file(register, write(tmp_path, first, "d1.gpkg"))
    with register.begin() as connection:  # a technician corrects parcel 2's owner by hand
        connection.execute(
            sa.text(
                "UPDATE land.parcel_version SET owner_name = 'Trần Văn Bình'"
                " WHERE valid_to IS NULL AND parcel_no = 2"
            )
        )
    # The edit forgets the version's record hash: its record no longer makes what it holds.
    assert (
        scalar(register, "SELECT count(*) FROM land.parcel_version WHERE record_hash IS NULL") == 1
    )
    # The same parcels again, and one more: parcel 2 differs from the register now.
    again = [*first, record(3)]
    result, validation = load_as_the_flow_does(register, write(tmp_path, again, "d2.gpkg"))
    assert result.changes == {"added": 1, "changed": 1, "unchanged": 2, "retired": 0}
    assert list(validation.unchanged) == [True, False, True, False]
    assert [owner for *_, owner, _, _ in current(register)] == ["Nguyễn Văn An"] * 4


def test_a_version_stored_without_hashes_is_compared_by_its_content(register, tmp_path):
    # As in a register loaded before versions kept their record's hash.
    first = [record(i) for i in range(3)]
    load_file(register, write(tmp_path, first, "d1.gpkg"))
    with register.begin() as connection:
        connection.execute(
            sa.text("UPDATE land.parcel_version SET content_hash = NULL, record_hash = NULL")
        )
    again = [dict(r) for r in first]
    again[1]["TenChu"] = "Lê Thị Hoa"
    result, validation = load_as_the_flow_does(register, write(tmp_path, again, "d2.gpkg"))
    assert result.changes == {"added": 0, "changed": 1, "unchanged": 2, "retired": 0}
    assert list(validation.unchanged) == [True, False, True]
    # The unchanged versions got their record's hash (the next delivery matches them by it)
    # and their content hash (made for the comparison).
    assert rows(
        register,
        "SELECT parcel_no, record_hash IS NOT NULL, content_hash = land.parcel_content_hash("
        "geom, land_use_codes, declared_area_m2, legal_area_m2, owner_name, address)"
        " FROM land.parcel_version WHERE valid_to IS NULL ORDER BY 1",
    ) == [(1, True, True), (2, True, True), (3, True, True)]


def secondary_objects(engine):
    return rows(
        engine,
        """
        SELECT 'index', pg_get_indexdef(indexrelid) FROM pg_index
        WHERE indrelid = 'land.parcel_version'::regclass
        UNION ALL
        SELECT 'constraint', conrelid::regclass || ' ' || conname || ' '
                             || pg_get_constraintdef(oid) FROM pg_constraint
        WHERE 'land.parcel_version'::regclass IN (conrelid, confrelid)
        UNION ALL
        SELECT 'trigger', tgname || ' ' || tgenabled::text FROM pg_trigger
        WHERE tgrelid = 'land.parcel_version'::regclass AND NOT tgisinternal
        ORDER BY 1, 2""",
    )


def test_first_load_into_an_empty_register_builds_the_same_indexes_and_keys(register, tmp_path):
    before = secondary_objects(register)
    assert len([kind for kind, _ in before if kind == "index"]) >= 5
    assert any("land.certificate" in text for kind, text in before if kind == "constraint")
    load_file(register, write(tmp_path, first_delivery(), "d1.gpkg"))
    assert secondary_objects(register) == before
    assert scalar(register, "SELECT count(*) FROM land.parcel") == 7


def test_every_version_has_the_area_postgis_computes_of_its_geometry(register, tmp_path):
    """The loader writes area_m2 (first load and later ones, parcels repaired by validation
    included); a write other than a load's gets it from the trigger, a value set by hand
    included."""
    rng = np.random.default_rng(5)
    odd = [  # many vertices, holes, several parts, coordinates to the micrometre
        Polygon([(X0 + 40 + 7 * np.cos(a), Y0 + 7 * np.sin(a)) for a in np.linspace(0, 6.2, 97)]),
        box(X0 + 60, Y0, X0 + 75.123456, Y0 + 9.987654).difference(
            box(X0 + 62, Y0 + 2, X0 + 64.05, Y0 + 4.05)
        ),
        MultiPolygon([box(X0 + 80, Y0, X0 + 81.25, Y0 + 1), box(X0 + 83, Y0, X0 + 84, Y0 + 2.5)]),
        Polygon(np.c_[X0 + 90 + rng.uniform(0, 9, 3), Y0 + rng.uniform(0, 9, 3)]),
    ]
    first = [record(i) for i in range(3)]
    first += [record(10 + i, geometry=g) for i, g in enumerate(odd)]
    first.append(record(20, geometry=SELF_TOUCHING))  # repaired by validation
    load_file(register, write(tmp_path, first, "d1.gpkg"))
    # 3 changed, 14 and the repaired 21 retired, 22 added, the others unchanged.
    second = [
        *first[:2],
        record(2, geometry=half(2, 0)),
        *first[3:-2],
        record(21, geometry=lot(30, 3.3)),
    ]
    load_file(register, write(tmp_path, second, "d2.gpkg"))
    with register.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE land.parcel_version SET geom = ST_Multi(ST_Buffer(geom, 0.37))"
                " WHERE parcel_no = 1 AND valid_to IS NULL"
            )
        )
        connection.execute(
            sa.text("UPDATE land.parcel_version SET area_m2 = 1 WHERE parcel_no = 2")
        )
        connection.execute(
            sa.text(
                "INSERT INTO land.parcel_version (commune_code, sheet_no, parcel_no, batch_id,"
                " valid_from, change, geom, area_m2)"
                " SELECT commune_code, sheet_no, 99, batch_id, now(), 'added',"
                " ST_Multi(ST_Translate(geom, 0, 500)), 0 FROM land.parcel WHERE parcel_no = 11"
            )
        )
    with register.begin() as connection:  # as a load, or with no PostGIS on the search path
        connection.execute(sa.text("SET LOCAL landpipe.loading = 'on'"))
        connection.execute(
            sa.text("UPDATE land.parcel_version SET area_m2 = 2 WHERE parcel_no IN (11, 22)")
        )
        connection.execute(
            sa.text(
                "INSERT INTO land.parcel_version (commune_code, sheet_no, parcel_no, batch_id,"
                " valid_from, change, geom)"
                " SELECT commune_code, sheet_no, 98, batch_id, now(), 'added',"
                " ST_Multi(ST_Translate(geom, 0, 600)) FROM land.parcel WHERE parcel_no = 12"
            )
        )
        connection.execute(sa.text("SET LOCAL search_path = land"))
        connection.execute(
            sa.text(
                "UPDATE land.parcel_version SET geom = public.ST_Multi("
                "public.ST_Buffer(geom, 0.11)) WHERE parcel_no = 13"
            )
        )
    assert scalar(register, "SELECT count(*) FROM land.parcel_version") == 12
    assert (
        rows(
            register,
            "SELECT parcel_no, valid_to IS NULL, area_m2::text FROM land.parcel_version"
            " WHERE area_m2 IS DISTINCT FROM round(ST_Area(geom)::numeric, 1)",
        )
        == []
    )
    assert scalar(register, "SELECT area_m2 FROM land.parcel WHERE parcel_no = 1") > 100


def test_first_load_by_a_role_that_owns_only_parcel_version_takes_the_ordinary_path(
    register, settings, tmp_path
):
    """Taking the empty register whole alters the tables whose keys point to it: a loader
    that does not own them all loads row by row into the indexes instead."""
    from landpipe.db import make_engine

    role = f"landpipe_clerk_{os.getpid()}"
    with register.begin() as connection:
        for statement in (
            f"CREATE ROLE {role} LOGIN",
            f"GRANT USAGE ON SCHEMA land TO {role}",
            f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA land TO {role}",
            f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA land TO {role}",
            f"ALTER TABLE land.parcel_version OWNER TO {role}",
        ):
            connection.execute(sa.text(statement))
    before = secondary_objects(register)
    clerk = make_engine(
        settings.model_copy(
            update={"database_url": settings.database_url.replace("//landpipe@", f"//{role}@")}
        )
    )
    try:
        assert scalar(clerk, "SELECT current_user") == role
        result = load_file(clerk, write(tmp_path, first_delivery(), "d1.gpkg"))
        assert (result.status, result.loaded) == ("loaded", 7)
        assert secondary_objects(register) == before
    finally:
        clerk.dispose()
        with register.begin() as connection:
            connection.execute(sa.text("ALTER TABLE land.parcel_version OWNER TO CURRENT_USER"))
            connection.execute(sa.text(f"DROP OWNED BY {role}"))
            connection.execute(sa.text(f"DROP ROLE {role}"))


def test_failed_first_load_leaves_the_indexes_and_keys(register, tmp_path, monkeypatch):
    before = secondary_objects(register)

    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(loader, "_copy_findings", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        load_file(register, write(tmp_path, first_delivery(), "d1.gpkg"))
    assert secondary_objects(register) == before
    assert scalar(register, "SELECT count(*) FROM land.parcel_version") == 0


def load_as_the_flow_does_with(engine, path, **options):
    """:func:`load_as_the_flow_does`, reading with ``options`` (``landpipe load``'s)."""
    read = read_delivery(path, **options)
    look, unchanged = loader.look_at_register(engine, read)
    validation = validate(read.parcels, read.findings, unchanged=unchanged)
    result = loader.load(engine, read, validation, started_at=datetime.now(UTC), look=look)
    return result, validation


def test_a_first_load_keeps_record_hashes_and_leaves_content_hashes_to_sql(register, tmp_path):
    load_file(register, write(tmp_path, [record(i) for i in range(3)], "d1.gpkg"))
    assert (
        rows(
            register,
            "SELECT length(record_hash), content_hash IS NULL FROM land.parcel_version ORDER BY id",
        )
        == [(16, True)] * 3
    )


def spoil_content_hashes(engine):
    """Content hashes that match nothing: a parcel compared by content counts as changed."""
    with engine.begin() as connection:  # (content_hash is no content column: no trigger)
        connection.execute(sa.text("UPDATE land.parcel_version SET content_hash = '\\x00'"))


def test_a_re_delivered_record_is_matched_by_its_record_hash(register, tmp_path):
    first = [record(i) for i in range(3)]
    load_file(register, write(tmp_path, first, "d1.gpkg"))
    spoil_content_hashes(register)
    again = [dict(r) for r in first]
    again[2]["TenChu"] = "Lê Thị Hoa"
    result, validation = load_as_the_flow_does(register, write(tmp_path, again, "d2.gpkg"))
    # Parcels 1 and 2 by their record hash; parcel 3's record differs, and so does its content.
    assert result.changes == {"added": 0, "changed": 1, "unchanged": 2, "retired": 0}
    assert list(validation.unchanged) == [True, True, False]


def test_records_read_otherwise_are_compared_by_content_then_matched_by_record(register, tmp_path):
    first = [record(i) for i in range(3)]
    load_file(register, write(tmp_path, first, "d1.gpkg"))
    before = rows(register, "SELECT record_hash FROM land.parcel_version ORDER BY id")
    # The same records read with --scale: another reading context, so no record hash
    # matches. Their content is the same (the file has no scale field): nothing changes, and
    # the versions take the record hashes of this reading.
    result, _ = load_as_the_flow_does_with(
        register, write(tmp_path, first, "d2.gpkg"), map_scale=500
    )
    assert result.changes == {"added": 0, "changed": 0, "unchanged": 3, "retired": 0}
    after = rows(register, "SELECT record_hash FROM land.parcel_version ORDER BY id")
    assert [a != b and b is not None for a, b in zip(before, after, strict=True)] == [True] * 3
    spoil_content_hashes(register)  # from now on, matched by record hash alone
    result, validation = load_as_the_flow_does_with(
        register, write(tmp_path, first, "d3.gpkg"), map_scale=500
    )
    assert result.changes == {"added": 0, "changed": 0, "unchanged": 3, "retired": 0}
    assert list(validation.unchanged) == [True] * 3


# --------------------------------------------------------------------------- what a delivery leaves


def test_a_sheet_with_no_accepted_record_is_not_delivered_anew(register, tmp_path):
    # Sheet 5: parcels 1-6; sheet 6: parcel 1.
    load_file(register, write(tmp_path, first_delivery(), "d1.gpkg"))
    # Nothing usable: a rejected delivery retires nothing and changes nothing.
    broken, _ = load_as_the_flow_does(
        register, write(tmp_path, [record(0, geometry=BOW_TIE)], "d2.gpkg")
    )
    assert broken.status == "rejected"
    assert broken.changes == {"added": 0, "changed": 0, "unchanged": 0, "retired": 0}
    assert len(current(register)) == 7
    # Sheet 5 has accepted records, so its absent parcels retire; sheet 6's only record was
    # rejected, so its parcel stays.
    mixed = [record(0), record(1), record(20, SoHieuToBanDo=6, SoThuTuThua=1, geometry=BOW_TIE)]
    result, _ = load_as_the_flow_does(register, write(tmp_path, mixed, "d3.gpkg"))
    assert result.changes == {"added": 0, "changed": 0, "unchanged": 2, "retired": 4}
    assert [(s, p) for s, p, *_ in current(register)] == [(5, 1), (5, 2), (6, 1)]


def test_a_parcel_whose_record_was_rejected_under_a_wrong_key_is_not_retired(register, tmp_path):
    first = [record(i) for i in range(6)]
    load_file(register, write(tmp_path, first, "d1.gpkg"))
    # Parcels 5 and 6 typed as parcel 4: the three records share a key and are rejected.
    # Parcel 1 is gone from the delivery: it retires; 5 and 6 stand where their records lie.
    second = [first[1], first[2], first[3]]
    second += [dict(first[4], SoThuTuThua=4), dict(first[5], SoThuTuThua=4)]
    result, _ = load_as_the_flow_does(register, write(tmp_path, second, "d2.gpkg"))
    assert result.rejected == 3
    assert result.changes == {"added": 0, "changed": 0, "unchanged": 2, "retired": 1}
    assert [p for _, p, *_ in current(register)] == [2, 3, 4, 5, 6]
    # A rejected record over far more than a parcel (a sheet's frame) is not that parcel.
    frame = record(30, SoThuTuThua=None, geometry=box(X0 - 5, Y0 - 5, X0 + 65, Y0 + 15))
    third = [first[1], first[2], first[3], frame]
    result, _ = load_as_the_flow_does(register, write(tmp_path, third, "d3.gpkg"))
    assert result.changes == {"added": 0, "changed": 0, "unchanged": 3, "retired": 2}


def test_a_changed_parcel_is_checked_against_a_kept_version_whose_record_was_rejected(
    register, tmp_path
):
    first = [record(i) for i in range(4)]
    first[1]["geometry"] = box(X0 + 10, Y0, X0 + 24, Y0 + 10)  # 4 m into parcel 3
    first[1]["DienTich"] = 140.0
    one = load_file(register, write(tmp_path, first, "d1.gpkg"))
    assert ("TOPO_OVERLAP", 2, 3) in findings_of(register, one.batch)
    # Parcel 2 changes owner; parcel 3's record is broken, so its registered version stays,
    # and still lies under parcel 2.
    second = [dict(r) for r in first]
    second[1]["TenChu"] = "Lê Thị Hoa"
    second[2]["geometry"] = shift(BOW_TIE, 20)
    two, _ = load_as_the_flow_does(register, write(tmp_path, second, "d2.gpkg"))
    assert two.changes == {"added": 0, "changed": 1, "unchanged": 2, "retired": 0}
    assert ("TOPO_OVERLAP", 2, 3) in findings_of(register, two.batch)
    assert blocked_parcels(register) == [2, 3]


def test_a_split_or_merge_that_keeps_a_parcel_number_has_its_lineage(register, tmp_path):
    load_file(register, write(tmp_path, [record(i) for i in range(6)], "d1.gpkg"))
    # Parcel 2 is split: its west half keeps the number, the east half is new parcel 7.
    # Parcel 5 is merged into parcel 4, which keeps its number. Parcel 1 changes owner only.
    second = [
        record(0, TenChu="Lê Thị Hoa"),
        record(1, geometry=half(1, 0), DienTich=50.0),
        record(1, SoThuTuThua=7, geometry=half(1, 1), DienTich=50.0),
        record(2),
        record(3, geometry=both(3, 4), DienTich=200.0),
        record(5),
    ]
    result = load_file(register, write(tmp_path, second, "d2.gpkg"))
    assert result.changes == {"added": 1, "changed": 3, "unchanged": 2, "retired": 1}
    lineage = rows(
        register,
        """
        SELECT p.parcel_no, c.parcel_no, l.shared_area_m2 FROM land.parcel_lineage l
        JOIN land.parcel_version p ON p.id = l.parent_version_id
        JOIN land.parcel_version c ON c.id = l.child_version_id ORDER BY 1, 2""",
    )
    assert lineage == [(2, 7, 50.0), (5, 4, 100.0)]
    assert rows(
        register, "SELECT parcel_no, how FROM land.parcel_ancestry('22924', 5, 7) ORDER BY 1"
    ) == [(2, "split/merge"), (7, "current")]
    assert rows(
        register,
        "SELECT parcel_no, how FROM land.parcel_ancestry('22924', 5, 4) ORDER BY generation, 1",
    ) == [(4, "current"), (4, "earlier version"), (5, "split/merge")]


def test_the_certified_version_is_not_edited_in_place(register, tmp_path):
    load_file(register, write(tmp_path, [record(i) for i in range(3)], "d1.gpkg"))
    certify(register, "CS 000001", parcel_no=1)
    edit = "UPDATE land.parcel SET owner_name = :owner WHERE sheet_no = 5 AND parcel_no = :parcel"
    refused = pytest.raises(sa.exc.DBAPIError, match="holds certificate CS 000001")
    with refused as raised, register.begin() as connection:
        connection.execute(sa.text(edit), {"owner": "Lê Văn Tám", "parcel": 1})
    assert "deliver the correction" in str(raised.value)
    assert current(register)[0][2] == "Nguyễn Văn An"
    with register.begin() as connection:  # what changes nothing, and other parcels, may be
        connection.execute(sa.text(edit), {"owner": "Nguyễn Văn An", "parcel": 1})
        connection.execute(sa.text(edit), {"owner": "Lê Văn Tám", "parcel": 2})
        connection.execute(sa.text("UPDATE land.parcel SET attributes = attributes"))
    # Delivered, the correction is a new version, flagged; that one may be edited.
    changed = load_file(
        register, write(tmp_path, [record(0, TenChu="Lê Văn Tám"), record(1)], "d2.gpkg")
    )
    assert changed.issues.get("CERT_CHANGED") == 1
    with register.begin() as connection:
        connection.execute(sa.text(edit), {"owner": "Lê Văn Tám (sửa)", "parcel": 1})
    assert current(register)[0][2] == "Lê Văn Tám (sửa)"


def test_a_certified_key_retired_then_added_again_is_flagged_again(register, tmp_path):
    load_file(register, write(tmp_path, [record(i) for i in range(4)], "d1.gpkg"))
    certify(register, "CS 000004", parcel_no=4)
    gone = load_file(register, write(tmp_path, [record(i) for i in range(3)], "d2.gpkg"))
    assert gone.issues.get("CERT_CHANGED") == 1
    back = [record(i) for i in range(3)] + [record(3, TenChu="Người Khác")]
    again = load_file(register, write(tmp_path, back, "d3.gpkg"))
    assert again.changes["added"] == 1 and again.issues.get("CERT_CHANGED") == 1
    assert rows(
        register,
        "SELECT detail->>'change' FROM land.finding WHERE batch_id = :b"
        " AND rule_code = 'CERT_CHANGED'",
        b=again.batch,
    ) == [("added again",)]
    # Its ancestry reaches the certified version, from before it was retired.
    certified = scalar(register, "SELECT parcel_version_id FROM land.certificate")
    assert rows(
        register, "SELECT generation, version_id, how FROM land.parcel_ancestry('22924', 5, 4)"
    )[1:] == [(1, certified, "earlier version, retired")]
    assert 4 in blocked_parcels(register)
    assert (4,) not in rows(register, "SELECT parcel_no FROM land.parcel_ready")


def test_the_findings_of_a_replaced_or_retired_version_are_closed(register, tmp_path):
    first = [record(0, DienTich=150.0, KyHieuMucDichSuDung="XYZ"), record(1), record(2)]
    one = load_file(register, write(tmp_path, first, "d1.gpkg"))
    made = rows(
        register,
        "SELECT rule_code, parcel_no FROM land.finding WHERE batch_id = :b ORDER BY 1",
        b=one.batch,
    )
    assert made == [("ATTR_AREA_MISMATCH", 1), ("ATTR_LAND_USE_UNKNOWN", 1)]
    # Parcel 1 comes back corrected, parcel 3 is gone.
    two, _ = load_as_the_flow_does(register, write(tmp_path, [record(0), record(1)], "d2.gpkg"))
    assert two.changes == {"added": 0, "changed": 1, "unchanged": 1, "retired": 1}
    assert two.closed == 2
    assert (
        scalar(register, "SELECT count(*) FROM land.finding WHERE closed_by_batch_id IS NULL") == 0
    )


def test_a_hand_edit_made_after_the_look_is_compared_as_it_now_is(register, tmp_path):
    first = [record(i) for i in range(3)]
    load_file(register, write(tmp_path, first, "d1.gpkg"))
    read = read_delivery(write(tmp_path, [*first, record(3)], "d2.gpkg"))
    look, unchanged = loader.look_at_register(register, read)
    assert list(unchanged) == [True, True, True, False]
    edits = scalar(register, "SELECT count(*) FROM land.register_edit")
    # While the delivery is validated, a technician corrects parcel 1's owner by hand.
    with register.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE land.parcel_version SET owner_name = 'Trần Văn Bình'"
                " WHERE valid_to IS NULL AND parcel_no = 1"
            )
        )
    validation = validate(read.parcels, read.findings, unchanged=unchanged)
    result = loader.load(register, read, validation, started_at=datetime.now(UTC), look=look)
    # The load does not take what it saw before the edit: parcel 1 differs from the register.
    assert result.changes == {"added": 1, "changed": 1, "unchanged": 2, "retired": 0}
    assert [owner for *_, owner, _, _ in current(register)] == ["Nguyễn Văn An"] * 4
    # The edit is one; the loads themselves are none.
    assert scalar(register, "SELECT count(*) FROM land.register_edit") == edits + 1


def test_areas_are_rounded_as_postgresql_rounds_them(register, tmp_path):
    from landpipe.sources.fields import area_tenths

    rng = np.random.default_rng(7)
    values = np.concatenate(
        [
            [100.05, 12.25, -0.25, 0.05, 9.95, 99.95, 2.675, 999_999_999_999.95],
            # Within a hair of a half tenth, at full precision.
            [0.049999999999999947, 368.24999999999949, 9411284.7499999944],
            (rng.integers(0, 10**7, 20_000) + 0.5) / 10 * (1 + rng.normal(0, 1e-14, 20_000)),
            [
                round(v, int(k))
                for v, k in zip(
                    rng.uniform(0, 5e4, 20_000), rng.integers(0, 4, 20_000), strict=True
                )
            ],
            rng.uniform(-1e6, 1e6, 5_000),
        ]
    )
    with register.connect() as connection:
        stored = connection.execute(
            sa.text(
                "SELECT array_agg((v::numeric(14, 1) * 10)::float8 ORDER BY i)"
                " FROM unnest(CAST(:v AS float8[])) WITH ORDINALITY AS u (v, i)"
            ),
            {"v": values.tolist()},
        ).scalar()
    assert np.array_equal(area_tenths(values), np.array(stored))
    # As loaded: a declared area of 12.25 m² is 12.3, and compares unchanged with itself.
    records = [record(0, DienTich=12.25), record(1, DienTich=100.05)]
    load_file(register, write(tmp_path, records, "d1.gpkg"))
    assert rows(register, "SELECT declared_area_m2::text FROM land.parcel ORDER BY parcel_no") == [
        ("12.3",),
        ("100.1",),
    ]
    again, _ = load_as_the_flow_does(register, write(tmp_path, records, "d2.gpkg"))
    assert again.changes["unchanged"] == 2


def test_a_redelivery_in_another_crs_is_unchanged_where_only_reprojection_moved_it(
    register, tmp_path
):
    records = [record(i) for i in range(5)]
    load_file(register, write(tmp_path, records, "d1.gpkg"))
    again = [dict(r) for r in records]
    again[1]["TenChu"] = "Lê Thị Hoa"  # changed
    again[2]["geometry"] = shift(again[2]["geometry"], 0.05)  # moved by 5 cm: changed
    # The province's GeoJSON, in WGS 84: every vertex comes back within a fraction of a mm.
    path = tmp_path / "d2.geojson"
    delivery(again).to_crs(4326).to_file(path)
    result, _ = load_as_the_flow_does(register, path)
    assert result.changes == {"added": 0, "changed": 2, "unchanged": 3, "retired": 0}
    assert [
        p
        for (p,) in rows(
            register,
            "SELECT parcel_no FROM land.parcel_version WHERE valid_to IS NOT NULL ORDER BY 1",
        )
    ] == [2, 3]


def test_the_same_parcels_written_otherwise_are_unchanged(register, tmp_path):
    """A WGS 84 copy loaded first leaves the register a fraction of a millimetre off the
    surveyed coordinates; a Shapefile writes outer rings clockwise, a GeoPackage or a GeoJSON
    as given (here counter-clockwise); a ring may start at another vertex. None of it is a
    change; a parcel moved by 5 cm, or given one more vertex, is."""
    records = [record(i) for i in range(5)]
    path = tmp_path / "d1.geojson"
    delivery(records).to_crs(4326).to_file(path)
    first, _ = load_as_the_flow_does(register, path)
    assert first.changes["added"] == 5
    result, _ = load_as_the_flow_does(register, write(tmp_path, records, "d2.shp"))
    assert result.changes == {"added": 0, "changed": 0, "unchanged": 5, "retired": 0}
    again = [dict(r) for r in records]
    ring = list(again[3]["geometry"].exterior.coords)[:-1]
    again[3]["geometry"] = Polygon(ring[2:] + ring[:2])  # starts at another vertex
    again[4]["geometry"] = shift(again[4]["geometry"], 0.05)  # moved by 5 cm: changed
    result, _ = load_as_the_flow_does(register, write(tmp_path, again, "d3.gpkg"))
    assert result.changes == {"added": 0, "changed": 1, "unchanged": 4, "retired": 0}
    ring = list(again[0]["geometry"].exterior.coords)[:-1]
    middle = ((ring[0][0] + ring[1][0]) / 2, (ring[0][1] + ring[1][1]) / 2)
    again[0]["geometry"] = Polygon([ring[0], middle, *ring[1:]])  # one more vertex: changed
    result, _ = load_as_the_flow_does(register, write(tmp_path, again, "d4.gpkg"))
    assert result.changes == {"added": 0, "changed": 1, "unchanged": 4, "retired": 0}


def test_rings_normalized_from_different_vertices_are_still_compared_vertex_for_vertex():
    from shapely import normalize
    from shapely.affinity import translate

    from landpipe.register import _same_rings

    surveyed = MultiPolygon([box(X0, Y0, X0 + 10, Y0 + 20)])
    # After a round trip the two west corners are no longer as far west: normalizing starts
    # the ring at the north-west corner instead of the south-west one.
    west = [(X0 + 2e-5, Y0), (X0 + 10, Y0), (X0 + 10, Y0 + 20), (X0 - 1e-5, Y0 + 20)]
    carried = MultiPolygon([Polygon(west)])
    a, b = normalize(surveyed), normalize(carried)
    assert not a.equals_exact(b, 0.001)
    assert _same_rings(a, b)
    assert not _same_rings(a, normalize(translate(surveyed, 0.002)))
    assert not _same_rings(a, normalize(MultiPolygon([box(X0, Y0, X0 + 10, Y0 + 20.5)])))


def test_a_redelivery_that_changes_nothing_makes_no_topology_finding_again(register, tmp_path):
    # Parcel 1 is repaired by validation (so checked again at each delivery) and overlaps
    # parcel 2 by 2 m.
    records = [
        record(0, geometry=SELF_TOUCHING, DienTich=round(SELF_TOUCHING.area, 1)),
        record(1, geometry=box(X0 + 18, Y0, X0 + 38, Y0 + 20), DienTich=400.0),
        record(9, geometry=box(X0 + 100, Y0, X0 + 110, Y0 + 10)),
    ]
    one, _ = load_as_the_flow_does(register, write(tmp_path, records, "d1.gpkg"))
    assert ("TOPO_OVERLAP", 1, 2) in findings_of(register, one.batch)
    for name in ("d2.gpkg", "d3.gpkg"):
        again, _ = load_as_the_flow_does(register, write(tmp_path, records, name))
        assert again.changes == {"added": 0, "changed": 0, "unchanged": 3, "retired": 0}
        assert findings_of(register, again.batch) == []
    assert (
        scalar(register, "SELECT count(*) FROM land.finding WHERE rule_code = 'TOPO_OVERLAP'") == 1
    )


# A changed parcel's topology is checked again even when its coordinates stayed: each case
# below is one where leaving it out (as an owner-only change could seem to allow) makes the
# findings in force differ from a full check.


def open_topology(engine, rule: str):
    return rows(
        engine,
        "SELECT parcel_no, other_parcel_no FROM land.finding"
        " WHERE closed_by_batch_id IS NULL AND rule_code = :rule ORDER BY 1, 2",
        rule=rule,
    )


def strip_between_lots(x0: float = X0, y0: float = Y0) -> list[dict]:
    """Parcels 1 and 2 (lots 0 and 1), parcel 3 a 0.3 m strip east of parcel 2, parcel 4
    east of it, and parcels 5 and 6 below and above the row, meeting each vertex."""
    xs = [0, 10, 20, 20.3, 30.3]
    below = Polygon([(x0, y0 - 10), (x0 + 30.3, y0 - 10)] + [(x0 + x, y0) for x in reversed(xs)])
    above = Polygon([(x0 + x, y0 + 10) for x in xs] + [(x0 + 30.3, y0 + 20), (x0, y0 + 20)])
    return [
        record(0),
        record(1),
        record(2, SoThuTuThua=3, geometry=box(x0 + 20, y0, x0 + 20.3, y0 + 10), DienTich=3.0),
        record(3, SoThuTuThua=4, geometry=box(x0 + 20.3, y0, x0 + 30.3, y0 + 10)),
        record(4, SoThuTuThua=5, geometry=below, DienTich=303.0),
        record(5, SoThuTuThua=6, geometry=above, DienTich=303.0),
    ]


def capped_gap() -> list[dict]:
    """Parcels 1 and 2 with a 0.2 m gap between them, closed by parcel 3 below and 4 above."""
    x, y = X0 + 10, Y0
    below = Polygon(
        [(X0, y - 10), (x + 10.2, y - 10), (x + 10.2, y), (x + 0.2, y), (x, y), (X0, y)]
    )
    top = [(X0, y + 10), (x, y + 10), (x + 0.2, y + 10), (x + 10.2, y + 10)]
    above = Polygon([*top, (x + 10.2, y + 20), (X0, y + 20)])
    return [
        record(0),
        record(1, geometry=box(x + 0.2, y, x + 10.2, y + 10)),
        record(2, SoThuTuThua=3, geometry=below, DienTich=202.0),
        record(3, SoThuTuThua=4, geometry=above, DienTich=202.0),
    ]


def test_a_road_strip_given_another_land_use_is_a_sliver(register, tmp_path):
    road = box(X0, Y0 + 20, X0 + 100, Y0 + 21)  # thin, as roads are by nature
    first = [record(0), record(1, SoThuTuThua=2, KyHieuMucDichSuDung="DGT", geometry=road)]
    assert "TOPO_SLIVER" not in load_file(register, write(tmp_path, first, "d1.gpkg")).issues
    second = [dict(r) for r in first]
    second[1]["KyHieuMucDichSuDung"] = "ODT"
    two, _ = load_as_the_flow_does(register, write(tmp_path, second, "d2.gpkg"))
    assert ("TOPO_SLIVER", 2, None) in findings_of(register, two.batch)
    assert 2 in blocked_parcels(register)


def test_a_sold_parcel_has_its_edges_checked_against_a_neighbour_redrawn_with_it(
    register, tmp_path
):
    first = [record(i) for i in range(3)]
    assert load_file(register, write(tmp_path, first, "d1.gpkg")).issues == {}
    second = [dict(r) for r in first]
    second[1]["TenChu"] = "Lê Thị Hoa"
    x = X0 + 20  # parcel 3 gains a vertex on parcel 2's east edge
    second[2]["geometry"] = Polygon(
        [(x, Y0), (x + 10, Y0), (x + 10, Y0 + 10), (x, Y0 + 10), (x, Y0 + 5)]
    )
    two, _ = load_as_the_flow_does(register, write(tmp_path, second, "d2.gpkg"))
    assert findings_of(register, two.batch) == [
        ("TOPO_EDGE_MISMATCH", 2, None),
        ("TOPO_EDGE_MISMATCH", 3, None),
    ]


def test_the_gap_a_strip_leaves_by_moving_away_is_found_through_its_sold_neighbour(
    register, tmp_path
):
    first = strip_between_lots()
    assert load_file(register, write(tmp_path, first, "d1.gpkg")).issues == {}
    second = [dict(r) for r in first]
    second[1]["TenChu"] = "Lê Thị Hoa"
    second[2]["geometry"] = shift(first[2]["geometry"], 0, 100)
    two, _ = load_as_the_flow_does(register, write(tmp_path, second, "d2.gpkg"))
    assert two.changes == {"added": 0, "changed": 2, "unchanged": 4, "retired": 0}
    assert ("TOPO_GAP", 2, 4) in findings_of(register, two.batch)
    assert {2, 4} <= set(blocked_parcels(register))


def test_the_gap_an_earlier_retirement_left_is_found_when_a_parcel_lining_it_changes(
    register, tmp_path
):
    row = strip_between_lots()
    strip = dict(row[2], SoHieuToBanDo=6, SoThuTuThua=1)
    elsewhere = record(30, SoHieuToBanDo=6, SoThuTuThua=2)
    sheet5 = [r for r in row if r["SoThuTuThua"] != 3]
    first = [*sheet5, strip, elsewhere]
    assert load_file(register, write(tmp_path, first, "d1.gpkg")).issues == {}
    gone, _ = load_as_the_flow_does(register, write(tmp_path, [elsewhere], "d2.gpkg"))
    assert gone.changes["retired"] == 1
    again = [dict(r) for r in sheet5]
    again[1]["TenChu"] = "Lê Thị Hoa"
    three, _ = load_as_the_flow_does(register, write(tmp_path, again, "d3.gpkg"))
    assert ("TOPO_GAP", 2, 4) in findings_of(register, three.batch)
    assert {2, 4} <= set(blocked_parcels(register))


def test_a_gap_opened_by_a_redrawn_parcel_is_closed_with_its_sold_neighbour(register, tmp_path):
    first = capped_gap()
    one = load_file(register, write(tmp_path, first, "d1.gpkg"))
    assert ("TOPO_GAP", 1, 2) in findings_of(register, one.batch)
    second = [dict(r) for r in first]
    second[2]["TenChu"] = "Lê Thị Hoa"
    second[3]["geometry"] = shift(first[3]["geometry"], 0, 20)  # the gap is open now
    load_as_the_flow_does(register, write(tmp_path, second, "d2.gpkg"))
    assert open_topology(register, "TOPO_GAP") == []
    assert not {1, 2} & set(blocked_parcels(register))


def test_an_overlap_committed_while_a_load_waits_for_its_area_lock_stays(
    register, tmp_path, monkeypatch
):
    """A neighbouring commune's load commits an overlap with parcel 3 while this load, which
    changes parcel 3's owner, waits for the squares around it: the overlap is made again."""
    first = [record(i) for i in range(3)]
    load_file(register, write(tmp_path, first, "d1.gpkg"))
    second = [dict(r) for r in first]
    second[2]["TenChu"] = "Lê Thị Hoa"
    other = [record(0, MaXa="22927", SoHieuToBanDo=1, geometry=shift(lot(3), -0.5, 0))]
    real, fired = loader.lock_area, []

    def lock_area(conn, geometry, *, shared=False):
        if not fired:  # once: the other load takes its squares through here too
            fired.append(None)
            fired[0] = load_file(register, write(tmp_path, other, "other.gpkg"))
        return real(conn, geometry, shared=shared)

    monkeypatch.setattr(loader, "lock_area", lock_area)
    two, _ = load_as_the_flow_does(register, write(tmp_path, second, "d2.gpkg"))
    assert fired and fired[0].batch < two.batch and "TOPO_OVERLAP" in fired[0].issues
    assert open_topology(register, "TOPO_OVERLAP") != []
    assert 3 in blocked_parcels(register)


def test_an_area_loaded_with_the_old_rounding_is_no_change(register, tmp_path):
    records = [record(0, DienTich=12.25), record(1)]
    load_file(register, write(tmp_path, records, "d1.gpkg"))
    # As landpipe stored 12.25 before it rounded as PostgreSQL does: 12.2, to even.
    with register.begin() as connection:
        connection.execute(
            sa.text("UPDATE land.parcel_version SET declared_area_m2 = 12.2 WHERE parcel_no = 1")
        )
    again, _ = load_as_the_flow_does(register, write(tmp_path, records, "d2.gpkg"))
    assert again.changes == {"added": 0, "changed": 0, "unchanged": 2, "retired": 0}
    path = tmp_path / "d3.geojson"  # reprojected: compared within the tolerance
    delivery(records).to_crs(4326).to_file(path)
    third, _ = load_as_the_flow_does(register, path)
    assert third.changes == {"added": 0, "changed": 0, "unchanged": 2, "retired": 0}
    # Another area is a change, stored rounded as PostgreSQL rounds.
    records[0]["DienTich"] = 12.35
    fourth, _ = load_as_the_flow_does(register, write(tmp_path, records, "d4.gpkg"))
    assert fourth.changes["changed"] == 1
    assert rows(register, "SELECT declared_area_m2::text FROM land.parcel WHERE parcel_no = 1") == [
        ("12.4",)
    ]


def test_an_editor_role_with_no_right_on_the_edit_log_can_edit_parcels(register, tmp_path):
    load_file(register, write(tmp_path, [record(0)], "d1.gpkg"))
    with register.begin() as connection:
        connection.execute(sa.text("DROP ROLE IF EXISTS landpipe_test_editor"))
        connection.execute(sa.text("CREATE ROLE landpipe_test_editor"))
        connection.execute(sa.text("GRANT USAGE ON SCHEMA land TO landpipe_test_editor"))
        connection.execute(
            sa.text("GRANT SELECT, UPDATE ON land.parcel_version TO landpipe_test_editor")
        )
    try:
        with register.begin() as connection:
            edits = connection.execute(sa.text("SELECT count(*) FROM land.register_edit")).scalar()
            connection.execute(sa.text("SET LOCAL ROLE landpipe_test_editor"))
            connection.execute(
                sa.text("UPDATE land.parcel_version SET owner_name = 'Trần Văn Bình'")
            )
            connection.execute(sa.text("RESET ROLE"))
            assert (
                connection.execute(sa.text("SELECT count(*) FROM land.register_edit")).scalar()
                == edits + 1
            )
        # Nor to be told that a version it edits holds a certificate.
        certify(register, "CS 000009", parcel_no=1)
        refused = pytest.raises(sa.exc.DBAPIError, match="holds certificate CS 000009")
        with refused, register.begin() as connection:
            connection.execute(sa.text("SET LOCAL ROLE landpipe_test_editor"))
            connection.execute(sa.text("UPDATE land.parcel_version SET owner_name = 'Lê Văn'"))
    finally:
        with register.begin() as connection:
            connection.execute(sa.text("DROP OWNED BY landpipe_test_editor"))
            connection.execute(sa.text("DROP ROLE landpipe_test_editor"))
