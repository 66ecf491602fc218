"""What a certificate's parcel diagram needs from the register (sql/110_parcel_diagram.sql):
the coordinate table of a parcel's vertices with its edge lengths, and its neighbours."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import unicodedata
from decimal import Decimal

import pyogrio
import pyproj
import pytest
import sqlalchemy as sa
from shapely.affinity import translate
from shapely.geometry import Polygon, box

from landpipe.db import lock_communes
from landpipe.errors import DatabaseError
from landpipe.extract import certificate_text, find_parcels
from tests.conftest import run_cli
from tests.parcels import BOW_TIE, X0, Y0, lot, record
from tests.test_load import load_file, write
from tests.test_register import certify, load_as_the_flow_does, rows, shift

#: An L-shaped lot, counter-clockwise from its south-east corner: its north-west corner is
#: (X0, Y0 + 20), the fourth vertex given.
L_SHAPE = Polygon(
    [
        (X0 + 20, Y0),
        (X0 + 20, Y0 + 10),
        (X0 + 10, Y0 + 20),
        (X0, Y0 + 20),
        (X0, Y0),
    ]
)


def vertices(engine, sheet: int, parcel: int):
    return rows(
        engine,
        "SELECT vertex_no, part, ring, x_m, y_m, to_next_m"
        " FROM land.parcel_vertices('22924', :sheet, :parcel)",
        sheet=sheet,
        parcel=parcel,
    )


def neighbours(engine, sheet: int, parcel: int):
    return rows(
        engine,
        "SELECT commune_code, sheet_no, parcel_no, shared_m"
        " FROM land.parcel_neighbours('22924', :sheet, :parcel)",
        sheet=sheet,
        parcel=parcel,
    )


def d(value: float) -> Decimal:
    return Decimal(f"{value:.2f}")


def test_the_coordinate_table_runs_clockwise_from_the_north_west_with_x_the_northing(
    register, tmp_path
):
    load_file(register, write(tmp_path, [record(0, geometry=L_SHAPE)], "d.gpkg"))
    table = vertices(register, 5, 1)
    diagonal = d(200**0.5)
    # X is the northing, Y the easting; clockwise from the north-west corner.
    assert table == [
        (1, 1, 0, d(Y0 + 20), d(X0), d(10)),
        (2, 1, 0, d(Y0 + 20), d(X0 + 10), diagonal),
        (3, 1, 0, d(Y0 + 10), d(X0 + 20), d(10)),
        (4, 1, 0, d(Y0), d(X0 + 20), d(20)),
        (5, 1, 0, d(Y0), d(X0), d(20)),
    ]
    assert sum(row[5] for row in table) == d(L_SHAPE.length)
    assert vertices(register, 5, 2) == []  # no such parcel


def test_holes_are_numbered_after_their_outer_ring_and_a_changed_parcel_shows_its_new_shape(
    register, tmp_path
):
    holed = Polygon(
        box(X0, Y0, X0 + 30, Y0 + 30).exterior.coords,
        [box(X0 + 10, Y0 + 10, X0 + 20, Y0 + 20).exterior.coords],
    )
    load_file(register, write(tmp_path, [record(0, geometry=holed)], "d1.gpkg"))
    table = vertices(register, 5, 1)
    assert [row[:3] for row in table] == [(n, 1, 0) for n in range(1, 5)] + [
        (n, 1, 1) for n in range(5, 9)
    ]
    assert table[0][3:5] == (d(Y0 + 30), d(X0))  # the outer ring's north-west corner first
    assert {row[5] for row in table} == {d(30), d(10)}

    load_file(register, write(tmp_path, [record(0, geometry=lot(0))], "d2.gpkg"))
    assert [(row[3], row[4]) for row in vertices(register, 5, 1)] == [
        (d(Y0 + 10), d(X0)),
        (d(Y0 + 10), d(X0 + 10)),
        (d(Y0), d(X0 + 10)),
        (d(Y0), d(X0)),
    ]


def test_the_lookups_of_one_parcel_plan_without_jit(register):
    """A notebook building the diagrams of a commune calls them parcel by parcel: compiling
    each call's plan (JIT, set off by the row estimates of the functions they call) took
    0.3-0.5 s of a 1 ms lookup."""
    settings = rows(
        register,
        "SELECT proname, 'jit=off' = ANY(proconfig) FROM pg_proc"
        " WHERE pronamespace = 'land'::regnamespace AND proname = ANY(:names) ORDER BY 1",
        names=["parcel_neighbours", "parcel_vertices", "parcels_near", "unloaded_neighbours"],
    )
    assert settings == [
        ("parcel_neighbours", True),
        ("parcel_vertices", True),
        ("parcels_near", True),
        ("unloaded_neighbours", True),
    ]


def test_neighbours_share_a_stretch_of_boundary_whatever_their_sheet(register, tmp_path):
    records = [record(i) for i in range(3)]
    # North of lot 1, on sheet 6: shares 10 m with lot 1 (parcel 2), only corners with 0 and 2.
    records.append(
        record(1, SoHieuToBanDo=6, SoThuTuThua=1, geometry=box(X0 + 10, Y0 + 10, X0 + 20, Y0 + 20))
    )
    # Touching lot 2 at one corner only.
    records.append(record(9, SoThuTuThua=9, geometry=box(X0 + 30, Y0 + 10, X0 + 40, Y0 + 20)))
    load_file(register, write(tmp_path, records, "d.gpkg"))
    assert neighbours(register, 5, 2) == [
        ("22924", 5, 1, d(10)),
        ("22924", 5, 3, d(10)),
        ("22924", 6, 1, d(10)),
    ]
    assert neighbours(register, 5, 3) == [("22924", 5, 2, d(10))]
    assert neighbours(register, 5, 9) == []


def test_the_parcel_command_shows_what_a_certificate_needs(register, cli_env, tmp_path):
    records = [
        record(0, geometry=L_SHAPE, DienTich=350.0),
        record(2, KyHieuMucDichSuDung="XYZ"),
        record(3),
    ]
    load_as_the_flow_does(register, write(tmp_path, records, "d1.gpkg"))
    load_as_the_flow_does(register, write(tmp_path, records[:2], "d2.gpkg"))  # 4 retired

    shown = run_cli("parcel", "22924", "5", "1", env=cli_env)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "parcel 22924/5/1 (sheet 5, parcel 1): Phường Phú Thủy" in text
    assert "ready for a certificate: yes" in text
    assert "neighbours (sheet/parcel, shared boundary): 5/3 (10.00 m)\n" in text
    assert f"   1   {Y0 + 20:.2f}    {X0:.2f}     10.00" in text

    data = json.loads(run_cli("parcel", "22924", "5", "3", "--json", env=cli_env).stdout)
    assert data["ready"] is False
    assert data["not_ready_because"] == [
        "an open block finding (ATTR_LAND_USE_UNKNOWN)",
        "unknown land-use code XYZ",
    ]
    assert [f["rule_code"] for f in data["findings"]] == ["ATTR_LAND_USE_UNKNOWN"]
    assert [v["vertex_no"] for v in data["vertices"]] == [1, 2, 3, 4]
    assert data["parcel"]["owner_name"] == "Nguyễn Văn An"

    # A record of parcel 1 delivered broken: its registered version stays, and its findings
    # say they are on a record that was not loaded.
    broken = [dict(records[0], geometry=BOW_TIE), *records[1:2]]
    load_as_the_flow_does(register, write(tmp_path, broken, "d3.gpkg"))
    shown = run_cli("parcel", "22924", "5", "1", env=cli_env)
    assert ", on a record of it that was not loaded)" in shown.stdout
    assert "  a record of this key not loaded: batch 3, row 0 (GEOM_INVALID)\n" in shown.stdout
    data = json.loads(run_cli("parcel", "22924", "5", "1", "--json", env=cli_env).stdout)
    assert {f["rule_code"] for f in data["findings"] if f["rejected_record"]} == {"GEOM_INVALID"}

    gone = run_cli("parcel", "22924", "5", "4", env=cli_env)
    assert gone.returncode == 1
    assert gone.stderr.startswith("landpipe: no current parcel 22924/5/4 (retired by batch 2 at ")
    assert run_cli("parcel", "2292", "5", "1", env=cli_env).returncode == 2


def test_a_point_repeated_counts_once_and_the_start_is_where_the_ring_is_not(register, tmp_path):
    doubled = Polygon(
        [(X0, Y0), (X0 + 10, Y0), (X0 + 10, Y0), (X0 + 10, Y0 + 10), (X0, Y0 + 10), (X0, Y0 + 10)]
    )
    # A diamond: its west and north corners are as near the north-west corner of its box.
    diamond = [(X0 + 50, Y0), (X0 + 60, Y0 + 10), (X0 + 50, Y0 + 20), (X0 + 40, Y0 + 10)]
    records = [
        record(0, geometry=doubled),
        record(1, SoThuTuThua=2, geometry=Polygon(diamond)),
        record(2, SoThuTuThua=3, geometry=shift(Polygon(diamond[2:] + diamond[:2]), 100)),
    ]
    load_file(register, write(tmp_path, records, "d.gpkg"))
    assert [row[5] for row in vertices(register, 5, 1)] == [d(10)] * 4
    first, moved = vertices(register, 5, 2), vertices(register, 5, 3)
    assert first[0][3:5] == (d(Y0 + 20), d(X0 + 50))  # the northern one
    assert [row[3] for row in first] == [row[3] for row in moved]


def test_boundaries_drawn_a_little_apart_still_make_neighbours(register, tmp_path):
    records = [
        record(0),
        record(1, geometry=box(X0 + 10, Y0, X0 + 20.001, Y0 + 10)),  # 1 mm over parcel 3
        record(2, geometry=box(X0 + 20, Y0, X0 + 30, Y0 + 10)),
        record(3, geometry=box(X0 + 30.001, Y0, X0 + 40, Y0 + 10)),  # 1 mm short of it
    ]
    load_file(register, write(tmp_path, records, "d.gpkg"))
    assert [row[2:] for row in neighbours(register, 5, 3)] == [(2, d(10)), (4, d(10))]


def ready(engine, sheet: int = 5):
    return [
        n
        for (n,) in rows(
            engine,
            "SELECT parcel_no FROM land.parcel_ready WHERE sheet_no = :sheet ORDER BY 1",
            sheet=sheet,
        )
    ]


def test_a_parcel_next_to_a_record_that_was_not_loaded_waits_for_it(register, cli_env, tmp_path):
    """The diagram cannot name a neighbour the register lacks: a parcel next to a delivered
    record that was rejected is not ready until the record's parcel is loaded, or its sheet is
    delivered anew without it; a record rejected again stands in place of the earlier one."""
    unnumbered = record(1, SoThuTuThua=None)  # rejected: ATTR_MISSING
    load_as_the_flow_does(register, write(tmp_path, [record(0), unnumbered, record(2)], "d1.gpkg"))
    assert ready(register) == []
    assert rows(
        register,
        "SELECT batch_id, source_row, rule_codes, sheet_no, parcel_no, shared_m"
        " FROM land.unloaded_neighbours('22924', 5, 1)",
    ) == [(1, 1, ["ATTR_MISSING"], 5, None, d(10))]
    shown = run_cli("parcel", "22924", "5", "3", env=cli_env)
    assert (
        "  not in the register: a record delivered as 22924/5/? (batch 1, row 1;"
        " not loaded: ATTR_MISSING) shares 10.00 m\n" in shown.stdout
    )
    data = json.loads(run_cli("parcel", "22924", "5", "3", "--json", env=cli_env).stdout)
    assert data["not_ready_because"] == [
        "a neighbouring delivered record was not loaded (batch 1 row 1): the diagram cannot name it"
    ]

    again = dict(unnumbered, TenChu="Trần Văn Bình")
    load_as_the_flow_does(register, write(tmp_path, [record(0), again, record(2)], "d2.gpkg"))
    assert rows(register, "SELECT batch_id, source_row FROM land.unloaded_record") == [(2, 1)]
    assert ready(register) == []

    load_as_the_flow_does(register, write(tmp_path, [record(0), record(1), record(2)], "d3.gpkg"))
    assert rows(register, "SELECT * FROM land.unloaded_record") == []
    assert ready(register) == [1, 2, 3]


def test_a_sheet_delivered_anew_without_the_record_frees_its_neighbours(register, tmp_path):
    unnumbered = record(1, SoThuTuThua=None)
    elsewhere = record(3, MaXa="99999")  # ATTR_COMMUNE_UNKNOWN, next to parcel 3
    records = [record(0), unnumbered, record(2), elsewhere]
    load_as_the_flow_does(register, write(tmp_path, records, "d1.gpkg"))
    assert ready(register) == []
    # Another sheet's delivery leaves them standing; their own sheet's, without them, does
    # not (the record with a wrong commune code lies in the delivery's commune).
    load_as_the_flow_does(register, write(tmp_path, [record(9, SoHieuToBanDo=6)], "d2.gpkg"))
    assert ready(register) == []
    load_as_the_flow_does(register, write(tmp_path, [record(0), record(2)], "d3.gpkg"))
    assert ready(register) == [1, 3]


def test_a_record_outside_the_province_is_no_neighbour(register, tmp_path):
    far = record(20, geometry=translate(lot(1), 0, 300_000))  # 300 km north: out of extent
    records = [*(record(i) for i in range(10)), far]
    result, _ = load_as_the_flow_does(register, write(tmp_path, records, "d1.gpkg"))
    assert result.rejected == 1
    assert rows(register, "SELECT rule_codes FROM land.rejected_record") == [
        (["GEOM_OUT_OF_EXTENT"],)
    ]
    assert rows(register, "SELECT * FROM land.unloaded_record") == []
    assert ready(register) == list(range(1, 11))


def test_the_district_office_functions_work_whatever_the_search_path(register, tmp_path):
    load_as_the_flow_does(register, write(tmp_path, [record(0), record(1)], "d1.gpkg"))
    with register.begin() as connection:
        connection.execute(sa.text("SET LOCAL search_path = pg_catalog"))
        for sql in (
            "SELECT count(*) FROM land.parcel_ready",
            "SELECT count(*) FROM land.parcel_vertices('22924', 5, 1)",
            "SELECT count(*) FROM land.parcel_neighbours('22924', 5, 1)",
            "SELECT count(*) FROM land.unloaded_neighbours('22924', 5, 1)",
            "SELECT count(*) FROM land.parcels_of_owner('nguyen')",
            f"SELECT count(*) FROM land.parcels_near({X0 + 5}, {Y0 + 5}, 9218)",
        ):
            assert connection.execute(sa.text(sql)).scalar() > 0 or "unloaded" in sql, sql


def test_a_certified_parcel_is_not_ready_again_and_a_certificate_names_its_own_parcel(
    register, cli_env, tmp_path
):
    broken = record(7, SoThuTuThua=8, geometry=translate(BOW_TIE, 100))  # GEOM_INVALID
    load_as_the_flow_does(register, write(tmp_path, [record(0), record(5), broken], "d1.gpkg"))
    assert ready(register) == [1, 6]
    certify(register, "CS-1", parcel_no=1)
    assert ready(register) == [6]
    data = json.loads(run_cli("parcel", "22924", "5", "1", "--json", env=cli_env).stdout)
    assert data["not_ready_because"] == ["certificate CS-1 issued on this version"]

    mismatched = sa.text(
        "INSERT INTO land.certificate (serial, commune_code, sheet_no, parcel_no,"
        " parcel_version_id, holder, issued_on) SELECT 'CS-2', '22924', 5, 6, id,"
        " 'x', '2026-05-01' FROM land.parcel WHERE parcel_no = 1"
    )
    with (
        pytest.raises(sa.exc.IntegrityError, match="is not a version of parcel 22924/5/6"),
        register.begin() as connection,
    ):
        connection.execute(mismatched)

    gone = run_cli("parcel", "22924", "5", "8", env=cli_env)
    assert gone.returncode == 1
    assert gone.stderr == (
        "landpipe: no current parcel 22924/5/8; delivered in batch 1 (row 2) and not loaded:"
        " GEOM_INVALID\n"
    )


def test_the_certify_command_records_a_certificate_on_a_ready_parcel_only(
    register, cli_env, tmp_path
):
    records = [record(0), record(1, KyHieuMucDichSuDung="XYZ"), record(2)]
    load_as_the_flow_does(register, write(tmp_path, records, "d1.gpkg"))
    done = run_cli("certify", "22924", "5", "1", "--serial", "CS 000123", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("certificate CS 000123 recorded on parcel 22924/5/1 (version ")
    assert ", holder Nguyễn Văn An, issued " in done.stdout
    assert ready(register) == [3]
    stored = rows(
        register,
        "SELECT c.holder, c.parcel_version_id = p.id FROM land.certificate c"
        " JOIN land.parcel p USING (commune_code, sheet_no, parcel_no) WHERE serial = 'CS 000123'",
    )
    assert stored == [("Nguyễn Văn An", True)]

    # Given holder and date; as JSON.
    given = run_cli(
        "certify", "22924", "5", "3", "--serial", "CS 000124", "--holder", "Lê Thị Hoa",
        "--issued", "2026-11-02", "--json", env=cli_env,
    )  # fmt: skip
    assert given.returncode == 0, given.stderr
    data = json.loads(given.stdout)
    assert data["recorded"] is True and data["holder"] == "Lê Thị Hoa"
    assert data["issued_on"] == "2026-11-02"

    # Refused: already certified on this version; not ready; the serial taken; no parcel.
    again = run_cli("certify", "22924", "5", "1", "--serial", "CS 000125", env=cli_env)
    assert again.returncode == 5
    assert again.stderr == (
        "landpipe: parcel 22924/5/1 is not ready for a certificate:"
        " certificate CS 000123 issued on this version\n"
    )
    blocked = run_cli("certify", "22924", "5", "2", "--serial", "CS 000125", env=cli_env)
    assert blocked.returncode == 5
    assert (
        "an open block finding (ATTR_LAND_USE_UNKNOWN); unknown land-use code XYZ" in blocked.stderr
    )
    taken = run_cli("certify", "22924", "5", "3", "--serial", "CS 000123", env=cli_env)
    assert taken.returncode == 5
    assert taken.stderr == (
        "landpipe: certificate CS 000123 is already recorded, on parcel 22924/5/1\n"
    )
    missing = run_cli("certify", "22924", "5", "9", "--serial", "CS 000126", env=cli_env)
    assert missing.returncode == 1 and "no current parcel 22924/5/9" in missing.stderr
    # The serial as typed otherwise is the same serial.
    # Retyped, full-width as some Vietnamese input methods type it, it is the same serial.
    for again in ("cs \n 000123", "ＣＳ\u3000０００１２３"):
        retyped = run_cli("certify", "22924", "5", "3", "--serial", again, env=cli_env)
        assert retyped.returncode == 5 and "certificate CS 000123 is already" in retyped.stderr
    wrong_inputs = (
        ["--issued", "2.11.2026"],
        ["--issued", "20261102"],  # ISO, but not as the help says
        ["--issued", "2026-W45-1"],
        ["--issued", "2999-01-01"],  # after today
        ["--holder", " \t"],
        ["--holder", "Lê\x07Văn"],
        ["--holder", "Tr\udce0n"],  # the byte 0xE0 of a terminal in TCVN3
        ["--serial", "A" * 41],
    )
    for wrong in wrong_inputs:
        usage = run_cli("certify", "22924", "5", "3", "--serial", "X", *wrong, env=cli_env)
        assert usage.returncode == 2, (wrong, usage.stderr)
        assert usage.stderr.startswith("landpipe: ") and usage.stderr.count("\n") == 1
    # Parcel 1 sold after its certificate: the refusal names the flag that holds it.
    sold = [record(0, TenChu="Lê Thị Hoa"), *records[1:]]
    (second, _) = load_as_the_flow_does(register, write(tmp_path, sold, "d2.gpkg"))
    flagged = run_cli("certify", "22924", "5", "1", "--serial", "CS 000130", env=cli_env)
    assert flagged.returncode == 5
    # And what the reviewer runs once they have compared the change with the certificate.
    assert flagged.stderr == (
        "landpipe: parcel 22924/5/1 is not ready for a certificate: an open block finding"
        f" (CERT_CHANGED); its certificate to review against batch {second.batch}'s change"
        f" (landpipe review 22924 5 1 --batch {second.batch})\n"
    )
    assert scalar_count(register) == 2


def behind(register, hold, work):
    """``work()`` on a thread while another transaction, set up by ``hold(conn)``, is open,
    until the work waits for a lock: it is still waiting 0.5 s on. Returns its result and
    the moment that transaction ended."""
    import threading
    import time

    done = []
    raw = register.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.transaction():
            hold(conn)
            worker = threading.Thread(target=lambda: done.append(work()))
            worker.start()
            deadline = time.monotonic() + 60  # a command starts in a second or two
            while worker.is_alive() and time.monotonic() < deadline:
                if conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]:
                    break
                time.sleep(0.05)
            worker.join(timeout=0.5)
            assert worker.is_alive() and not done
            (released,) = conn.execute("SELECT clock_timestamp()").fetchone()
        worker.join(timeout=60)
    finally:
        raw.close()
    assert done
    return done[0], released


def certify_behind(register, hold, **certificate):
    """``record_certificate(register, **certificate)`` behind ``hold`` (:func:`behind`)."""
    from landpipe.extract import record_certificate

    return behind(register, hold, lambda: record_certificate(register, **certificate))


def test_recording_a_certificate_waits_for_a_load_of_its_commune(register, cli_env, tmp_path):
    """The check that the parcel is ready and the record are made under the commune's lock,
    the one a load takes: a load in progress is waited for, and the command says so."""
    load_as_the_flow_does(register, write(tmp_path, [record(0)], "d1.gpkg"))
    command, released = behind(
        register,
        lambda conn: lock_communes(conn, ["22924"]),  # as a load of the commune holds it
        lambda: run_cli("certify", "22924", "5", "1", "--serial", "CS-9", env=cli_env),
    )
    assert command.returncode == 0, command.stderr
    assert command.stderr == (
        "landpipe: commune 22924 is being loaded or checked; waiting for that to finish\n"
    )
    # Dated when it was made, after the wait.
    ((recorded_at,),) = rows(register, "SELECT recorded_at FROM land.certificate")
    assert recorded_at >= released
    # Not waiting, it says nothing.
    quiet = run_cli("certify", "22924", "5", "1", "--serial", "CS-10", env=cli_env)
    assert quiet.returncode == 5 and "waiting" not in quiet.stderr


def test_one_serial_recorded_at_once_on_parcels_of_two_communes_lands_once(register, tmp_path):
    """Two communes' locks do not exclude each other: the second record of a serial waits for
    the first to commit, then is refused as taken, not failed."""
    load_as_the_flow_does(register, write(tmp_path, [record(0)], "a.gpkg"))
    load_as_the_flow_does(register, write(tmp_path, [record(1, MaXa="22927")], "b.gpkg"))
    first = (  # a record of CS-7 on 22927/5/2, not committed until the second waits on it
        "INSERT INTO land.certificate (serial, commune_code, sheet_no, parcel_no,"
        " parcel_version_id, holder, issued_on)"
        " SELECT 'CS-7', commune_code, sheet_no, parcel_no, id, owner_name, '2026-11-02'"
        " FROM land.parcel WHERE commune_code = '22927'"
    )
    result, _ = certify_behind(
        register,
        lambda conn: conn.execute(first),
        commune="22924", sheet=5, parcel=1, serial="CS-7",
    )  # fmt: skip
    assert result["recorded"] is False
    assert result["serial_taken"] == {"commune": "22927", "sheet": 5, "parcel": 2}
    assert scalar_count(register) == 1


def scalar_count(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT count(*) FROM land.certificate")).scalar()


def test_district_offices_find_parcels_by_owner_as_typed_and_by_point(register, cli_env, tmp_path):
    decomposed = unicodedata.normalize("NFD", "Lê Văn Bình")
    records = [
        record(0),  # Nguyễn Văn An
        record(1, TenChu="Trần Thị Đào"),
        record(2, TenChu=decomposed),
        record(3, TenChu="Nguyễn  Văn   Ánh"),
    ]
    load_as_the_flow_does(register, write(tmp_path, records, "d.gpkg"))

    def owners(name):
        found = rows(register, "SELECT parcel_no FROM land.parcels_of_owner(:n)", n=name)
        return [parcel for (parcel,) in found]

    assert owners("nguyen van an") == [1, 4]  # a part of the name: Ánh begins with it
    assert owners("NGUYỄN VĂN") == [1, 4]
    assert owners("nguyen van anh") == [4]  # however many spaces it was typed with
    assert owners("dao") == [2]  # đ is d
    assert owners(unicodedata.normalize("NFD", "Đào")) == [2]
    assert owners("le van binh") == [3]  # stored decomposed, found all the same
    assert owners("Ðào") == [2]  # an Icelandic eth, as a legacy conversion writes Đ
    assert owners("Phạm") == []
    assert owners(" ") == [] and owners("") == []
    assert owners("%") == [] and owners(".*") == []  # a stray keystroke lists no one

    shown = run_cli("find", "--owner", "nguyen van", env=cli_env)
    assert shown.returncode == 0, shown.stderr
    assert [line.split()[0] for line in shown.stdout.splitlines()] == [
        "22924/5/1",
        "22924/5/4",
    ]
    assert "Nguyễn Văn An  100.0 m²" in shown.stdout and shown.stdout.rstrip().endswith("ready")
    assert not shown.stderr
    # More than the limit: the first ones, and a word that there are more.
    first = run_cli("find", "--owner", "nguyen van", "--limit", "1", env=cli_env)
    assert (first.returncode, first.stdout.split()[0]) == (0, "22924/5/1")
    assert "more than 1 parcels found, the first 1 shown (--limit" in first.stderr
    first = run_cli("find", "--owner", "nguyen van", "--limit", "1", "--json", env=cli_env)
    data = json.loads(first.stdout)
    assert ([p["parcel_no"] for p in data["parcels"]], data["more"]) == ([1], True)
    data = json.loads(run_cli("find", "--owner", "dao", "--json", env=cli_env).stdout)
    assert ([p["parcel_no"] for p in data["parcels"]], data["more"]) == ([2], False)

    # Lot 1 (parcel 2) seen from a phone: latitude, longitude of its middle.
    to_wgs84 = pyproj.Transformer.from_crs(9218, 4326, always_xy=True)
    lon, lat = to_wgs84.transform(X0 + 15, Y0 + 5)
    data = json.loads(run_cli("find", "--at", f"{lat},{lon}", "--json", env=cli_env).stdout)
    assert [(p["parcel_no"], p["distance_m"]) for p in data["parcels"]] == [(2, "0.00")]
    # A certificate's X (northing), Y (easting) of lot 3's middle.
    data = json.loads(run_cli("find", "--xy", f"{Y0 + 5},{X0 + 35}", "--json", env=cli_env).stdout)
    assert [p["parcel_no"] for p in data["parcels"]] == [4]
    # 3 m north of lot 0: no parcel there; lot 0 within 5 m (lot 1's corner is 5.83 m away).
    point = f"{Y0 + 13},{X0 + 5}"
    assert run_cli("find", "--xy", point, env=cli_env).returncode == 1
    swapped = run_cli("find", "--xy", f"{X0 + 5},{Y0 + 5}", env=cli_env)
    assert swapped.returncode == 1 and "is X the northing?" in swapped.stderr
    near = run_cli("find", "--xy", point, "--within", "5", "--json", env=cli_env)
    assert [(p["parcel_no"], p["distance_m"]) for p in json.loads(near.stdout)["parcels"]] == [
        (1, "3.00")
    ]

    assert run_cli("find", env=cli_env).returncode == 2
    # A database error is one line and exit 4, not a traceback (nor 1, "none found").
    slow = {**cli_env, "PGOPTIONS": "-c statement_timeout=1"}
    broken = run_cli("find", "--owner", "an", env=slow)
    assert broken.returncode == 4, broken.stderr
    assert broken.stderr.startswith("landpipe: ") and broken.stderr.count("\n") == 1
    timing_out = sa.create_engine(register.url, connect_args={"options": "-c statement_timeout=1"})
    try:
        # The server names the cancel "statement timeout" or, when the 1 ms timer fires
        # between its checks, "user request": either way one wrapped line.
        with pytest.raises(
            DatabaseError, match=r"^cannot search the register: canceling statement"
        ):
            find_parcels(timing_out, owner="an")
    finally:
        timing_out.dispose()
    assert run_cli("find", "--at", "108.1,10.9", env=cli_env).returncode == 2  # longitude first
    assert run_cli("find", "--xy", "12345", env=cli_env).returncode == 2


def open_flags(engine) -> list[tuple[int, str | None]]:
    """(parcel, batch that closed it) of every CERT_CHANGED finding."""
    return rows(
        engine,
        "SELECT parcel_no, closed_by_batch_id FROM land.finding"
        " WHERE rule_code = 'CERT_CHANGED' ORDER BY parcel_no, id",
    )


def test_a_review_closes_a_certificate_flag_and_nothing_else(register, cli_env, tmp_path):
    """A certified parcel a delivery changed is held (CERT_CHANGED) until a person reviews
    it; the review closes that flag only, and the parcel can then be certified again."""
    records = [record(0), record(1), record(2)]
    load_as_the_flow_does(register, write(tmp_path, records, "d1.gpkg"))
    certify(register, "CS-1", parcel_no=1)
    certify(register, "CS-2", parcel_no=2)
    # Parcel 1 sold; parcel 2 given a land use nobody knows.
    changed = [record(0, TenChu="Lê Thị Hoa"), record(1, KyHieuMucDichSuDung="XYZ"), record(2)]
    (second, _) = load_as_the_flow_does(register, write(tmp_path, changed, "d2.gpkg"))
    assert open_flags(register) == [(1, None), (2, None)]
    assert ready(register) == [3]

    wrong_inputs = (
        ["--by", " ", "--note", "checked"],
        ["--by", "An", "--note", "x\x07y"],
        ["--by", "Tr\udce0n", "--note", "ok"],  # the byte 0xE0 of a terminal in TCVN3
    )
    for wrong in wrong_inputs:
        usage = run_cli("review", "22924", "5", "1", "--batch", "2", *wrong, env=cli_env)
        assert usage.returncode == 2, usage.stderr
        assert usage.stderr.startswith("landpipe: ") and usage.stderr.count("\n") == 1
    # (The command refuses such bytes in any argument; the API in its text.)
    with pytest.raises(ValueError, match=r"^the note is not Unicode text"):
        certificate_text("Tr\udce0n", "the note", 40)
    review = ["--batch", str(second.batch), "--by", "An"]
    nothing = run_cli("review", "22924", "5", "3", *review, "--note", "ok", env=cli_env)
    assert nothing.returncode == 1
    assert nothing.stderr == "landpipe: parcel 22924/5/3 has no open CERT_CHANGED finding\n"

    done = run_cli(
        "review", "22924", "5", "1", "--batch", str(second.batch),
        "--by", "Trần  Văn Bình,\nVPĐK Phan Thiết",
        "--note", "Sale contract 12/2026 seen; boundary unchanged", env=cli_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"reviewed parcel 22924/5/1 (batch {second.batch + 1}, by Trần Văn Bình, VPĐK Phan"
        f" Thiết): closed CERT_CHANGED of batch {second.batch} (certificate CS-1, changed)",
        "  parcel 22924/5/1 is ready for a certificate",
    ]
    assert rows(
        register,
        "SELECT kind, status, commune_code, reviewed_by, note, n_closed, source_path"
        f" FROM land.batch WHERE id > {second.batch}",
    ) == [
        ("review", "reviewed", "22924", "Trần Văn Bình, VPĐK Phan Thiết",
         "Sale contract 12/2026 seen; boundary unchanged", 1, None),
    ]  # fmt: skip
    assert open_flags(register) == [(1, second.batch + 1), (2, None)]
    assert ready(register) == [1, 3]
    # Its report says who reviewed, what they found, and the flag it closed.
    report = run_cli("report", str(second.batch + 1), "--out", str(tmp_path / "r"), env=cli_env)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r" / f"batch-{second.batch + 1}.report.html").read_text()
    assert "<dt>Reviewed by</dt><dd>Trần Văn Bình, VPĐK Phan Thiết</dd>" in page
    assert "<dt>Note</dt><dd>Sale contract 12/2026 seen; boundary unchanged</dd>" in page
    assert "compared the changed parcel with its certificate" in page
    assert "holds certificate CS-1" in page and "<dt>Delivery</dt>" not in page
    assert f"<title>Batch {second.batch + 1}: review</title>" in page
    assert "Findings per rule" not in page and "Nothing to draw" not in page
    gpkg = tmp_path / "r" / f"batch-{second.batch + 1}.findings.gpkg"
    (batch,) = pyogrio.read_dataframe(gpkg, layer="batch").to_dict("records")
    assert (batch["kind"], batch["n_closed"], batch["note"]) == (
        "review", 1, "Sale contract 12/2026 seen; boundary unchanged",
    )  # fmt: skip
    closed = pyogrio.read_dataframe(gpkg, layer="closed_findings")
    assert closed[["batch_id", "rule_code", "parcel_no"]].values.tolist() == [
        [second.batch, "CERT_CHANGED", 1]
    ]
    with contextlib.closing(sqlite3.connect(gpkg)) as db:  # typed as the findings layers
        types = {row[1]: row[2] for row in db.execute("PRAGMA table_info(closed_findings)")}
    assert (types["other_sheet_no"], types["other_parcel_no"]) == ("INTEGER", "INTEGER")
    assert (types["other_commune_code"], types["batch_id"]) == ("TEXT", "INTEGER")
    again = run_cli("review", "22924", "5", "1", *review, "--note", "ok", env=cli_env)
    assert again.returncode == 1
    certified = run_cli("certify", "22924", "5", "1", "--serial", "CS-3", env=cli_env)
    assert certified.returncode == 0, certified.stderr

    # Parcel 2's flag is closed; the unknown land use still holds it.
    data = json.loads(
        run_cli(
            "review", "22924", "5", "2", *review, "--note", "land use to be corrected",
            "--json", env=cli_env,
        ).stdout
    )  # fmt: skip
    assert data["reviewed"] is True and data["current"] is True and data["ready"] is False
    assert data["latest"] == data["flagged_by"] == second.batch
    assert data["open"] == [
        {"finding": data["open"][0]["finding"], "made_by_batch": second.batch,
         "certificate": "CS-2", "change": "changed"},
    ]  # fmt: skip
    assert data["not_ready_because"] == [
        "an open block finding (ATTR_LAND_USE_UNKNOWN)",
        "unknown land-use code XYZ",
    ]
    summary = rows(
        register,
        "SELECT kind, n_closed, reviewed_by FROM land.batch_summary WHERE kind = 'review'"
        " ORDER BY batch_id",
    )
    assert summary == [("review", 1, "Trần Văn Bình, VPĐK Phan Thiết"), ("review", 1, "An")]

    # A retired certified parcel is reviewed as well; it has no current version to certify.
    # Parcel 3, holding two certificates (co-users), is changed: both are flagged.
    certify(register, "CS-5", parcel_no=3)
    certify(register, "CS-6", parcel_no=3)
    redrawn = [changed[1], record(2, TenChu="Phạm Văn Cường")]
    (third, _) = load_as_the_flow_does(register, write(tmp_path, redrawn, "d3.gpkg"))
    retired = run_cli("parcel", "22924", "5", "1", env=cli_env)  # what to review, and how
    assert retired.returncode == 1
    assert retired.stderr.startswith(
        f"landpipe: no current parcel 22924/5/1 (retired by batch {third.batch} at "
    )
    assert retired.stderr.endswith(
        f"; certificate CS-1 flagged (retired) by batch {third.batch}; certificate CS-3 flagged"
        f" (retired) by batch {third.batch}: review with landpipe review 22924 5 1 --batch"
        f" {third.batch}\n"
    )
    gone = run_cli(
        "review", "22924", "5", "1", "--batch", str(third.batch), "--by", "An", "--note", "merged",
        env=cli_env,
    )  # fmt: skip
    assert gone.returncode == 0, gone.stderr
    # Every certificate the key held is flagged, CS-1 of its first version too: the register
    # does not know whether CS-3 replaced it or was a co-user's (certified on a later version).
    assert gone.stdout.splitlines() == [
        f"reviewed parcel 22924/5/1 (batch {third.batch + 1}, by An): closed CERT_CHANGED of"
        f" batch {third.batch} (certificate CS-1, retired); CERT_CHANGED of batch {third.batch}"
        " (certificate CS-3, retired)",
        "  parcel 22924/5/1 has no current version",
    ]
    assert open_flags(register) == [
        (1, second.batch + 1), (1, third.batch + 1), (1, third.batch + 1), (2, second.batch + 2),
        (3, None), (3, None),
    ]  # fmt: skip
    flags = rows(
        register,
        "SELECT detail ->> 'certificate' FROM land.finding WHERE rule_code = 'CERT_CHANGED'"
        " AND parcel_no = 3 ORDER BY 1",
    )
    assert flags == [("CS-5",), ("CS-6",)]


def test_a_review_waits_for_a_load_of_its_commune(register, tmp_path):
    """The review reads and closes the flags under the commune's lock, the one a load takes
    (a load in progress may flag the parcel again, or close its findings)."""
    from landpipe.extract import review_certificate_change

    load_as_the_flow_does(register, write(tmp_path, [record(0)], "d1.gpkg"))
    certify(register, "CS-1", parcel_no=1)
    load_as_the_flow_does(register, write(tmp_path, [record(0, TenChu="Lê Thị Hoa")], "d2.gpkg"))
    told = []
    result, released = behind(
        register,
        lambda conn: lock_communes(conn, ["22924"]),  # as a load of the commune holds it
        lambda: review_certificate_change(
            register, "22924", 5, 1, flagged_by=2, by="An", note="seen", waiting=told.append
        ),
    )
    assert result["reviewed"] is True and result["ready"] is True and told == ["22924"]
    ((finished_at,),) = rows(register, "SELECT finished_at FROM land.batch WHERE kind = 'review'")
    assert finished_at >= released


def test_a_load_keeps_its_look_across_a_review_not_across_a_delivery(register, tmp_path):
    """A review writes no parcel: a load that looked at the register before one committed
    still uses what it saw; after another delivery of the commune it reads them again."""
    from landpipe import load as loader
    from landpipe import register as land_register
    from landpipe.extract import review_certificate_change
    from landpipe.sources import read_delivery

    load_as_the_flow_does(register, write(tmp_path, [record(0), record(1)], "d1.gpkg"))
    certify(register, "CS-1", parcel_no=1)
    sold = [record(0, TenChu="Lê Thị Hoa"), record(1)]
    load_as_the_flow_does(register, write(tmp_path, sold, "d2.gpkg"))
    look, _ = loader.look_at_register(register, read_delivery(write(tmp_path, sold, "d3.gpkg")))

    def still_current():
        raw = register.raw_connection()
        try:
            with raw.driver_connection.transaction():
                lock_communes(raw.driver_connection, ["22924"])
                return land_register.still_current(raw.driver_connection, look, look.sheets)
        finally:
            raw.close()

    reviewed = review_certificate_change(register, "22924", 5, 1, flagged_by=2, by="A", note="n")
    assert reviewed["reviewed"]
    assert still_current() is look.current
    load_as_the_flow_does(register, write(tmp_path, [record(0), record(1)], "d4.gpkg"))
    assert still_current() is None


def test_a_command_told_of_waiting_is_told_once_and_takes_every_lock(register):
    """Locks tried in the order of the codes: the first held elsewhere is told of, then
    waited for with the rest."""
    told = []

    def work():
        raw = register.raw_connection()
        try:
            conn = raw.driver_connection
            with conn.transaction():
                lock_communes(conn, ["22930", "22927", "22924"], waiting=told.append)
                return conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND pid = pg_backend_pid() AND granted"
                ).fetchone()[0]
        finally:
            raw.close()

    held, _ = behind(register, lambda conn: lock_communes(conn, ["22927"]), work)
    assert told == ["22927"] and held == 3


def test_a_review_closes_nothing_when_the_parcel_was_flagged_again_since(
    register, cli_env, tmp_path
):
    """The reviewer names the change they reviewed (the batch that flagged the parcel): a
    later one, loaded since they looked (or while the review waited for the commune's lock),
    was reviewed by nobody, so nothing is closed."""
    load_as_the_flow_does(register, write(tmp_path, [record(0), record(1)], "d1.gpkg"))
    certify(register, "CS-1", parcel_no=1)
    sold = [record(0, TenChu="Lê Thị Hoa"), record(1)]
    (second, _) = load_as_the_flow_does(register, write(tmp_path, sold, "d2.gpkg"))
    moved = [record(0, TenChu="Lê Thị Hoa", geometry=shift(lot(0), 3.0)), record(1)]
    (third, _) = load_as_the_flow_does(register, write(tmp_path, moved, "d3.gpkg"))
    flags = (
        f"CERT_CHANGED of batch {second.batch} (certificate CS-1, changed);"
        f" CERT_CHANGED of batch {third.batch} (certificate CS-1, changed)"
    )

    def review(batch: int):
        return run_cli(
            "review", "22924", "5", "1", "--batch", str(batch), "--by", "An",
            "--note", "sale to Lê Thị Hoa seen; boundary unchanged", env=cli_env,
        )  # fmt: skip

    stale = review(second.batch)
    assert stale.returncode == 5
    assert stale.stderr == (
        "landpipe: nothing closed: the latest change that flagged parcel 22924/5/1 is batch"
        f" {third.batch}'s, not batch {second.batch}'s (made since: look at it first,"
        f" `landpipe parcel`); open: {flags}\n"
    )
    typo = review(third.batch + 7)
    assert typo.returncode == 5
    assert f"is batch {third.batch}'s, not batch {third.batch + 7}'s; open: " in typo.stderr
    assert open_flags(register) == [(1, None), (1, None)]
    assert rows(register, "SELECT count(*) FROM land.batch WHERE kind = 'review'") == [(0,)]
    data = json.loads(run_cli("parcel", "22924", "5", "1", "--json", env=cli_env).stdout)
    assert data["not_ready_because"][1].endswith(f"--batch {third.batch})")
    assert 1 not in ready(register)

    done = review(third.batch)
    assert done.returncode == 0, done.stderr
    assert f"closed {flags}" in done.stdout
    assert open_flags(register) == [(1, third.batch + 1), (1, third.batch + 1)]


def test_upgrading_puts_serials_recorded_full_width_in_their_plain_form(register, tmp_path):
    """Serials recorded before they were kept in their compatibility form: each becomes its
    plain form, unless that one is recorded too, which a person resolves."""
    from landpipe.migrate import upgrade

    load_file(register, write(tmp_path, [record(i) for i in range(3)]))
    certify(register, "ＣＳ　０００１２３", parcel_no=1)  # as typed, kept so before
    certify(register, "cs  000124 ", parcel_no=2)
    certify(register, "ＣＳ　０００１２５", parcel_no=3)
    certify(register, "CS 000125", parcel_no=2)  # the same serial, recorded twice
    upgrade(register)
    assert rows(register, "SELECT serial, parcel_no FROM land.certificate ORDER BY 1") == [
        ("CS 000123", 1),
        ("CS 000124", 2),
        ("CS 000125", 2),
        ("ＣＳ　０００１２５", 3),
    ]
    upgrade(register)  # again: nothing left to change, nothing fails
    assert rows(register, "SELECT count(*) FROM land.certificate") == [(4,)]


def test_the_findings_in_force_on_a_parcel_name_it_as_either_of_a_pair(register, tmp_path):
    """An overlap is kept under the first parcel of the two: the README's query of a parcel's
    findings showed the second one none, while the overlap held it from a certificate."""
    overlapping = translate(lot(1), xoff=-1.0)  # 1 m into lot 0
    load_file(register, write(tmp_path, [record(0), record(1, geometry=overlapping), record(2)]))
    query = (
        "SELECT rule_code, severity, blocks FROM land.parcel_findings('22924', 5, :parcel)"
        " WHERE rule_code = 'TOPO_OVERLAP'"
    )
    assert rows(register, query, parcel=1) == [("TOPO_OVERLAP", "block", True)]
    assert rows(register, query, parcel=2) == [("TOPO_OVERLAP", "block", True)]
    assert rows(register, query, parcel=3) == []
    ready = rows(register, "SELECT parcel_no FROM land.parcel_ready WHERE sheet_no = 5 ORDER BY 1")
    assert ready == [(3,)]
    with register.connect() as connection:  # a clerk's role reads it
        assert connection.execute(
            sa.text(
                "SELECT has_function_privilege('land_reader',"
                " 'land.parcel_findings(text, integer, integer)', 'EXECUTE')"
            )
        ).scalar()
