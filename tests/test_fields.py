"""Field mapping and value normalisation (sources/fields.py)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import box

from landpipe.errors import FieldError
from landpipe.sources import load_mapping
from landpipe.sources.fields import (
    attribute_json,
    attribute_records,
    map_fields,
    match_fields,
    normalise_name,
    series_to_area,
    series_to_int,
    series_to_land_use_codes,
    to_area,
    to_commune_code,
    to_int,
    to_land_use_codes,
)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (
            [
                "MaXa",
                "SoHieuToBanDo",
                "SoThuTuThua",
                "DienTich",
                "DienTichPhapLy",
                "KyHieuMucDichSuDung",
                "TenChu",
                "DiaChi",
            ],
            {
                "commune_code": "MaXa",
                "sheet_no": "SoHieuToBanDo",
                "parcel_no": "SoThuTuThua",
                "declared_area_m2": "DienTich",
                "legal_area_m2": "DienTichPhapLy",
                "land_use_codes": "KyHieuMucDichSuDung",
                "owner_name": "TenChu",
                "address": "DiaChi",
            },
        ),
        # The same export as a Shapefile: DBF names cut to 10 characters.
        (
            [
                "MaXa",
                "SoHieuToBa",
                "SoThuTuThu",
                "DienTich",
                "DienTichPh",
                "KyHieuMucD",
                "TenChu",
                "DiaChi",
            ],
            {
                "commune_code": "MaXa",
                "sheet_no": "SoHieuToBa",
                "parcel_no": "SoThuTuThu",
                "declared_area_m2": "DienTich",
                "legal_area_m2": "DienTichPh",
                "land_use_codes": "KyHieuMucD",
                "owner_name": "TenChu",
                "address": "DiaChi",
            },
        ),
        (
            ["SOHIEUTOBANDO", "SOTHUTUTHUA", "DIENTICH", "DIENTICHPHAPLY", "XAID"],
            {
                "sheet_no": "SOHIEUTOBANDO",
                "parcel_no": "SOTHUTUTHUA",
                "declared_area_m2": "DIENTICH",
                "legal_area_m2": "DIENTICHPHAPLY",
                "commune_code": "XAID",
            },
        ),
        (
            ["So_to", "So_thua", "Loai_dat", "Chu_SD", "Tong_dien_"],
            {
                "sheet_no": "So_to",
                "parcel_no": "So_thua",
                "land_use_codes": "Loai_dat",
                "owner_name": "Chu_SD",
                "declared_area_m2": "Tong_dien_",
            },
        ),
        (
            ["SHBANDO", "SHTHUA", "KHLOAIDAT", "DTICH", "OBJECTID"],
            {
                "sheet_no": "SHBANDO",
                "parcel_no": "SHTHUA",
                "land_use_codes": "KHLOAIDAT",
                "declared_area_m2": "DTICH",
            },
        ),
    ],
)
def test_known_exports_map(names, expected):
    assert match_fields(names) == expected


def test_name_matching_ignores_case_and_accents():
    assert normalise_name("Số_Tờ Bản Đồ") == "sotobando"
    assert match_fields(["Số_Thửa", "số_tờ"]) == {"parcel_no": "Số_Thửa", "sheet_no": "số_tờ"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("05", 5),
        (5.0, 5),
        (5, 5),
        ("5.0", 5),
        (" 12 ", 12),
        ("5,00", 5),
        (None, None),
        (float("nan"), None),
        ("", None),
        ("5a", None),
        (5.5, None),
        (0, None),  # sheets and parcels are numbered from 1
        ("00", None),
        (-3, None),
    ],
)
def test_key_numbers(value, expected):
    assert to_int(value) == expected


@given(st.integers(min_value=1, max_value=10**6), st.integers(min_value=0, max_value=3))
def test_key_numbers_any_spelling(number, zeros):
    assert to_int("0" * zeros + str(number)) == number
    assert to_int(float(number)) == number


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("123,5", 123.5),
        ("1.234,5", 1234.5),
        ("1,234.5", 1234.5),
        (87.25, 87.25),
        ("", None),
        ("abc", None),
        (None, None),
        (9_999_999_999_999.9, 9_999_999_999_999.9),  # the most numeric(14, 1) holds
        (1e13, None),  # beyond: no area, where the register would refuse the whole load
        ("1e17", None),
    ],
)
def test_areas(value, expected):
    assert to_area(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ONT+CLN", ["ONT", "CLN"]),
        ("ONT, CLN", ["ONT", "CLN"]),
        ("odt", ["ODT"]),
        ("ONT;CLN/TMD", ["ONT", "CLN", "TMD"]),
        (None, []),
        ("", []),
    ],
)
def test_land_use_codes(value, expected):
    assert to_land_use_codes(value) == expected


def test_commune_codes():
    assert to_commune_code(22924.0) == "22924"
    assert to_commune_code("22924") == "22924"
    assert to_commune_code("x") is None


def _frame(**columns):
    return gpd.GeoDataFrame({**columns, "geometry": [box(0, 0, 1, 1)]}, crs=9218)


def test_map_fields_fills_commune_from_option_and_keeps_extras():
    frame = _frame(SoTo=["3"], SoThua=[7], TenChu=["Nguyễn Văn A"], GhiChu=["x"])
    parcels, mapping = map_fields(frame, commune_code="22924")
    row = parcels.iloc[0]
    assert (row.commune_code, row.sheet_no, row.parcel_no) == ("22924", 3, 7)
    assert "commune_code" not in mapping
    assert set(mapping.values()) == {"SoTo", "SoThua", "TenChu"}  # GhiChu stays an extra field
    assert attribute_json(frame, ["GhiChu"], np.array([0])) == ['{"GhiChu":"x"}']
    assert attribute_records(frame.drop(columns="geometry"), [0]) == [
        {"SoTo": "3", "SoThua": 7, "TenChu": "Nguyễn Văn A", "GhiChu": "x"}
    ]


def test_sheet_option_fills_missing_sheet_numbers():
    frame = _frame(MaXa=["22924"], SoThua=[7])
    with pytest.raises(FieldError, match="--sheet"):
        map_fields(frame)
    parcels, _ = map_fields(frame, sheet_no=12)
    assert parcels.sheet_no.iloc[0] == 12


def test_mapping_option_wins_over_detection():
    frame = _frame(MaXa=["22924"], SoTo=["3"], SoThua=[7], ThuaMoi=[9])
    parcels, mapping = map_fields(frame, mapping={"parcel_no": "ThuaMoi"})
    assert mapping["parcel_no"] == "ThuaMoi" and parcels.parcel_no.iloc[0] == 9
    with pytest.raises(
        FieldError, match=r"names fields the layer lacks: \{'parcel_no': 'Nothing'\}"
    ):
        map_fields(frame, mapping={"parcel_no": "Nothing"})
    # A delivered field that is there, mapped onto a name that is no canonical field.
    with pytest.raises(FieldError, match="maps onto no canonical field: chu_su_dung;"):
        map_fields(frame, mapping={"chu_su_dung": "ThuaMoi"})
    # The field detected as parcel_no, mapped onto another: said so, not "no parcel_no field
    # (such as ... SoThua ...) among the delivered fields ... SoThua ...".
    with pytest.raises(FieldError) as refused:
        map_fields(frame, mapping={"owner_name": "SoThua"})
    assert str(refused.value) == (
        "no parcel_no field: the field mapping maps SoThua, which would be it, onto owner_name;"
        " map parcel_no too"
    )


def test_a_mapping_file_that_is_no_yaml_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("commune_code: [MaXa\n  bad: : :", encoding="utf-8")
    with pytest.raises(FieldError) as raised:
        load_mapping(bad)
    assert "\n" not in str(raised.value) and "cannot be read (while parsing" in str(raised.value)


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.integers(0, 10**6),
            st.floats(allow_nan=True),
            st.text(alphabet="0123456789.,+ ODTCLNabc", max_size=8),
        ),
        max_size=30,
    )
)
def test_vectorised_converters_agree_with_scalar_ones(values):
    series = pd.Series(values, dtype=object)
    assert series_to_int(series).astype(object).where(lambda s: s.notna(), None).tolist() == [
        to_int(v) for v in values
    ]
    areas = series_to_area(series).tolist()
    expected = [to_area(v) for v in values]
    assert [None if a != a else a for a in areas] == [
        None if e is None or e != e else e for e in expected
    ]
    assert series_to_land_use_codes(series) == [to_land_use_codes(v) for v in values]


def test_map_fields_without_commune_refuses_the_delivery():
    with pytest.raises(FieldError, match=r"commune_code.*--commune"):
        map_fields(_frame(SoTo=["3"], SoThua=[7]))


def test_map_fields_without_parcel_number_refuses_the_delivery():
    with pytest.raises(FieldError, match="parcel_no"):
        map_fields(_frame(MaXa=["22924"], SoTo=["3"]))
