"""Tiny parcel deliveries built in code, inside Phường Phú Thủy (22924), EPSG:9218."""

from __future__ import annotations

from typing import Any

import geopandas as gpd
from shapely.geometry import Polygon, box

#: A point inside district 593 (Phan Thiết) in EPSG:9218.
X0, Y0 = 452_500.0, 1_208_500.0


def lot(i: int, size: float = 10.0) -> Polygon:
    """The i-th 10 m square lot of a row."""
    return box(X0 + i * size, Y0, X0 + (i + 1) * size, Y0 + size)


def record(i: int, **overrides: Any) -> dict[str, Any]:
    """One delivered record with ViLIS field names; lot i, parcel number i + 1 on sheet 5."""
    values = {
        "MaXa": "22924",
        "SoHieuToBanDo": 5,
        "SoThuTuThua": i + 1,
        "KyHieuMucDichSuDung": "ODT",
        "DienTich": 100.0,
        "TenChu": "Nguyễn Văn An",
        "DiaChi": "12 Trần Hưng Đạo, phường Phú Thủy",
        "geometry": lot(i),
    }
    values.update(overrides)
    return values


def delivery(records: list[dict[str, Any]], crs: int | None = 9218) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(records, geometry="geometry", crs=crs)


BOW_TIE = Polygon([(X0, Y0), (X0 + 10, Y0 + 10), (X0 + 10, Y0), (X0, Y0 + 10)])
#: A shell that touches itself at one vertex, enclosing an inverted hole (repairable).
SELF_TOUCHING = Polygon(
    [
        (X0, Y0),
        (X0 + 20, Y0),
        (X0 + 20, Y0 + 20),
        (X0 + 10, Y0 + 20),
        (X0 + 15, Y0 + 10),
        (X0 + 5, Y0 + 10),
        (X0 + 10, Y0 + 20),
        (X0, Y0 + 20),
        (X0, Y0),
    ]
)
