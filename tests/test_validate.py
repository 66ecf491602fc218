"""Each rule of the catalogue on a tiny delivery (landpipe/validate.py, no database)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Point, Polygon

from landpipe import schemas
from landpipe.sources.fields import map_fields
from landpipe.validate import validate
from tests.parcels import BOW_TIE, SELF_TOUCHING, X0, Y0, delivery, record


def run(records):
    parcels, _ = map_fields(delivery(records))
    return validate(parcels)


def rules_of(validation, source_row):
    return sorted(f.rule_code for f in validation.findings if f.source_row == source_row)


def test_clean_delivery_has_no_findings():
    result = run([record(i) for i in range(3)])
    assert result.findings == []
    assert len(result.parcels) == 3
    # Geometries as delivered (or repaired); the register stores each as a MultiPolygon.
    assert set(result.parcels.geometry.geom_type) == {"Polygon"}


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"geometry": None}, "GEOM_EMPTY"),
        ({"geometry": Polygon()}, "GEOM_EMPTY"),
        ({"geometry": Point(X0 + 15, Y0 + 5)}, "GEOM_NOT_POLYGON"),
        ({"geometry": LineString([(X0, Y0), (X0 + 10, Y0)])}, "GEOM_NOT_POLYGON"),
        ({"geometry": BOW_TIE}, "GEOM_INVALID"),
        ({"SoThuTuThua": None}, "ATTR_MISSING"),
        ({"SoHieuToBanDo": "không rõ"}, "ATTR_MISSING"),
        ({"MaXa": "99999"}, "ATTR_COMMUNE_UNKNOWN"),
        (
            {
                "geometry": shapely.affinity.translate(
                    Polygon([(0, 0), (10, 0), (10, 10)]), 300_000, 1_000_000
                ),
                "DienTich": 50.0,
            },
            "GEOM_OUT_OF_EXTENT",
        ),
    ],
)
def test_rejecting_rules_keep_the_record(overrides, rule):
    assert schemas.rules()[rule].severity == "reject"
    result = run([record(0), record(1, **overrides)])
    assert rules_of(result, 1) == [rule]
    assert list(result.parcels["source_row"]) == [0]
    rejected = result.rejected.iloc[0]
    assert rejected.rule_codes == [rule]
    assert rejected.source_row == 1  # links it to the delivered attributes, kept by the loader


def test_a_key_number_too_large_for_the_register_says_so():
    result = run([record(0), record(1, SoThuTuThua=2_147_483_648)])
    (finding,) = result.findings
    assert (finding.rule_code, finding.source_row) == ("ATTR_MISSING", 1)
    assert finding.message.endswith(
        "lacks parcel_no (missing, unreadable, or not a whole number from 1 to 2147483647)"
    )


def test_invalid_finding_has_reason_and_location():
    result = run([record(0, geometry=BOW_TIE)])
    finding = result.findings[0]
    assert "Self-intersection" in finding.message
    assert finding.location.distance(Point(X0 + 5, Y0 + 5)) < 1e-6


def test_duplicate_key_rejects_every_copy():
    result = run([record(0), record(1, SoThuTuThua=1), record(2, SoThuTuThua=1), record(3)])
    assert [f.source_row for f in result.findings if f.rule_code == "ATTR_KEY_DUPLICATE"] == [
        0,
        1,
        2,
    ]
    assert list(result.parcels["source_row"]) == [3]
    assert len(result.rejected) == 3


def test_unknown_land_use_blocks_but_loads():
    result = run([record(0, KyHieuMucDichSuDung="ODT+XYZ")])
    assert rules_of(result, 0) == ["ATTR_LAND_USE_UNKNOWN"]
    assert schemas.rules()["ATTR_LAND_USE_UNKNOWN"].severity == "block"
    assert len(result.parcels) == 1 and len(result.rejected) == 0
    assert result.findings[0].detail["codes"] == ["XYZ"]


def test_legacy_codes_are_known_but_warned():
    result = run([record(0, KyHieuMucDichSuDung="BHK+LUN+ODT")])
    assert rules_of(result, 0) == ["ATTR_LAND_USE_LEGACY"]
    assert result.findings[0].detail["codes"] == ["BHK", "LUN"]
    assert schemas.rules()["ATTR_LAND_USE_LEGACY"].severity == "warn"
    assert len(result.parcels) == 1


@pytest.mark.parametrize(
    ("declared", "flagged"),
    # A 100 m² lot: tolerance 1 m² + 1 % = 2 m².
    [(100.0, False), (101.9, False), (98.1, False), (102.1, True), (97.9, True)],
)
def test_area_mismatch_at_its_tolerance(declared, flagged):
    result = run([record(0, DienTich=declared)])
    assert (rules_of(result, 0) == ["ATTR_AREA_MISMATCH"]) is flagged
    if flagged:
        assert result.findings[0].detail["tolerance_m2"] == round(1 + 0.01 * declared, 2)


def test_missing_declared_area_is_not_a_mismatch():
    assert run([record(0, DienTich=None)]).findings == []


def test_self_touching_ring_is_repaired_not_rejected():
    assert not SELF_TOUCHING.is_valid
    result = run([record(0, geometry=SELF_TOUCHING, DienTich=round(SELF_TOUCHING.area, 1))])
    assert rules_of(result, 0) == ["GEOM_REPAIRED"]
    repaired = result.parcels.geometry.iloc[0]
    assert repaired.is_valid and repaired.geom_type == "Polygon"  # one part
    assert repaired.area == pytest.approx(SELF_TOUCHING.area)
    assert result.repaired == {0}


def test_several_faults_on_one_record_are_all_reported():
    result = run([record(0, geometry=None, MaXa="99999", KyHieuMucDichSuDung="XYZ")])
    assert rules_of(result, 0) == ["ATTR_COMMUNE_UNKNOWN", "ATTR_LAND_USE_UNKNOWN", "GEOM_EMPTY"]
    assert result.rejected.iloc[0].rule_codes == ["ATTR_COMMUNE_UNKNOWN", "GEOM_EMPTY"]


def test_no_record_disappears():
    records = [record(i) for i in range(6)]
    records[1]["geometry"] = BOW_TIE
    records[2]["SoThuTuThua"] = 1
    records[4]["MaXa"] = None
    result = run(records)
    assert sorted([*result.parcels["source_row"], *result.rejected["source_row"]]) == list(range(6))


@pytest.mark.parametrize("seed", [1, 20261127])
def test_generated_faults_are_found_and_nothing_else(seed):
    """Precision and recall 1.0 on the generator's truth, at 10,000 parcels."""
    from landpipe import synth

    parcels, _ = map_fields(synth.generate_delivery("22924", n_parcels=10_000, seed=seed))
    result = validate(parcels)

    def key(rule_code, sheet_no, parcel_no):
        return (rule_code, sheet_no or 0, parcel_no or 0)

    found = sorted(key(f.rule_code, f.sheet_no, f.parcel_no) for f in result.findings)
    expected = sorted(key(f.rule_code, f.sheet_no, f.parcel_no) for f in synth.FAULTS)
    assert found == expected


@pytest.mark.parametrize(
    ("scale", "declared", "flagged"),
    # A 10 m square lot, perimeter 40 m. At 1:1000 (15 cm): 0.075 x 40 = 3 m².
    # At 1:200 (5 cm): 0.025 x 40 = 1 m², the floor.
    [
        ("1:1000", 102.9, False),
        ("1:1000", 103.1, True),
        ("1/200", 100.9, False),
        ("200", 101.1, True),
        (None, 101.9, False),
    ],
)
def test_area_tolerance_scales_with_the_map_scale(scale, declared, flagged):
    result = run([record(0, DienTich=declared, TyLeBanDo=scale)])
    assert (rules_of(result, 0) == ["ATTR_AREA_MISMATCH"]) is flagged


def test_scale_option_fills_records_without_one():
    parcels, _ = map_fields(delivery([record(0, DienTich=102.9)]), map_scale=1000)
    assert validate(parcels).findings == []
    parcels, _ = map_fields(delivery([record(0, DienTich=102.9)]), map_scale=200)
    assert [f.rule_code for f in validate(parcels).findings] == ["ATTR_AREA_MISMATCH"]


# --------------------------------------------------------------------------- unchanged parcels


def test_unchanged_parcels_are_not_checked_again():
    records = [
        record(0, KyHieuMucDichSuDung="XYZ"),
        record(1, KyHieuMucDichSuDung="XYZ", DienTich=150.0),
        record(2, DienTich=150.0),
        record(3),
    ]
    parcels, _ = map_fields(delivery(records))
    every = validate(parcels)
    assert sorted({f.source_row for f in every.findings}) == [0, 1, 2]
    assert every.unchanged is None
    skipped = validate(parcels, unchanged=np.array([False, True, True, False]))
    assert rules_of(skipped, 0) == ["ATTR_LAND_USE_UNKNOWN"]
    assert [f for f in skipped.findings if f.source_row in (1, 2)] == []
    assert list(skipped.unchanged) == [False, True, True, False]
    assert list(skipped.parcels["source_row"]) == [0, 1, 2, 3]


def test_a_key_delivered_twice_is_rejected_even_when_unchanged():
    parcels, _ = map_fields(delivery([record(0), record(1, SoThuTuThua=1), record(2)]))
    result = validate(parcels, unchanged=np.array([True, False, True]))
    assert [f.source_row for f in result.findings if f.rule_code == "ATTR_KEY_DUPLICATE"] == [0, 1]
    assert list(result.parcels["source_row"]) == [2]
    assert list(result.unchanged) == [True]


def test_topology_reports_what_involves_a_changed_parcel():
    from shapely.affinity import translate

    records = [record(i) for i in range(4)]
    records[1]["geometry"] = translate(records[1]["geometry"], xoff=-0.5)  # into parcel 1
    records[3]["geometry"] = translate(records[3]["geometry"], xoff=-0.5)  # into parcel 3
    parcels, _ = map_fields(delivery(records))
    overlaps = {
        (f.source_row, f.other_parcel_no)
        for f in validate(parcels).findings
        if f.rule_code == "TOPO_OVERLAP"
    }
    assert overlaps == {(0, 2), (2, 4)}
    # Parcel 2 changed, 1 did not: their overlap is reported. Parcels 3 and 4 are unchanged,
    # and their overlap was reported when they were loaded.
    result = validate(parcels, unchanged=np.array([True, False, True, True]))
    assert [(f.rule_code, f.source_row, f.other_parcel_no) for f in result.findings] == [
        ("TOPO_OVERLAP", 0, 2),
        ("TOPO_EDGE_MISMATCH", 1, None),
    ]


def test_topology_findings_are_waited_for():
    from shapely.affinity import translate

    records = [record(i) for i in range(3)]
    records[1]["geometry"] = translate(records[1]["geometry"], xoff=-0.5)
    parcels, _ = map_fields(delivery(records))
    result = validate(parcels)
    # The parcels to load are known at once; the topology may still be being searched.
    assert list(result.parcels["source_row"]) == [0, 1, 2]
    again = pickle.loads(pickle.dumps(result))  # pickling waits for it too
    for validation in (result, again):
        assert validation.counts() == {"TOPO_EDGE_MISMATCH": 2, "TOPO_OVERLAP": 1}
    assert result.findings is result.findings
