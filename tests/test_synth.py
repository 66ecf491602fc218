"""Tests of the synthetic delivery generator (no database)."""

from __future__ import annotations

import csv
import unicodedata
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from landpipe import synth

#: The reference data as the project ships it (verbatim copies of shared/reference/).
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
KEY = ["commune_code", "sheet_no", "parcel_no"]


@pytest.fixture(scope="module")
def sample() -> gpd.GeoDataFrame:
    """The demo sample: 2,000 parcels of 22924 with faults."""
    return synth.generate_parcels()


@pytest.fixture(scope="module")
def clean() -> gpd.GeoDataFrame:
    """2,000 parcels of 22924 without faults."""
    return synth.generate_parcels(faults=False)


@pytest.fixture(scope="module")
def known_land_use_codes() -> set[str]:
    with (SCHEMAS / "land_use_codes.csv").open(encoding="utf-8") as table:
        return {row["code"] for row in csv.DictReader(table)}


@pytest.fixture(scope="module")
def phan_thiet() -> shapely.Geometry:
    districts = gpd.read_file(SCHEMAS / "districts.geojson").to_crs(9218)
    return districts.loc[districts["code"] == "593"].geometry.iloc[0]


def assert_same_parcels(left: gpd.GeoDataFrame, right: gpd.GeoDataFrame) -> None:
    assert list(left.geometry.to_wkb()) == list(right.geometry.to_wkb())
    pd.testing.assert_frame_equal(
        pd.DataFrame(left.drop(columns="geometry")), pd.DataFrame(right.drop(columns="geometry"))
    )


def test_schema(sample: gpd.GeoDataFrame) -> None:
    assert list(sample.columns) == [*synth.VILIS_FIELDS, "geometry"]
    assert sample.crs.to_epsg() == 9218
    assert len(sample) == 2000
    assert str(sample["sheet_no"].dtype) == "Int64"
    assert str(sample["parcel_no"].dtype) == "Int64"
    assert all(isinstance(codes, list) for codes in sample["land_use_codes"])
    assert set(sample.geometry.dropna().geom_type) == {"Polygon"}


def test_same_seed_gives_same_parcels(sample: gpd.GeoDataFrame) -> None:
    assert_same_parcels(sample, synth.generate_parcels())


def test_other_seed_gives_other_parcels(sample: gpd.GeoDataFrame) -> None:
    other = synth.generate_parcels(seed=1)
    assert len(other) == len(sample)
    assert not np.array_equal(other.geometry.to_wkb(), sample.geometry.to_wkb())
    assert list(other["owner_name"]) != list(sample["owner_name"])


def test_keys_unique_without_faults(clean: gpd.GeoDataFrame) -> None:
    assert clean[KEY].notna().all().all()
    assert not clean.duplicated(KEY).any()
    assert (clean["commune_code"] == "22924").all()


def test_geometries_valid_without_faults(clean: gpd.GeoDataFrame) -> None:
    assert clean.geometry.notna().all()
    assert shapely.is_valid(clean.geometry.values).all()


def test_parcels_form_a_coverage(clean: gpd.GeoDataFrame) -> None:
    """Neighbours share their common boundary vertex for vertex."""
    assert shapely.coverage_is_valid(clean.geometry.values)


def test_no_overlaps(clean: gpd.GeoDataFrame) -> None:
    parcels = clean.geometry.values
    left, right = shapely.STRtree(parcels).query(parcels, predicate="intersects")
    pairs = left < right
    assert pairs.sum() > len(parcels)  # neighbours touch
    overlap = shapely.area(shapely.intersection(parcels[left[pairs]], parcels[right[pairs]]))
    assert overlap.max() <= 0.01


def test_sample_lies_well_inside_phan_thiet(
    sample: gpd.GeoDataFrame, phan_thiet: shapely.Geometry
) -> None:
    vertices = shapely.points(shapely.get_coordinates(sample.geometry.values))
    assert shapely.contains(phan_thiet, vertices).all()
    assert shapely.distance(phan_thiet.boundary, vertices).min() > 1000.0


def test_extent_is_a_ward(clean: gpd.GeoDataFrame) -> None:
    hull = shapely.convex_hull(shapely.union_all(clean.geometry.values))
    assert 0.8e6 < hull.area < 2.0e6
    area = clean.geometry.area
    assert 100 < area.median() < 600
    assert (area > 1000).any()


def test_communes_do_not_overlap() -> None:
    extents = [
        shapely.box(*synth.generate_parcels(code, n_parcels=3000, faults=False).total_bounds)
        for code in ("22924", "22927", "22921", "23278")
    ]
    assert not any(a.intersects(b) for i, a in enumerate(extents) for b in extents[i + 1 :])


def test_land_use_codes_are_known(clean: gpd.GeoDataFrame, known_land_use_codes: set[str]) -> None:
    used = {code for codes in clean["land_use_codes"] for code in codes}
    assert used <= known_land_use_codes
    assert {"ODT", "CLN", "TMD", "DGT"} <= used
    joined = clean["land_use_codes"].map("+".join)
    assert 0.1 < (joined == "ODT+CLN").mean() < 0.3
    assert 0.5 < (joined == "ODT").mean() < 0.75


def test_text_is_nfc_vietnamese(clean: gpd.GeoDataFrame) -> None:
    for column in ("owner_name", "address"):
        text = clean[column]
        assert (text == text.map(lambda value: unicodedata.normalize("NFC", value))).all()
    assert clean["owner_name"].str.contains(" và ").any()
    assert clean["owner_name"].str.startswith(("UBND", "Công ty", "Trường")).any()
    assert (
        clean["address"]
        .str.endswith("phường Phú Thủy, thành phố Phan Thiết, tỉnh Bình Thuận")
        .all()
    )


def test_areas(clean: gpd.GeoDataFrame) -> None:
    declared = clean["declared_area_m2"]
    assert np.allclose(declared, declared.round(1))
    off = (declared - clean.geometry.area.round(1)).abs() > 0.05
    assert 0.005 < off.mean() < 0.05
    assert (declared - clean.geometry.area).abs().max() < 6.0
    legal = clean["legal_area_m2"]
    assert 0.6 < legal.notna().mean() < 0.8
    assert (legal.dropna() <= declared[legal.notna()]).all()
    assert (legal == declared).mean() > 0.5


def test_sheets_and_parcel_numbers(clean: gpd.GeoDataFrame) -> None:
    sheets = clean["sheet_no"].astype(int)
    assert sorted(sheets.unique()) == [1, 2, 3, 4]  # one sheet per 500 parcels
    for _, parcel_no in clean.groupby(sheets)["parcel_no"]:
        assert sorted(parcel_no) == list(range(1, len(parcel_no) + 1))
    centroid = clean.geometry.centroid
    first, last = centroid[sheets == 1], centroid[sheets == sheets.max()]
    assert first.y.mean() > last.y.mean()  # sheet 1 is in the north
    assert centroid[(sheets == 1) & (clean["parcel_no"] <= 5)].y.mean() > first.y.mean()


def test_sheets_are_rectangles_around_centroids(clean: gpd.GeoDataFrame) -> None:
    frame = synth.generate_parcels(n_parcels=3000, n_sheets=5, faults=False)
    centroid = frame.geometry.centroid
    boxes = [
        shapely.box(*centroid[frame["sheet_no"] == sheet].total_bounds) for sheet in range(1, 6)
    ]
    assert not any(a.intersects(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_faults_are_present(sample: gpd.GeoDataFrame, known_land_use_codes: set[str]) -> None:
    rows: set[int] = set()
    for fault in synth.FAULTS:
        hits = sample.index[fault.mask(sample)]
        expected = 2 if fault.rule_code == "ATTR_KEY_DUPLICATE" else 1
        assert len(hits) == expected, fault
        rows.update(hits)
    assert len(rows) == len(synth.FAULTS)  # every fault touches a record of its own

    def only(rule_code: str) -> list[pd.Series]:
        return [
            sample.loc[sample.index[fault.mask(sample)][0]]
            for fault in synth.FAULTS
            if fault.rule_code == rule_code
        ]

    (bow_tie,) = only("GEOM_INVALID")
    assert not bow_tie.geometry.is_valid
    assert shapely.make_valid(bow_tie.geometry).geom_type != "Polygon"
    (empty,) = only("GEOM_EMPTY")
    assert empty.geometry is None
    no_parcel_no, no_sheet_no = only("ATTR_MISSING")
    assert pd.isna(no_parcel_no["parcel_no"]) and pd.notna(no_parcel_no["sheet_no"])
    assert pd.isna(no_sheet_no["sheet_no"]) and pd.notna(no_sheet_no["parcel_no"])
    (unknown_code,) = only("ATTR_LAND_USE_UNKNOWN")
    assert not set(unknown_code["land_use_codes"]) <= known_land_use_codes
    (unknown_commune,) = only("ATTR_COMMUNE_UNKNOWN")
    assert unknown_commune["commune_code"] == "99999"
    (spiked,) = only("GEOM_REPAIRED")
    repaired = shapely.make_valid(spiked.geometry, method="structure", keep_collapsed=False)
    assert not spiked.geometry.is_valid
    assert repaired.geom_type == "Polygon" and len(repaired.interiors) == 0
    assert repaired.area == pytest.approx(spiked.geometry.area, abs=0.01)
    assert spiked["declared_area_m2"] == round(repaired.area, 1)


def test_faults_are_the_only_blemishes(sample: gpd.GeoDataFrame) -> None:
    faulty = np.zeros(len(sample), bool)
    for fault in synth.FAULTS:
        faulty |= fault.mask(sample).to_numpy()
    healthy = sample[~faulty]
    assert shapely.is_valid(healthy.geometry.values).all()
    assert not healthy.duplicated(KEY).any()
    assert (healthy["commune_code"] == "22924").all()


def test_faults_need_room() -> None:
    with pytest.raises(ValueError, match="faults need"):
        synth.generate_parcels(n_parcels=20)
    with pytest.raises(ValueError, match="5 digits"):
        synth.generate_parcels("2292", faults=False)


def test_delivery_fields(sample: gpd.GeoDataFrame) -> None:
    delivery = synth.generate_delivery()
    assert list(delivery.columns) == [*synth.VILIS_FIELDS.values(), "geometry"]
    joined = sample["land_use_codes"].map("+".join)
    assert (delivery["KyHieuMucDichSuDung"] == joined).all()
    assert "ODT+CLN" in set(delivery["KyHieuMucDichSuDung"])
    assert delivery["DienTich"].equals(sample["declared_area_m2"])
    assert list(delivery.geometry.to_wkb()) == list(sample.geometry.to_wkb())


def test_shapefile_is_byte_identical(tmp_path: Path) -> None:
    delivery = synth.generate_delivery()
    first = synth.write_delivery(delivery, tmp_path / "a" / "delivery.shp")
    second = synth.write_delivery(delivery, tmp_path / "b" / "delivery.shp")
    assert first == tmp_path / "a" / "delivery.shp"
    for suffix in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
        assert first.with_suffix(suffix).read_bytes() == second.with_suffix(suffix).read_bytes()


def test_shapefile_round_trip(tmp_path: Path) -> None:
    delivery = synth.generate_delivery()
    path = synth.write_delivery(delivery, tmp_path / "delivery.shp")
    assert path.with_suffix(".cpg").read_text() == "UTF-8"
    info = pyogrio.read_info(path)
    assert info["crs"] == "EPSG:9218"
    assert list(info["fields"][:3]) == ["MaXa", "SoHieuToBa", "SoThuTuThu"]
    assert all(len(name) <= 10 for name in info["fields"])
    back = pyogrio.read_dataframe(path)
    assert len(back) == len(delivery)
    assert list(back["TenChu"]) == list(delivery["TenChu"])
    assert list(back["DiaChi"]) == list(delivery["DiaChi"])
    assert back["TenChu"].str.contains("Nguyễn").any()
    assert back["SoThuTuThu"].isna().sum() == 1
    assert back["DienTichPh"].isna().sum() == delivery["DienTichPhapLy"].isna().sum()


@pytest.mark.parametrize("suffix", [".shp", ".gpkg", ".geojson"])
def test_write_formats(tmp_path: Path, suffix: str) -> None:
    delivery = synth.generate_delivery(n_parcels=200)
    path = synth.write_delivery(delivery, tmp_path / f"delivery{suffix}")
    back = pyogrio.read_dataframe(path)
    assert len(back) == 200
    assert list(back.iloc[:, 0]) == list(delivery["MaXa"])
    assert back.crs.to_epsg() == 9218


def test_write_needs_a_known_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="driver"):
        synth.write_delivery(synth.generate_delivery(n_parcels=100), tmp_path / "delivery.txt")


def test_spiral_gives_each_code_its_own_tile() -> None:
    codes = [f"{code:05d}" for code in range(22900, 23300)]
    centres = {synth.commune_centre(code) for code in codes}
    assert len(centres) == len(codes)
    assert synth.commune_centre("22924") == synth.PHU_THUY_CENTRE


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_parcels=st.integers(1, 1500),
    commune_code=st.sampled_from(["22924", "22915", "23278"]),
)
def test_any_seed_gives_a_clean_coverage(seed: int, n_parcels: int, commune_code: str) -> None:
    parcels = synth.generate_parcels(commune_code, n_parcels=n_parcels, seed=seed, faults=False)
    assert len(parcels) == n_parcels
    assert shapely.is_valid(parcels.geometry.values).all()
    assert shapely.coverage_is_valid(parcels.geometry.values)
    assert not parcels.duplicated(KEY).any()


def test_placeable_communes_lie_in_their_own_district() -> None:
    districts = gpd.read_file(SCHEMAS / "districts.geojson").to_crs(synth.CRS)
    outline = dict(zip(districts["code"], districts.geometry, strict=True))
    with (SCHEMAS / "admin_units.csv").open(encoding="utf-8") as handle:
        parent = {row["code"]: row["parent_code"] for row in csv.DictReader(handle)}
    codes = synth.placeable_communes()
    assert len(codes) >= 90
    for code in codes[1::12]:  # a spread of them; 10,000 parcels is the size each has room for
        parcels = synth.generate_parcels(code, n_parcels=10_000, faults=False)
        vertices = shapely.points(shapely.get_coordinates(parcels.geometry.values))
        assert shapely.contains(outline[parent[code]], vertices).all(), code
