"""Loading into the register (landpipe/load.py) with a real PostGIS, without Prefect."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from landpipe import load as loader
from landpipe.sources import read_delivery
from landpipe.validate import validate
from tests.parcels import BOW_TIE, X0, Y0, delivery, lot, record


def write(tmp_path, records, name="delivery.gpkg", crs=9218):
    path = tmp_path / name
    delivery(records, crs=crs).to_file(path)
    return path


def load_file(engine, path, **options):
    read = read_delivery(path, **options)
    return loader.load(engine, read, validate(read.parcels), started_at=datetime.now(UTC))


def load_with_reading_findings(engine, path):
    """:func:`load_file`, with the findings made while reading, as the flow loads."""
    read = read_delivery(path)
    validation = validate(read.parcels, read.findings)
    return loader.load(engine, read, validation, started_at=datetime.now(UTC))


def rows(engine, sql, **params):
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(sql), params)]


def table_counts(engine):
    with engine.connect() as connection:
        return {
            table: connection.execute(sa.text(f"SELECT count(*) FROM land.{table}")).scalar()
            for table in ("batch", "parcel", "finding", "rejected_record")
        }


def test_load_writes_parcels_findings_and_rejects(register, tmp_path):
    records = [record(i) for i in range(5)]
    records[1]["KyHieuMucDichSuDung"] = "ODT+XYZ"
    records[2]["geometry"] = BOW_TIE
    records[3]["TenChu"] = "Trần Thị Bích Ngọc"
    result = load_file(register, write(tmp_path, records))
    assert (result.status, result.read, result.loaded, result.rejected) == ("loaded", 5, 4, 1)
    assert result.issues == {"ATTR_LAND_USE_UNKNOWN": 1, "GEOM_INVALID": 1}
    with register.connect() as connection:
        parcel = connection.execute(
            sa.text(
                "SELECT commune_code, sheet_no, parcel_no, land_use_codes, area_m2,"
                " declared_area_m2, owner_name, batch_id, ST_SRID(geom), GeometryType(geom)"
                " FROM land.parcel WHERE parcel_no = 4"
            )
        ).one()
        assert tuple(parcel) == (
            "22924",
            5,
            4,
            ["ODT"],
            100.0,
            100.0,
            "Trần Thị Bích Ngọc",
            result.batch,
            9218,
            "MULTIPOLYGON",
        )
        rejected = connection.execute(
            sa.text(
                "SELECT source_row, rule_codes, parcel_no, attributes->>'TenChu', ST_IsValid(geom)"
                " FROM land.rejected_record"
            )
        ).one()
        assert tuple(rejected) == (2, ["GEOM_INVALID"], 3, "Nguyễn Văn An", False)
        finding = connection.execute(
            sa.text(
                "SELECT severity, sheet_no, parcel_no, ST_AsText(location) FROM land.finding"
                " WHERE rule_code = 'GEOM_INVALID'"
            )
        ).one()
        assert finding[:3] == ("reject", 5, 3) and finding[3].startswith("POINT")
        batch = connection.execute(
            sa.text(
                "SELECT status, n_read, n_loaded, n_rejected, commune_code, crs_read, crs_how,"
                " length(source_sha256) FROM land.batch"
            )
        ).one()
        assert tuple(batch) == ("loaded", 5, 4, 1, "22924", "EPSG:9218", "file", 64)
        blocked = (
            connection.execute(sa.text("SELECT parcel_no FROM land.parcel_detail WHERE blocked"))
            .scalars()
            .all()
        )
        assert blocked == [2]


def test_same_file_again_is_unchanged_and_writes_nothing(register, tmp_path):
    path = write(tmp_path, [record(i) for i in range(3)])
    first = load_file(register, path)
    before = table_counts(register)
    again = load_file(register, path)
    assert (again.status, again.batch) == ("unchanged", first.batch)
    assert table_counts(register) == before
    # Its summary says so: every parcel unchanged, none loaded.
    assert (again.loaded, again.changes) == (
        0,
        {"added": 0, "changed": 0, "unchanged": 3, "retired": 0},
    )


def test_redelivery_replaces_parcels_of_the_same_key(register, tmp_path):
    load_file(register, write(tmp_path, [record(i) for i in range(3)], "first.gpkg"))
    changed = [record(i) for i in range(3)]
    changed[0]["TenChu"] = "Lê Văn Tám"
    second = load_file(register, write(tmp_path, changed, "second.gpkg"))
    with register.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT parcel_no, owner_name, batch_id FROM land.parcel ORDER BY parcel_no")
        ).all()
    assert len(rows) == 3
    assert rows[0][1:] == ("Lê Văn Tám", second.batch)


def test_every_record_rejected_is_a_rejected_batch(register, tmp_path):
    result = load_file(register, write(tmp_path, [record(0, MaXa="99999")]))
    assert (result.status, result.loaded, result.rejected) == ("rejected", 0, 1)
    assert table_counts(register)["rejected_record"] == 1


def test_failure_mid_load_leaves_the_database_as_before(register, tmp_path, monkeypatch):
    load_file(register, write(tmp_path, [record(i) for i in range(2)], "first.gpkg"))
    before = table_counts(register)

    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(loader, "_copy_rejected", broken)
    records = [record(i, TenChu="Người Khác") for i in range(4)]
    records[3]["MaXa"] = "99999"
    with pytest.raises(RuntimeError, match="disk full"):
        load_file(register, write(tmp_path, records, "second.gpkg"))
    assert table_counts(register) == before
    with register.connect() as connection:
        owners = connection.execute(
            sa.text("SELECT DISTINCT owner_name FROM land.parcel")
        ).scalars()
        assert list(owners) == ["Nguyễn Văn An"]


def test_overlap_with_a_neighbouring_sheet_already_registered(register, tmp_path):
    from shapely.affinity import translate

    load_file(register, write(tmp_path, [record(i) for i in range(3)], "sheet5.gpkg"))
    # Sheet 6 begins where sheet 5 ends, but its first lot reaches 0.5 m back into lot 5/3.
    neighbour = translate(lot(2), xoff=9.5)
    records = [
        record(0, SoHieuToBanDo=6, geometry=neighbour, DienTich=100.0),
        record(1, SoHieuToBanDo=6, geometry=translate(lot(3), xoff=10)),
    ]
    result = load_file(register, write(tmp_path, records, "sheet6.gpkg"))
    assert result.issues == {"TOPO_OVERLAP": 1}
    with register.connect() as connection:
        finding = connection.execute(
            sa.text(
                "SELECT sheet_no, parcel_no, other_sheet_no, other_parcel_no, area_m2,"
                " GeometryType(location), detail->>'against' FROM land.finding"
            )
        ).one()
        blocked = connection.execute(
            sa.text(
                "SELECT sheet_no, parcel_no FROM land.parcel_detail WHERE blocked ORDER BY 1, 2"
            )
        ).all()
    assert tuple(finding) == (6, 1, 5, 3, 5.0, "POLYGON", "register")
    assert [tuple(row) for row in blocked] == [(5, 3), (6, 1)]


def test_load_leaves_the_callers_validation_as_it_was(register, tmp_path):
    from shapely.affinity import translate

    load_file(register, write(tmp_path, [record(i) for i in range(3)], "sheet5.gpkg"))
    records = [record(0, SoHieuToBanDo=6, geometry=translate(lot(2), xoff=9.5), DienTich=100.0)]
    read = read_delivery(write(tmp_path, records, "sheet6.gpkg"))
    validation = validate(read.parcels, read.findings)
    before = list(validation.findings)
    result = loader.load(register, read, validation, started_at=datetime.now(UTC))
    assert result.issues == {"TOPO_OVERLAP": 1}  # against the registered sheet 5
    assert validation.findings == before  # a load retried with it adds that finding once


def test_parcels_drawn_in_3d_are_stored_on_the_plane(register, tmp_path):
    from shapely.geometry import Polygon

    def raised(i: int) -> Polygon:
        return Polygon([(x, y, 12.5) for x, y in lot(i).exterior.coords])

    # Not the first load (which leaves content hashes to SQL): the loader stores its own.
    load_file(register, write(tmp_path, [record(40, SoHieuToBanDo=6)], "other.gpkg"))
    records = [record(0, geometry=raised(0)), record(1, geometry=raised(1)), record(2)]
    result = load_file(register, write(tmp_path, records, "z.gpkg"))
    assert (result.status, result.loaded, result.rejected) == ("loaded", 3, 0)
    stored = rows(
        register,
        "SELECT ST_NDims(geom), area_m2::float8, content_hash = land.parcel_content_hash(geom,"
        " land_use_codes, declared_area_m2, legal_area_m2, owner_name, address)"
        " FROM land.parcel_version WHERE sheet_no = 5 ORDER BY parcel_no",
    )
    assert stored == [(2, 100.0, True)] * 3


def test_sheet_or_parcel_number_zero_is_rejected_not_a_failed_load(register, tmp_path):
    records = [record(0, SoThuTuThua=0), record(1, SoHieuToBanDo=0), record(2)]
    result = load_file(register, write(tmp_path, records, "zero.gpkg"))
    assert (result.status, result.loaded, result.rejected) == ("loaded", 1, 2)
    assert result.issues == {"ATTR_MISSING": 2}
    rejected = rows(
        register,
        "SELECT source_row, rule_codes, attributes ->> 'SoThuTuThua'"
        " FROM land.rejected_record WHERE batch_id = :b ORDER BY source_row",
        b=result.batch,
    )
    assert rejected == [
        (0, ["ATTR_MISSING"], "0"),
        (1, ["ATTR_MISSING"], "2"),
    ]


def test_a_declared_area_the_register_cannot_hold_is_no_area(register, tmp_path):
    # Beyond numeric(14, 1): before, 1e13 failed the whole load and 1e17 was stored as 0.
    records = [record(0, DienTich=1e13), record(1, DienTich=1e17), record(2, DienTich=1e12)]
    result = load_with_reading_findings(register, write(tmp_path, records, "area.gpkg"))
    assert (result.status, result.loaded) == ("loaded", 3)
    assert result.issues == {"ATTR_AREA_MISMATCH": 1, "ATTR_UNREADABLE": 2}
    areas = rows(register, "SELECT declared_area_m2::float8 FROM land.parcel ORDER BY parcel_no")
    assert areas == [(None,), (None,), (1e12,)]


def test_an_unreadable_area_or_scale_is_kept_unknown_and_reported(register, tmp_path):
    records = [
        record(0, DienTich="12a", TyLeBanDo="1:1000"),
        record(1, DienTich="100,0", TyLeBanDo="một nghìn"),
        record(2, DienTich="  ", TyLeBanDo=None),  # blank: not delivered, nothing to report
    ]
    result = load_with_reading_findings(register, write(tmp_path, records, "unreadable.gpkg"))
    assert (result.status, result.loaded) == ("loaded", 3)
    assert result.issues == {"ATTR_UNREADABLE": 2}
    found = rows(
        register,
        "SELECT parcel_no, severity, detail ->> 'field', detail ->> 'value'"
        " FROM land.finding WHERE batch_id = :b ORDER BY parcel_no",
        b=result.batch,
    )
    areas = rows(register, "SELECT declared_area_m2::float8 FROM land.parcel ORDER BY parcel_no")
    assert found == [
        (1, "warn", "DienTich", "12a"),
        (2, "warn", "TyLeBanDo", "một nghìn"),
    ]
    assert areas == [(None,), (100.0,), (None,)]


def test_an_unreadable_map_scale_is_reported_when_the_scale_option_fills_it(tmp_path):
    path = write(tmp_path, [record(0, TyLeBanDo="một nghìn"), record(1)], "scale.gpkg")
    read = read_delivery(path, map_scale=1000)
    assert read.parcels["map_scale"].tolist() == [1000, 1000]
    assert [(f.rule_code, f.source_row, f.detail["value"]) for f in read.findings] == [
        ("ATTR_UNREADABLE", 0, "một nghìn")
    ]


def test_a_parcel_with_a_stray_vertex_far_away_is_rejected_and_the_rest_load(register, tmp_path):
    from shapely.geometry import Polygon

    stray = Polygon([(X0, Y0), (X0 + 10, Y0), (X0 + 10, Y0 + 10), (0.0, 0.0)])
    records = [record(0, geometry=stray)] + [record(i) for i in range(1, 20)]
    result = load_file(register, write(tmp_path, records, "s.gpkg"))
    assert (result.status, result.loaded, result.rejected) == ("loaded", 19, 1)
    (rules,) = rows(register, "SELECT rule_codes FROM land.rejected_record")[0]
    assert "GEOM_OUT_OF_EXTENT" in rules


@pytest.mark.parametrize("faults", [False, True])  # every record accepted, or some rejected
def test_records_read_in_many_arrow_batches_load_as_records_read_whole(
    faults, register, tmp_path, monkeypatch
):
    """GDAL hands a large layer over in Arrow batches (65,536 records each): text kept as
    Arrow then spans several chunks, and a load's COPY takes slices across them. Read in
    batches of 7, a delivery is the one read whole, and what the register holds of it has
    the content and record hashes of the records read whole."""
    import functools

    import numpy as np
    import pandas as pd
    import pyogrio

    from landpipe import register as registry
    from landpipe import synth
    from landpipe.sources import files

    frame = synth.generate_delivery("22924", n_parcels=300, seed=12, faults=faults)
    path = synth.write_delivery(frame, tmp_path / "thua_dat.gpkg")
    whole = read_delivery(path)
    monkeypatch.setattr(
        files.pyogrio, "read_arrow", functools.partial(pyogrio.read_arrow, batch_size=7)
    )
    batched = read_delivery(path)
    assert batched.records.column("TenChu").num_chunks > 1
    assert isinstance(batched.attributes["TenChu"].array, pd.arrays.ArrowStringArray)
    pd.testing.assert_frame_equal(batched.attributes, whole.attributes)
    pd.testing.assert_frame_equal(pd.DataFrame(batched.parcels), pd.DataFrame(whole.parcels))
    assert np.array_equal(batched.record_hashes, whole.record_hashes)

    validation = validate(batched.parcels, batched.findings)
    result = loader.load(register, batched, validation, started_at=datetime.now(UTC))
    assert result.changes["added"] == len(validation.parcels) > 0
    assert bool(len(validation.rejected)) == bool(len(validation.repaired)) == faults
    look, unchanged = loader.look_at_register(register, whole)
    # By record hash: all but a parcel whose geometry validation repaired (it keeps none).
    assert unchanged.sum() == len(validation.parcels) - len(validation.repaired)
    raw = register.raw_connection()
    try:
        by_content = registry.compare(
            raw.driver_connection,
            look.current,
            whole,
            validation.parcels,
            None,
            validation.repaired,
        )
    finally:
        raw.close()
    assert by_content.same.all()
