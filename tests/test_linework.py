"""Parcels from boundary lines plus label texts (sources/linework.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import LineString, Point, box

from landpipe import schemas
from landpipe.errors import LayerError
from landpipe.sources.linework import (
    LineworkLayers,
    close_gaps,
    is_linework,
    parse_label,
    read_linework,
    read_linework_file,
)
from tests import linework_fixtures as fx

COMMUNE = "22924"
FORMATS = ("dxf", "dgn", "shp")


@pytest.fixture(scope="module")
def truth() -> gpd.GeoDataFrame:
    return fx.commune(300)


@pytest.fixture(scope="module")
def small_truth() -> gpd.GeoDataFrame:
    return fx.commune(80)


def write(drawing: fx.Drawing, kind: str, folder, **options) -> dict:
    """Write ``drawing`` in format ``kind``; the arguments that read it back."""
    if kind == "dxf":
        return {"path": fx.write_dxf(drawing, folder / "sheet.dxf", **options)}
    if kind == "dgn":
        return {"path": fx.write_dgn(drawing, folder / "sheet.dgn")}
    lines, labels = fx.write_line_shapefiles(drawing, folder / "shp")
    return {"path": lines, "labels_path": labels}


def read(arguments: dict, **options):
    return read_linework_file(**arguments, commune_code=COMMUNE, sheet_no=1, **options)


def assert_same_parcels(parcels: gpd.GeoDataFrame, truth: gpd.GeoDataFrame) -> None:
    """Same parcel numbers, codes and areas, and the same shapes to 1 cm and 0.01 m²."""
    assert parcels["parcel_no"].notna().all()
    got = parcels.set_index(parcels["parcel_no"].astype(int)).sort_index()
    want = truth.set_index(truth["parcel_no"].astype(int)).sort_index()
    assert got.index.tolist() == want.index.tolist()
    assert got["land_use_codes"].tolist() == ["+".join(c) for c in want["land_use_codes"]]
    np.testing.assert_allclose(got["declared_area_m2"], want["declared_area_m2"], atol=1e-9)
    geometry, expected = got.geometry.values.to_numpy(), want.geometry.values.to_numpy()
    np.testing.assert_array_less(np.abs(shapely.area(geometry) - shapely.area(expected)), 0.01)
    np.testing.assert_array_less(shapely.hausdorff_distance(geometry, expected), 0.01)
    assert (got["commune_code"] == COMMUNE).all() and (got["sheet_no"] == 1).all()


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("dxf", {}),
        ("dxf", {"layers": {"boundary": "10", "parcel_no": "11", "land_use": "2", "area": "4"}}),
        ("dgn", {}),
        ("shp", {}),
    ],
    ids=["dxf", "dxf-levels-as-layers", "dgn", "shp-pair"],
)
def test_drawing_reads_back_as_the_polygons_it_was_made_of(tmp_path, truth, kind, options):
    parcels, findings = read(write(fx.make_drawing(truth), kind, tmp_path, **options))

    assert findings == []
    assert_same_parcels(parcels, truth)
    assert list(parcels.columns) == [
        "commune_code",
        "sheet_no",
        "parcel_no",
        "land_use_codes",
        "declared_area_m2",
        "label_texts",
        "geometry",
    ]
    assert set(shapely.get_type_id(parcels.geometry.values)) == {3}
    if kind != "shp":  # the Shapefile labels carry values, not texts
        assert parcels["label_texts"].map(len).eq(3).all()
    north = shapely.get_coordinates(parcels.geometry.representative_point().values)[:, 1]
    assert (np.diff(north) <= 0).all()


def test_gdal_presents_texts_as_points_with_a_text_field(tmp_path, small_truth):
    drawing = fx.make_drawing(small_truth)
    dxf = pyogrio.read_dataframe(fx.write_dxf(drawing, tmp_path / "a.dxf"))
    dgn = pyogrio.read_dataframe(fx.write_dgn(drawing, tmp_path / "a.dgn"))

    texts = dxf[dxf.geometry.geom_type == "Point"]
    assert set(texts["Layer"]) == {"SOTHUA", "LOAIDAT", "DIENTICH"}
    assert set(texts["SubClasses"]) == {"AcDbEntity:AcDbMText"}
    assert sorted(texts["Text"]) == sorted(drawing.labels["text"])
    assert set(dgn["Level"]) == {10, 11, 2, 4}
    assert set(dgn.loc[dgn["Level"] != 10, "Type"]) == {17}  # text elements
    assert sorted(dgn["Text"].dropna()) == sorted(drawing.labels["text"])
    written = shapely.get_coordinates(drawing.labels.geometry.values)
    read_back = shapely.get_coordinates(dgn.geometry.values[dgn["Level"] != 10])
    np.testing.assert_allclose(read_back, written, atol=1e-4)  # 0.1 mm units of resolution


@pytest.mark.parametrize(("kind", "separator"), [("dxf", "\n"), ("dgn", "/")])
def test_combined_labels_give_every_attribute(tmp_path, small_truth, kind, separator):
    drawing = fx.make_drawing(small_truth, combined=separator)
    parcels, findings = read(write(drawing, kind, tmp_path))

    assert findings == []
    assert_same_parcels(parcels, small_truth)
    assert parcels["label_texts"].map(len).eq(1).all()


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("fault", list(fx.FAULTS))
def test_each_fault_gives_exactly_its_finding(tmp_path, small_truth, kind, fault):
    drawing = fx.make_drawing(small_truth, fault=fault)
    parcels, findings = read(write(drawing, kind, tmp_path))

    assert [f.rule_code for f in findings] == [fx.FAULTS[fault]]
    finding = findings[0]
    assert len(parcels) == len(small_truth)  # nothing lost, nothing added
    json.dumps(finding.detail)
    assert finding.message and "\n" not in finding.message
    assert (finding.commune_code, finding.sheet_no) == (COMMUNE, 1)
    if fault == "unlabelled":
        row = parcels.iloc[finding.source_row]
        assert pd.isna(row["parcel_no"]) and finding.parcel_no is None
        assert row["land_use_codes"] is not None  # its other labels still count
        assert shapely.hausdorff_distance(finding.location, drawing.fault_at) < 0.01
        assert finding.area_m2 == pytest.approx(drawing.fault_at.area, abs=0.01)
    elif fault == "label_outside":
        assert finding.source_row is None
        assert finding.location.distance(drawing.fault_at) < 1e-3
        assert finding.parcel_no == drawing.fault_value
    elif fault == "label_conflict":
        number = int(small_truth["parcel_no"].iloc[drawing.fault_row])
        assert parcels["parcel_no"].iloc[finding.source_row] == number
        assert (finding.parcel_no, finding.other_parcel_no) == (number, drawing.fault_value)
        assert finding.detail["kept"] == number
        assert finding.detail["dropped"] == [drawing.fault_value]
        assert finding.location.distance(drawing.fault_at) < 1e-3
        assert shapely.contains(parcels.geometry.iloc[finding.source_row], finding.location)
    else:
        assert finding.source_row is None
        assert shapely.hausdorff_distance(finding.location, drawing.fault_at) < 0.01
        free_end = shapely.get_point(drawing.fault_at, -1)
        assert Point(finding.detail["free_ends"][0]).distance(free_end) < 0.01
    if fault != "unlabelled":
        assert_same_parcels(parcels, small_truth)


# --------------------------------------------------------------------------- label texts


NO, AREA, USE = "parcel_no", "declared_area_m2", "land_use_codes"


@pytest.mark.parametrize(
    ("text", "hint", "expected"),
    [
        ("15", None, [(NO, 15)]),
        ("015", None, [(NO, 15)]),
        ("125,4", None, [(AREA, 125.4)]),
        ("125.4", None, [(AREA, 125.4)]),
        ("125,4 m2", None, [(AREA, 125.4)]),
        ("125,4m²", None, [(AREA, 125.4)]),
        ("125 m2", None, [(AREA, 125.0)]),
        ("S = 125,4", None, [(AREA, 125.4)]),
        ("1.234,5", None, [(AREA, 1234.5)]),
        ("odt+cln", None, [(USE, "ODT+CLN")]),
        ("ONT, CLN", None, [(USE, "ONT+CLN")]),
        ("15/ODT/125.4", None, [(NO, 15), (AREA, 125.4), (USE, "ODT")]),
        ("15\nODT+CLN\n125,4", None, [(NO, 15), (AREA, 125.4), (USE, "ODT+CLN")]),
        ("15 ODT 125,4 m2", None, [(NO, 15), (AREA, 125.4), (USE, "ODT")]),
        ("ODT/CLN", None, [(USE, "ODT+CLN")]),
        ("Thửa 7", None, []),
        ("ODX", None, []),
        ("ODX", "land_use", [(USE, "ODX")]),
        ("125", "area", [(AREA, 125.0)]),
        ("LUC", "note", []),
    ],
)
def test_label_text_is_read_by_its_form(text, hint, expected):
    assert parse_label(text, hint) == expected


@given(
    area=st.integers(min_value=1, max_value=9_999_999).map(lambda tenths: tenths / 10),
    comma=st.booleans(),
    unit=st.sampled_from(["", "m2", " m2", " m²"]),
)
def test_any_written_area_is_read_back(area, comma, unit):
    text = f"{area:.1f}".replace(".", "," if comma else ".") + unit
    assert parse_label(text) == [("declared_area_m2", area)]


@given(
    number=st.integers(min_value=1, max_value=99_999),
    codes=st.lists(st.sampled_from(sorted(schemas.land_use_codes())), min_size=1, max_size=3),
    separator=st.sampled_from(["+", ", ", " "]),
)
def test_any_combined_label_is_split_into_its_parts(number, codes, separator):
    unique = list(dict.fromkeys(codes))
    stated = parse_label(f"{number}/{separator.join(unique)}/{number},5")
    assert stated == [
        ("parcel_no", number),
        ("declared_area_m2", number + 0.5),
        ("land_use_codes", "+".join(unique)),
    ]


# --------------------------------------------------------------------------- geometry


def drawing_frame(lines, texts, *, boundary="10", driver_field="Layer") -> gpd.GeoDataFrame:
    """A frame as pyogrio reads a drawing: lines on ``boundary``, (layer, text, point) texts."""
    return gpd.GeoDataFrame(
        {
            driver_field: [boundary] * len(lines) + [layer for layer, _, _ in texts],
            "Text": [None] * len(lines) + [text for _, text, _ in texts],
        },
        geometry=list(lines) + [point for _, _, point in texts],
    )


def test_a_parcel_around_another_gets_a_hole():
    outer, inner = box(0, 0, 10, 10), box(3, 3, 6, 6)
    frame = drawing_frame(
        [outer.exterior, inner.exterior],
        [("11", "1", Point(1, 1)), ("11", "2", Point(4, 4)), ("4", "91,0", Point(1, 2))],
    )
    parcels, findings = read_linework(frame, driver="DXF")

    assert findings == []
    by_number = parcels.set_index(parcels["parcel_no"].astype(int))
    assert by_number.geometry[1].equals(outer.difference(inner))
    assert by_number.geometry[2].equals(inner)
    assert by_number.loc[1, "declared_area_m2"] == 91.0


def test_small_gaps_close_and_short_overshoots_are_dropped():
    # two 10 m squares side by side: the middle line stops 4 mm short of the top (undershoot)
    # and runs 5 mm past the bottom (overshoot); the outline's last corner is open by 3 mm
    outline = LineString([(0, 0), (20, 0), (20, 10), (0, 10), (0, 0.003)])
    middle = LineString([(10, -0.005), (10, 9.996)])
    texts = [("11", "1", Point(5, 5)), ("11", "2", Point(15, 5))]
    frame = drawing_frame([outline, middle], texts)
    parcels, findings = read_linework(frame, driver="DXF", snap_tolerance=0.01)

    assert findings == []
    np.testing.assert_allclose(shapely.area(parcels.geometry.values), [100, 100], atol=0.05)
    with pytest.raises(LayerError, match="close no polygon"):
        read_linework(frame, driver="DXF", snap_tolerance=0.001)  # the 3 mm gap stays open
    closed = drawing_frame([shapely.box(0, 0, 20, 10).exterior, middle], texts)
    parcels, findings = read_linework(closed, driver="DXF", snap_tolerance=0.001)
    assert len(parcels) == 1  # the middle line dangles 4 mm short of the top, 5 mm past the bottom
    loose = [f.detail["free_ends"] for f in findings if f.rule_code == "LINE_DANGLING"]
    assert loose == [[[10.0, 9.996]], [[10.0, -0.005]]]


def test_lines_without_gaps_are_left_exactly_as_drawn(small_truth):
    lines = fx.boundary_lines(small_truth.geometry.values.to_numpy())
    assert shapely.equals_exact(close_gaps(lines, 0.01), lines, tolerance=0).all()


def test_level_hints_read_whole_areas_and_skip_legal_land_types():
    square = box(0, 0, 10, 10)
    texts = [
        (11, "7", Point(5, 5)),
        (2, "odt", Point(5, 6)),
        (4, "100", Point(5, 4)),
        (29, "LUC", Point(5, 3)),  # legal land type: kept as text, never a second code
    ]
    frame = drawing_frame([square.exterior], texts, boundary=10, driver_field="Level")
    parcels, findings = read_linework(frame, driver="DGN")

    assert findings == []
    row = parcels.iloc[0]
    assert (row["parcel_no"], row["land_use_codes"], row["declared_area_m2"]) == (7, "ODT", 100)
    assert row["label_texts"] == ["7", "odt", "100", "LUC"]
    assert pd.isna(row["sheet_no"]) and row["commune_code"] is None


def test_disagreeing_areas_and_codes_are_conflicts_and_the_first_is_kept():
    frame = drawing_frame(
        [box(0, 0, 10, 10).exterior],
        [
            ("11", "7", Point(5, 5)),
            ("4", "100,0", Point(5, 4)),
            ("4", "100.0 m2", Point(6, 4)),  # the same area, written otherwise: no conflict
            ("4", "99,5", Point(4, 4)),
            ("2", "ODT+CLN", Point(5, 6)),
            ("2", "CLN, ODT", Point(6, 6)),  # the same codes in another order: no conflict
        ],
    )
    parcels, findings = read_linework(frame, driver="DXF")

    assert [(f.rule_code, f.detail["field"]) for f in findings] == [
        ("LINE_LABEL_CONFLICT", "declared_area_m2")
    ]
    assert findings[0].detail["kept"] == 100.0 and findings[0].detail["dropped"] == [99.5]
    assert parcels["declared_area_m2"].iloc[0] == 100.0
    assert parcels["land_use_codes"].iloc[0] == "ODT+CLN"


def test_boundaries_on_unexpected_layers_are_named_in_the_error():
    frame = drawing_frame([box(0, 0, 10, 10).exterior], [("11", "1", Point(5, 5))], boundary="0")
    with pytest.raises(LayerError, match=r"layers 0, 11"):
        read_linework(frame, driver="DXF")
    layers = LineworkLayers(boundary=frozenset({"0"}), label=frozenset({"11"}))
    parcels, findings = read_linework(frame, driver="DXF", layers=layers)
    assert parcels["parcel_no"].tolist() == [1] and findings == []


def test_linework_is_told_from_polygon_layers(tmp_path, small_truth):
    lines, labels = fx.write_line_shapefiles(small_truth, tmp_path)
    polygons = tmp_path / "parcels.shp"
    pyogrio.write_dataframe(small_truth[["parcel_no", "geometry"]], polygons)
    both = tmp_path / "both.gpkg"
    pyogrio.write_dataframe(small_truth[["parcel_no", "geometry"]], both, layer="thua")
    line_frame = gpd.GeoDataFrame(geometry=small_truth.boundary.values, crs=small_truth.crs)
    pyogrio.write_dataframe(line_frame, both, layer="ranh", append=True)

    assert is_linework(tmp_path / "x.dgn") and is_linework(tmp_path / "x.DXF")
    assert is_linework(lines)
    assert not is_linework(labels) and not is_linework(polygons)
    assert not is_linework(both) and is_linework(both, layer="ranh")


def test_closed_shapes_and_a_text_point_layer(tmp_path):
    # a line layer may hold closed shapes (DGN shapes, DXF closed polylines read as polygons)
    # and its labels may come as a point layer with a text field, in another CRS
    west, east = (
        box(455_000, 1_209_000, 455_010, 1_209_010),
        box(455_010, 1_209_000, 455_020, 1_209_010),
    )
    lines = gpd.GeoDataFrame({"id": [1]}, geometry=[shapely.MultiPolygon([west, east])], crs=9218)
    labels = gpd.GeoDataFrame(
        {"NoiDung": ["1/ODT/100,0", "2\nCLN\n100,0"]},
        geometry=[west.centroid, east.centroid],
        crs=9218,
    ).to_crs(4326)
    parcels, findings = read_linework(lines, labels=labels, driver="GPKG", sheet_no=3)

    assert findings == []
    assert parcels["parcel_no"].tolist() == [1, 2]
    assert parcels["land_use_codes"].tolist() == ["ODT", "CLN"]
    assert parcels["label_texts"].tolist() == [["1/ODT/100,0"], ["2\nCLN\n100,0"]]
    assert parcels.crs.to_epsg() == 9218 and (parcels["sheet_no"] == 3).all()


def test_sloppy_ends_within_the_tolerance_still_close_every_parcel(small_truth):
    drawing = fx.make_drawing(small_truth)
    coords, line = shapely.get_coordinates(drawing.lines, return_index=True)
    count = shapely.get_num_coordinates(drawing.lines)
    ends = np.concatenate([np.cumsum(count) - count, np.cumsum(count) - 1])
    rng = np.random.default_rng(7)
    angle, shift = rng.uniform(0, 2 * np.pi, len(ends)), rng.uniform(0, 0.004, len(ends))
    coords[ends] += np.column_stack([np.cos(angle), np.sin(angle)]) * shift[:, None]
    sloppy = replace(drawing, lines=shapely.linestrings(coords, indices=line))
    frame = drawing_frame(
        sloppy.lines,
        [
            (fx.DXF_LAYERS[r], t, p)
            for r, t, p in sloppy.labels[["role", "text", "geometry"]].values
        ],
        boundary="RANHTHUA",
    )
    parcels, findings = read_linework(frame, driver="DXF")

    assert findings == []
    assert sorted(parcels["parcel_no"]) == sorted(small_truth["parcel_no"])
    got = parcels.sort_values("parcel_no").geometry.values
    want = small_truth.sort_values("parcel_no").geometry.values
    assert shapely.hausdorff_distance(got, want).max() < 0.005
