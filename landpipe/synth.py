"""Seeded generator of synthetic cadastral deliveries.

Makes the sample delivery for the demo, fixtures for tests and benchmark sets of up to a
million parcels. Everything is vectorised with NumPy and Shapely; the same arguments always
give the same parcels.

Layout
------
A commune is a rotated street grid of jittered blocks. Each block holds two rows of lots back
to back: the north row fronts the street above the block, the south row the street below.
Lot dividers are jittered, so lots are trapezoids, and the line between the two rows is noded
with the dividers of *both* rows, so neighbouring parcels share every vertex of their common
boundary (a proper coverage). A few lots are merged into larger parcels, a few blocks are a
single parcel (school, market, office), and narrow alleys (*hẻm*) inside the rows are road
parcels with code ``DGT``. Streets between blocks are left as gaps, not as road parcels.
The commune is the ``n_parcels`` lots nearest to its centre, measured with a lumpy radius so
that its outline is irregular.

Commune ``22924`` (Phường Phú Thủy, Phan Thiết) is placed at its real location: a sample of a
few thousand parcels lies well inside the Phan Thiết district boundary. The communes of
:func:`placeable_communes` get a 4 km cell inside their own district (not their true place,
but in the right district), so multi-commune sets of up to about 10,000 parcels per commune
stay inside the province. Any other code is given its own 10 km tile in a square spiral around
22924, which may leave the district or the province.
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from numpy.dtypes import StringDType

#: Canonical column name -> field name in a ViLIS/VBDLIS export (shared/DOMAIN.md).
VILIS_FIELDS: dict[str, str] = {
    "commune_code": "MaXa",
    "sheet_no": "SoHieuToBanDo",
    "parcel_no": "SoThuTuThua",
    "land_use_codes": "KyHieuMucDichSuDung",
    "declared_area_m2": "DienTich",
    "legal_area_m2": "DienTichPhapLy",
    "owner_name": "TenChu",
    "address": "DiaChi",
}

CRS = "EPSG:9218"  # VN-2000 / TM-3 108-30, the Bình Thuận cadastral plane
DEFAULT_COMMUNE_CODE = "22924"
DEFAULT_SEED = 20261127

#: Centre of commune 22924 (easting, northing in EPSG:9218), about 108.0946 E, 10.9368 N in
#: central Phan Thiết, 1.8 km inside the district boundary at its nearest point.
PHU_THUY_CENTRE = (455_500.0, 1_209_500.0)
TILE_SPACING_M = 10_000.0

#: Commune code given to the ATTR_COMMUNE_UNKNOWN fault; it is in no administrative list.
UNKNOWN_COMMUNE_CODE = "99999"
UNKNOWN_LAND_USE_CODE = "ODX"

#: Date written into the DBF header, so that a Shapefile is the same byte for byte every time.
DBF_DATE = "2000-01-01"

_SUFFIX_DRIVERS = {".shp": "ESRI Shapefile", ".gpkg": "GPKG", ".geojson": "GeoJSON"}

# Communes of Phan Thiết (district 593), GSO list as of 2025-03-01: used only for the address
# text and organisation names; any other code is written as a bare code.
_COMMUNE_NAMES = {
    "22915": "phường Mũi Né",
    "22918": "phường Hàm Tiến",
    "22921": "phường Phú Hài",
    "22924": "phường Phú Thủy",
    "22927": "phường Phú Tài",
    "22930": "phường Phú Trinh",
    "22933": "phường Xuân An",
    "22936": "phường Thanh Hải",
    "22945": "phường Lạc Đạo",
    "22951": "phường Bình Hưng",
    "22954": "phường Đức Long",
    "22957": "xã Thiện Nghiệp",
    "22960": "xã Phong Nẫm",
    "22963": "xã Tiến Lợi",
    "22966": "xã Tiến Thành",
}


def _nfc(words: str) -> tuple[str, ...]:
    return tuple(unicodedata.normalize("NFC", word) for word in words.split(","))


# Family names with rough frequencies for southern Việt Nam (Huỳnh and Võ before Hoàng, Vũ).
_FAMILY = _nfc(
    "Nguyễn,Trần,Lê,Phạm,Huỳnh,Võ,Phan,Hoàng,Đặng,Bùi,Đỗ,Hồ,Ngô,Dương,Lý,Trương,Đinh,Lâm,Mai,Châu"
)
_FAMILY_WEIGHTS = (38, 11, 9.5, 7, 5, 4, 4.5, 2, 2, 2, 1.4, 1.3, 1.3, 1, 0.6, 1, 0.8, 0.6, 0.6, 0.4)
_MIDDLE = (
    _nfc("Văn,Hữu,Minh,Đức,Quang,Công,Thanh,Anh,Xuân,Ngọc"),
    _nfc("Thị,Ngọc,Thanh,Kim,Mỹ,Thu,Bích,Hồng,Minh,Phương"),
)
_MIDDLE_WEIGHTS = (40, 10, 10, 8, 8, 6, 6, 5, 4, 3)
_GIVEN = (
    _nfc(
        "An,Bình,Cường,Dũng,Đức,Hải,Hùng,Huy,Khánh,Long,Minh,Nam,Phong,Phúc,Quân,Sơn,Tài,"
        "Thắng,Thành,Toàn,Trung,Tuấn,Việt,Vinh,Hiếu,Lộc,Tâm,Tín,Nhân,Trí"
    ),
    _nfc(
        "Anh,Bích,Châu,Dung,Duyên,Giang,Hà,Hạnh,Hằng,Hoa,Hồng,Hương,Lan,Liên,Linh,Loan,Mai,"
        "Nga,Ngân,Nhung,Oanh,Phượng,Quyên,Thảo,Thủy,Trang,Tuyết,Vân,Xuân,Yến"
    ),
)
_STREETS = _nfc(
    "Trần Hưng Đạo,Tôn Đức Thắng,Thủ Khoa Huân,Nguyễn Tất Thành,Lê Hồng Phong,Trường Chinh,"
    "Nguyễn Hội,Hải Thượng Lãn Ông,Lê Lợi,Võ Văn Kiệt,Hùng Vương,Tuyên Quang,Ngư Ông,"
    "Phạm Văn Đồng,Nguyễn Thông,Ngô Sĩ Liên,Lý Thường Kiệt,Kim Đồng,Đinh Tiên Hoàng,Cao Thắng,"
    "Lương Ngọc Quyến,Hai Bà Trưng,Từ Văn Tư,Lê Duẩn,Nguyễn Huệ,Phan Bội Châu,Trưng Trắc,"
    "Nguyễn Đình Chiểu,Võ Thị Sáu,Hoàng Văn Thụ,Lê Thánh Tôn,Bà Triệu,Nguyễn Trãi,"
    "Phan Chu Trinh,Trần Phú,Nguyễn Thái Học,Huỳnh Thúc Kháng,Nguyễn Văn Cừ,Đống Đa,Yersin"
)
_COMPANIES = _nfc(
    "Công ty TNHH Thương mại Dịch vụ Hải Nam,Công ty TNHH Thủy sản Phú Thủy,"
    "Công ty Cổ phần Nước mắm Phan Thiết,Công ty TNHH Xây dựng Hưng Phát,"
    "Công ty Cổ phần Du lịch Biển Xanh,Công ty TNHH Vận tải Bình Minh,"
    "Doanh nghiệp tư nhân Thanh Long,Công ty TNHH Điện máy Minh Phát"
)
_TEMPLES = _nfc("Chùa Phật Quang,Chùa Long Quang,Chùa Bửu Sơn,Tịnh xá Ngọc Quang,Nhà thờ Giáo xứ")
_SHRINES = _nfc("Miếu Bà Thiên Hậu,Vạn Thủy Tú,Lăng Ông Nam Hải,Đình làng")

# Land-use classes: code lists, and how often each occurs on a plain lot, a merged lot and
# a whole block. Only codes of shared/reference/land_use_codes.csv are used.
_LAND_USE = (
    (("ODT",), 64.0, 25.0, 0.0),
    (("ODT", "CLN"), 18.0, 20.0, 0.0),
    (("CLN",), 5.0, 4.0, 0.0),
    (("TMD",), 4.0, 20.0, 15.0),
    (("ODT", "TMD"), 3.0, 4.0, 0.0),
    (("HNK",), 2.0, 2.0, 0.0),
    (("SKC",), 1.5, 8.0, 0.0),
    (("NTS",), 1.0, 3.0, 0.0),
    (("TIN",), 0.8, 7.0, 0.0),
    (("TON",), 0.7, 5.0, 10.0),
    (("DGD",), 0.0, 2.0, 30.0),
    (("DYT",), 0.0, 2.0, 10.0),
    (("DKV",), 0.0, 0.0, 10.0),
    (("TSC",), 0.0, 0.0, 10.0),
    (("DCH",), 0.0, 0.0, 5.0),
    (("DTT",), 0.0, 0.0, 5.0),
    (("DVH",), 0.0, 0.0, 5.0),
    (("DGT",), 0.0, 0.0, 0.0),
)
_ROAD_CLASS = len(_LAND_USE) - 1
_PLAIN, _MERGED, _ALLEY, _BLOCK = 0, 1, 2, 3

# Lot and block dimensions in metres.
_BLOCK_WIDTH = (70.0, 150.0)
_ROW_DEPTH = (24.0, 40.0)
_LOT_FRONTAGE_MEAN = (10.0, 14.0)
_MIN_FRONTAGE = 4.0
_ALLEY_WIDTH = (3.0, 4.5)
_STREET_WIDTHS = (6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 25.0)
_STREET_WEIGHTS = (0.15, 0.25, 0.2, 0.15, 0.12, 0.08, 0.05)
_M2_PER_PARCEL = 520.0  # lot area plus its share of streets, for sizing the grid
_NUMBERING_BAND_M = 40.0  # height of one zig-zag band when numbering parcels on a sheet


@dataclass(frozen=True)
class InjectedFault:
    """One fault that ``faults=True`` puts into a generated commune.

    ``sheet_no`` and ``parcel_no`` are the key as the faulty record carries it (``None`` where
    the fault removed it); ``commune_code`` is ``None`` when the record keeps the generated
    commune's code. ``source`` is the key the record had before the fault was injected.
    """

    rule_code: str
    sheet_no: int | None
    parcel_no: int | None
    source: tuple[int, int]
    description: str
    commune_code: str | None = None

    def mask(self, parcels: pd.DataFrame) -> pd.Series:
        """Rows of a canonical parcel frame that carry this fault's key (missing = missing)."""
        hits = pd.Series(True, index=parcels.index)
        for column, value in (("sheet_no", self.sheet_no), ("parcel_no", self.parcel_no)):
            cell = parcels[column]
            hits &= cell.isna() if value is None else cell.eq(value).fillna(False)
        if self.commune_code is not None:
            hits &= parcels["commune_code"].eq(self.commune_code)
        return hits.astype(bool)


# Source keys (sheet_no, parcel_no) of the faults. Sheets 1 and 2 always exist, so every
# fault is present for every seed as long as each sheet holds at least _FAULT_MIN_PER_SHEET.
_BOWTIE = (1, 3)
_NO_GEOMETRY = (1, 6)
_NO_PARCEL_NO = (1, 9)
_UNKNOWN_COMMUNE = (1, 12)
_NO_SHEET_NO = (2, 4)
_DUPLICATE_OF, _DUPLICATE = (2, 7), (2, 8)
_UNKNOWN_LAND_USE = (2, 11)
_SELF_TOUCHING = (2, 14)
_LEGACY_LAND_USE = (1, 15)
_AREA_MISMATCH = (2, 5)
_FAULT_MIN_PER_SHEET = 15
#: The old-list code the legacy-land-use fault carries, and how far the area fault is off.
LEGACY_LAND_USE_CODE = "BHK"
AREA_MISMATCH_FACTOR = 1.08

#: The faults injected by ``faults=True``, the same for every seed and commune.
FAULTS: tuple[InjectedFault, ...] = (
    InjectedFault("GEOM_INVALID", *_BOWTIE, _BOWTIE, "bow-tie (self-intersecting) shell"),
    InjectedFault("GEOM_EMPTY", *_NO_GEOMETRY, _NO_GEOMETRY, "no geometry (None)"),
    InjectedFault("ATTR_MISSING", 1, None, _NO_PARCEL_NO, "parcel number missing"),
    InjectedFault("ATTR_MISSING", None, 4, _NO_SHEET_NO, "sheet number missing"),
    InjectedFault("ATTR_KEY_DUPLICATE", *_DUPLICATE_OF, _DUPLICATE_OF, "first copy of 2/7"),
    InjectedFault("ATTR_KEY_DUPLICATE", *_DUPLICATE_OF, _DUPLICATE, "parcel 2/8 renumbered 7"),
    InjectedFault(
        "ATTR_LAND_USE_UNKNOWN", *_UNKNOWN_LAND_USE, _UNKNOWN_LAND_USE, "land-use code ODX"
    ),
    InjectedFault(
        "ATTR_COMMUNE_UNKNOWN",
        *_UNKNOWN_COMMUNE,
        _UNKNOWN_COMMUNE,
        "commune code 99999",
        commune_code=UNKNOWN_COMMUNE_CODE,
    ),
    InjectedFault(
        "GEOM_REPAIRED",
        *_SELF_TOUCHING,
        _SELF_TOUCHING,
        "zero-area spike from a corner: the shell touches itself",
    ),
    InjectedFault("ATTR_LAND_USE_LEGACY", *_LEGACY_LAND_USE, _LEGACY_LAND_USE, "old-list code BHK"),
    InjectedFault(
        "ATTR_AREA_MISMATCH", *_AREA_MISMATCH, _AREA_MISMATCH, "declared area 8 % too large"
    ),
)


# --------------------------------------------------------------------------- placement


def _spiral_cell(index: int) -> tuple[int, int]:
    """Cell (column, row) of the ``index``-th cell of a square spiral around (0, 0)."""
    if index == 0:
        return 0, 0
    ring = (math.isqrt(index) + 1) // 2
    side, step = divmod(index - (2 * ring - 1) ** 2, 2 * ring)
    if side == 0:
        return ring, -ring + 1 + step
    if side == 1:
        return ring - 1 - step, ring
    if side == 2:
        return -ring, ring - 1 - step
    return -ring + 1 + step, -ring


#: Spacing of the cells communes are placed on inside their district, and the margin a cell
#: keeps from the district boundary: room for a commune of about 10,000 parcels.
CELL_SPACING_M = 4_000.0
CELL_MARGIN_M = 2_000.0


@functools.cache
def _district_cells() -> dict[str, np.ndarray]:
    """District code -> centres (easting, northing) of the cells inside it, north-west first."""
    from landpipe import schemas

    districts = gpd.GeoDataFrame.from_features(
        schemas.district_boundaries()["features"], crs=4326
    ).to_crs(CRS)
    cells: dict[str, np.ndarray] = {}
    for code, outline in zip(districts["code"], districts.geometry, strict=True):
        x0, y0, x1, y1 = outline.bounds
        x, y = np.meshgrid(np.arange(x0, x1, CELL_SPACING_M), np.arange(y1, y0, -CELL_SPACING_M))
        x, y = x.ravel(), y.ravel()
        inside = shapely.contains_xy(outline.buffer(-CELL_MARGIN_M), x, y)
        # Keep clear of Phú Thủy, which sits at its real place.
        inside &= np.hypot(x - PHU_THUY_CENTRE[0], y - PHU_THUY_CENTRE[1]) > CELL_SPACING_M
        cells[str(code)] = np.column_stack([x[inside], y[inside]])
    return cells


def _district_communes() -> dict[str, list[str]]:
    from landpipe import schemas

    communes: dict[str, list[str]] = {}
    for unit in schemas.admin_units().values():
        if unit["level"] == "commune" and unit["code"] != DEFAULT_COMMUNE_CODE:
            communes.setdefault(unit["parent_code"], []).append(unit["code"])
    return {district: sorted(codes) for district, codes in communes.items()}


def placeable_communes() -> list[str]:
    """Commune codes of Bình Thuận that :func:`commune_centre` places inside their district.

    22924 and the communes of every district with a cell for each of its communes; use these
    for multi-commune test and benchmark sets that must stay inside the province.
    """
    cells = _district_cells()
    codes = [DEFAULT_COMMUNE_CODE]
    for district, communes in _district_communes().items():
        if len(cells.get(district, ())) >= len(communes):
            codes.extend(communes)
    return sorted(codes)


def commune_centre(commune_code: str) -> tuple[float, float]:
    """Centre (easting, northing, EPSG:9218) at which a commune is generated.

    22924 sits at its real place in Phan Thiết. A commune of a district with room for all its
    communes (see :func:`placeable_communes`) gets its own cell inside that district, the
    district's cells shared out evenly in code order. Any other code gets its own 10 km tile of
    a square spiral around 22924 (22925, 22923, 22926, ...), which may lie outside the province.
    """
    if commune_code == DEFAULT_COMMUNE_CODE:
        return PHU_THUY_CENTRE
    for district, communes in _district_communes().items():
        cells = _district_cells().get(district, np.empty((0, 2)))
        if commune_code in communes and len(cells) >= len(communes):
            index = communes.index(commune_code) * len(cells) // len(communes)
            return float(cells[index, 0]), float(cells[index, 1])
    offset = int(commune_code) - int(DEFAULT_COMMUNE_CODE)
    column, row = _spiral_cell(2 * offset - 1 if offset > 0 else -2 * offset)
    return (
        PHU_THUY_CENTRE[0] + column * TILE_SPACING_M,
        PHU_THUY_CENTRE[1] + row * TILE_SPACING_M,
    )


# --------------------------------------------------------------------------- street grid


@dataclass(frozen=True)
class _Blocks:
    corners: np.ndarray  # (n, 4, 2) world coordinates SW, SE, NE, NW
    width: np.ndarray  # nominal block length along its streets (m)
    column: np.ndarray
    row: np.ndarray
    west: np.ndarray  # nominal distance of the block's west end from the grid's west edge
    inscribed_radius: float  # radius around the centre that the grid surely covers


def _street_widths(rng: np.random.Generator, n_lines: int) -> np.ndarray:
    return rng.choice(_STREET_WIDTHS, size=n_lines, p=_STREET_WEIGHTS)


def _grid_lines(sizes: np.ndarray, streets: np.ndarray) -> np.ndarray:
    """Positions of the street centre lines around blocks of the given sizes."""
    gaps = sizes + (streets[:-1] + streets[1:]) / 2
    return np.concatenate([[0.0], np.cumsum(gaps)])


def _street_grid(
    rng: np.random.Generator, half_side: float, centre: tuple[float, float]
) -> _Blocks:
    """A jittered street grid of about ``2 * half_side`` metres square, rotated and moved."""
    street = float(np.dot(_STREET_WIDTHS, _STREET_WEIGHTS))
    n_cols = math.ceil(2 * half_side / (sum(_BLOCK_WIDTH) / 2 + street)) + 2
    n_rows = math.ceil(2 * half_side / (sum(_ROW_DEPTH) + street)) + 2
    width = rng.uniform(*_BLOCK_WIDTH, n_cols)
    depth = 2 * rng.uniform(*_ROW_DEPTH, n_rows)
    street_x, street_y = _street_widths(rng, n_cols + 1), _street_widths(rng, n_rows + 1)
    line_x, line_y = _grid_lines(width, street_x), _grid_lines(depth, street_y)
    jitter = np.clip(rng.normal(0.0, 1.5, (n_cols + 1, n_rows + 1, 2)), -4.0, 4.0)
    node = np.stack(np.meshgrid(line_x, line_y, indexing="ij"), axis=-1) + jitter

    column, row = (a.ravel() for a in np.meshgrid(np.arange(n_cols), np.arange(n_rows)))
    half_x, half_y = street_x / 2, street_y / 2
    corners = np.stack(
        [
            node[column, row] + np.c_[half_x[column], half_y[row]],
            node[column + 1, row] + np.c_[-half_x[column + 1], half_y[row]],
            node[column + 1, row + 1] + np.c_[-half_x[column + 1], -half_y[row + 1]],
            node[column, row + 1] + np.c_[half_x[column], -half_y[row + 1]],
        ],
        axis=1,
    )
    angle = rng.uniform(-0.4, 0.4)  # Phan Thiết's streets do not run north-south
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    middle = np.array([line_x[-1] / 2, line_y[-1] / 2])
    corners = (corners - middle) @ rotation + np.asarray(centre)
    return _Blocks(
        corners=corners,
        width=width[column],
        column=column,
        row=row,
        west=line_x[column] + half_x[column] - line_x[0],
        inscribed_radius=min(line_x[-1], line_y[-1]) / 2 - 10.0,
    )


def _bilinear(corners: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Map unit-square coordinates (s east, t north) into each block's quadrilateral."""
    s, t = s[:, None], t[:, None]
    return (
        (1 - s) * (1 - t) * corners[:, 0]
        + s * (1 - t) * corners[:, 1]
        + s * t * corners[:, 2]
        + (1 - s) * t * corners[:, 3]
    )


# --------------------------------------------------------------------------- lots


@dataclass(frozen=True)
class _Layout:
    """Candidate parcels of a grid: rings as ragged indices into one coordinate table."""

    xy: np.ndarray  # coordinate table (m, 2)
    ring_start: np.ndarray  # per parcel: first position in ``ring_index``
    ring_length: np.ndarray
    ring_index: np.ndarray  # concatenated rings, indices into ``xy`` (not closed)
    centre: np.ndarray  # approximate parcel centres (n, 2)
    kind: np.ndarray  # _PLAIN, _MERGED, _ALLEY or _BLOCK
    block: np.ndarray
    north_side: np.ndarray  # True if the parcel fronts the street north of its block
    front_u: np.ndarray  # middle of the street frontage, metres from the block's west end


def _row_lots(rng: np.random.Generator, row_width: np.ndarray) -> dict[str, np.ndarray]:
    """Lots of every row: frontages that fill each row exactly, some of them alleys."""
    n_rows = len(row_width)
    count = np.maximum(1, np.rint(row_width / rng.uniform(*_LOT_FRONTAGE_MEAN, n_rows)))
    count = count.astype(np.int64)
    lot_row = np.repeat(np.arange(n_rows), count)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    position = np.arange(len(lot_row)) - first[lot_row]
    alley = (rng.random(len(lot_row)) < 0.012) & (position > 0) & (position < count[lot_row] - 1)
    alley_width = np.where(alley, rng.uniform(*_ALLEY_WIDTH, len(lot_row)), 0.0)
    weight = np.where(alley, 0.0, rng.gamma(2.0, 1.0, len(lot_row)))
    spare = (
        row_width
        - np.bincount(lot_row, alley_width, n_rows)
        - _MIN_FRONTAGE * np.bincount(lot_row, ~alley, n_rows)
    )
    share = weight / np.bincount(lot_row, weight, n_rows)[lot_row]
    frontage = np.where(alley, alley_width, _MIN_FRONTAGE + spare[lot_row] * share)
    right = np.cumsum(frontage)
    right -= (right[first] - frontage[first])[lot_row]
    return {
        "row": lot_row,
        "position": position,
        "count": count,
        "alley": alley,
        "frontage": frontage,
        "right": right,
    }


def _dividers(
    rng: np.random.Generator, lots: dict[str, np.ndarray], row_width: np.ndarray
) -> dict[str, np.ndarray]:
    """Lot dividers of every row, row ends included, sorted by row and west to east.

    A divider has a front end on the street and a back end, jittered, on the line between the
    two rows of its block. About one divider in twenty is dropped, merging two lots.
    """
    n_rows = len(row_width)
    inner = lots["position"] < lots["count"][lots["row"]] - 1
    left, right = np.flatnonzero(inner), np.flatnonzero(inner) + 1
    frontage, alley = lots["frontage"], lots["alley"]
    keep = (rng.random(len(left)) >= 0.05) | alley[left] | alley[right]
    limit = np.minimum(1.5, 0.2 * np.minimum(frontage[left], frontage[right]))
    back_shift = np.clip(rng.normal(0.0, 0.7, len(left)), -limit, limit)
    left, back_shift = left[keep], back_shift[keep]
    inner_front = lots["right"][left]
    rows = np.arange(n_rows)
    divider_row = np.concatenate([rows, lots["row"][left], rows])
    order_in_row = np.concatenate([np.zeros(n_rows), lots["position"][left] + 1, lots["count"]])
    front = np.concatenate([np.zeros(n_rows), inner_front, row_width])
    back = np.concatenate([np.zeros(n_rows), inner_front + back_shift, row_width])
    is_end = np.concatenate(
        [np.ones(n_rows, bool), np.zeros(len(left), bool), np.ones(n_rows, bool)]
    )
    order = np.lexsort((order_in_row, divider_row))
    return {
        "row": divider_row[order],
        "lot_index": order_in_row[order].astype(np.int64),
        "front": front[order],
        "back": back[order],
        "is_end": is_end[order],
    }


def _separate_back_ends(dividers: dict[str, np.ndarray], row_block: np.ndarray) -> None:
    """Move south-row back ends that fall within 0.5 m of a north-row one, in place.

    Without this, the noded line between the rows could get edges a few millimetres long.
    """
    block = row_block[dividers["row"]]
    north = (dividers["row"] % 2 == 1) & ~dividers["is_end"]
    south = (dividers["row"] % 2 == 0) & ~dividers["is_end"]
    north_key = block[north] * 1000.0 + dividers["back"][north]
    south_key = block[south] * 1000.0 + dividers["back"][south]
    if len(north_key) == 0 or len(south_key) == 0:
        return
    at = np.searchsorted(north_key, south_key)
    below = np.clip(at - 1, 0, len(north_key) - 1)
    above = np.clip(at, 0, len(north_key) - 1)
    nearer_below = south_key - north_key[below] <= north_key[above] - south_key
    nearest = np.where(nearer_below, below, above)
    gap = south_key - north_key[nearest]
    shift = np.where(np.abs(gap) < 0.5, np.where(gap >= 0, 0.5, -0.5) - gap, 0.0)
    dividers["back"][np.flatnonzero(south)] += shift


def _mid_line(
    dividers: dict[str, np.ndarray], divider_block: np.ndarray, divider_width: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noded line between the two rows of each block.

    It has one point per interior divider of either row plus the two block ends (taken from
    the north row and shared by the south row), sorted by block and west to east. Returns
    each point's block and relative position ``s`` (0 west, 1 east), and for each divider
    the index of its back end among these points.
    """
    north = dividers["row"] % 2 == 1
    on_mid = ~dividers["is_end"] | north
    source = np.flatnonzero(on_mid)
    s = dividers["back"][source] / divider_width[source]
    order = np.lexsort((s, divider_block[source]))
    mid_of = np.full(len(north), -1, np.int64)
    mid_of[source[order]] = np.arange(len(source))
    south_end = np.flatnonzero(~on_mid)  # the block's north row is the next row
    rows = np.arange(dividers["row"].max() + 1)
    partner_row = dividers["row"][south_end] + 1
    partner = np.where(
        dividers["front"][south_end] == 0.0,
        np.searchsorted(dividers["row"], rows)[partner_row],
        np.searchsorted(dividers["row"], rows, side="right")[partner_row] - 1,
    )
    mid_of[south_end] = mid_of[partner]
    return divider_block[source][order], s[order], mid_of


def _ring_index(
    left: np.ndarray,
    mid_left: np.ndarray,
    mid_right: np.ndarray,
    lot_north: np.ndarray,
    n_whole: int,
    bases: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rings of all candidate parcels as one ragged array of coordinate-table indices.

    A lot between divider ``left`` and ``left + 1`` runs counter-clockwise: north-row lots
    front left, back chain west to east, front right; south-row lots front left, front right,
    back chain east to west. Whole blocks are their four corners. ``bases`` are the table
    offsets of the mid line and of the block corners. Returns start, length and indices.
    """
    mid_base, corner_base = bases
    n_lots = len(left)
    ring_length = np.concatenate([mid_right - mid_left + 3, np.full(n_whole, 4)])
    ring_start = np.concatenate([[0], np.cumsum(ring_length)[:-1]])
    owner = np.repeat(np.arange(n_lots + n_whole), ring_length)
    step = np.arange(len(owner)) - ring_start[owner]
    lot = np.minimum(owner, max(n_lots - 1, 0))
    last = step == ring_length[owner] - 1
    right = left[lot] + 1
    north_ring = np.where(
        step == 0, left[lot], np.where(last, right, mid_base + mid_left[lot] + step - 1)
    )
    south_ring = np.where(
        step == 0, left[lot], np.where(step == 1, right, mid_base + mid_right[lot] - step + 2)
    )
    ring_index = np.where(
        owner < n_lots,
        np.where(lot_north[lot], north_ring, south_ring),
        corner_base + 4 * (owner - n_lots) + step,
    )
    return ring_start, ring_length, ring_index


def _lot_layout(rng: np.random.Generator, blocks: _Blocks) -> _Layout:
    """Split every block into two noded rows of lots, or keep it whole as one parcel."""
    n_blocks = len(blocks.width)
    whole = np.flatnonzero(rng.random(n_blocks) < 0.05)
    row_block = np.repeat(np.setdiff1d(np.arange(n_blocks), whole), 2)  # south, north row
    row_width = blocks.width[row_block]
    lots = _row_lots(rng, row_width)
    dividers = _dividers(rng, lots, row_width)
    _separate_back_ends(dividers, row_block)
    divider_block = row_block[dividers["row"]]
    divider_width = row_width[dividers["row"]]
    north = dividers["row"] % 2 == 1
    mid_block, mid_s, mid_of = _mid_line(dividers, divider_block, divider_width)
    mid_t = rng.uniform(0.44, 0.56, (n_blocks, 2))  # the mid line's height at both ends
    mid_t = mid_t[mid_block, 0] + (mid_t[mid_block, 1] - mid_t[mid_block, 0]) * mid_s

    # Coordinate table: front ends of all dividers, then the mid line, then whole blocks.
    front_xy = _bilinear(
        blocks.corners[divider_block], dividers["front"] / divider_width, north.astype(float)
    )
    mid_xy = _bilinear(blocks.corners[mid_block], mid_s, mid_t)
    xy = np.concatenate([front_xy, mid_xy, blocks.corners[whole].reshape(-1, 2)])
    xy = np.round(xy, 3)  # survey coordinates are given to the millimetre
    bases = (len(front_xy), len(front_xy) + len(mid_xy))

    # Lots lie between consecutive dividers of one row.
    left = np.flatnonzero(dividers["row"][:-1] == dividers["row"][1:])
    mid_left, mid_right = mid_of[left], mid_of[left + 1]
    lot_count = dividers["lot_index"][left + 1] - dividers["lot_index"][left]
    first_lot = np.searchsorted(lots["row"], dividers["row"][left])
    alley = (lot_count == 1) & lots["alley"][first_lot + dividers["lot_index"][left]]
    kind = np.where(alley, _ALLEY, np.where(lot_count > 1, _MERGED, _PLAIN))
    ring_start, ring_length, ring_index = _ring_index(
        left, mid_left, mid_right, north[left], len(whole), bases
    )
    lot_centre = (xy[left] + xy[left + 1] + xy[bases[0] + mid_left] + xy[bases[0] + mid_right]) / 4
    front_u = (dividers["front"][left] + dividers["front"][left + 1]) / 2
    return _Layout(
        xy=xy,
        ring_start=ring_start,
        ring_length=ring_length,
        ring_index=ring_index,
        centre=np.concatenate([lot_centre, blocks.corners[whole].mean(axis=1)]),
        kind=np.concatenate([kind, np.full(len(whole), _BLOCK)]),
        block=np.concatenate([divider_block[left], whole]),
        north_side=np.concatenate([north[left], np.ones(len(whole), bool)]),
        front_u=np.concatenate([front_u, blocks.width[whole] / 2]),
    )


def _polygons(layout: _Layout, chosen: np.ndarray) -> np.ndarray:
    """Shapely polygons of the chosen candidate parcels."""
    length = layout.ring_length[chosen]
    owner = np.repeat(np.arange(len(chosen)), length)
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    step = np.arange(len(owner)) - start[owner]
    coords = layout.xy[layout.ring_index[layout.ring_start[chosen][owner] + step]]
    return shapely.polygons(shapely.linearrings(coords, indices=owner))


def _choose(
    rng: np.random.Generator, centre: np.ndarray, origin: tuple[float, float], n: int
) -> tuple[np.ndarray, float]:
    """The ``n`` candidates nearest the origin under a lumpy radius; also the reach needed."""
    dx, dy = centre[:, 0] - origin[0], centre[:, 1] - origin[1]
    theta = np.arctan2(dy, dx)
    phase = rng.uniform(0, 2 * np.pi, 2)
    lumps = 1 + 0.15 * np.sin(2 * theta + phase[0]) + 0.08 * np.sin(3 * theta + phase[1])
    key = np.hypot(dx, dy) / lumps
    if n >= len(key):
        return np.arange(len(key)), np.inf
    nearest = np.argpartition(key, n - 1)[:n]
    return np.sort(nearest), float(key[nearest].max() * 1.23)


def _layout_parcels(
    rng: np.random.Generator, n_parcels: int, origin: tuple[float, float]
) -> tuple[_Blocks, _Layout, np.ndarray]:
    """Grow a grid until the ``n_parcels`` parcels nearest its centre lie well inside it."""
    half_side = 1.3 * math.sqrt(n_parcels * _M2_PER_PARCEL / math.pi) + 150.0
    while True:
        blocks = _street_grid(rng, half_side, origin)
        layout = _lot_layout(rng, blocks)
        chosen, reach = _choose(rng, layout.centre, origin, n_parcels)
        if reach + 60.0 < blocks.inscribed_radius:
            return blocks, layout, chosen
        half_side *= 1.3


# --------------------------------------------------------------------------- keys


def _default_sheet_count(n_parcels: int) -> int:
    return max(1, min(n_parcels, max(2, round(n_parcels / 500))))


def _assign_sheets(centre: np.ndarray, n_sheets: int) -> np.ndarray:
    """Sheet number 1..n of each parcel: rows of sheets from the north, west to east.

    Sheets are rectangles cut at parcel centroids: rows of sheets by northing, then each row by
    easting, so every sheet holds about the same number of parcels.
    """
    n = len(centre)
    n_bands = max(1, round(math.sqrt(n_sheets)))
    per_band = np.full(n_bands, n_sheets // n_bands)
    per_band[: n_sheets % n_bands] += 1
    band_edges = np.rint(np.concatenate([[0], np.cumsum(per_band)]) / n_sheets * n).astype(int)
    by_north = np.argsort(-centre[:, 1], kind="stable")
    band = np.empty(n, np.int64)
    band[by_north] = np.searchsorted(band_edges, np.arange(n), side="right") - 1
    order = np.lexsort((centre[:, 0], band))
    rank = np.arange(n) - band_edges[band[order]]
    band_size = np.diff(band_edges)[band[order]]
    column = rank * per_band[band[order]] // np.maximum(band_size, 1)
    first_sheet = np.concatenate([[0], np.cumsum(per_band)[:-1]])
    sheet = np.empty(n, np.int64)
    sheet[order] = first_sheet[band[order]] + column + 1
    return sheet


def _number_parcels(centre: np.ndarray, sheet: np.ndarray) -> np.ndarray:
    """Parcel numbers 1..n per sheet: from the north, in zig-zag bands of about one lot row."""
    top = np.full(sheet.max() + 1, -np.inf)
    np.maximum.at(top, sheet, centre[:, 1])
    band = np.floor((top[sheet] - centre[:, 1]) / _NUMBERING_BAND_M).astype(np.int64)
    along = np.where(band % 2 == 0, centre[:, 0], -centre[:, 0])
    order = np.lexsort((along, band, sheet))
    first = np.searchsorted(sheet[order], sheet[order])
    parcel = np.empty(len(sheet), np.int64)
    parcel[order] = np.arange(len(sheet)) - first + 1
    return parcel


# --------------------------------------------------------------------------- attributes


def _strings(options: tuple[str, ...], index: np.ndarray) -> np.ndarray:
    return np.asarray(options, dtype=StringDType())[index]


def _join(*parts: np.ndarray | str) -> np.ndarray:
    text = parts[0]
    for part in parts[1:]:
        text = np.strings.add(text, part)
    return text


def _land_use_classes(rng: np.random.Generator, kind: np.ndarray) -> np.ndarray:
    """Index into ``_LAND_USE`` for each parcel, drawn by the parcel's kind."""
    land_use = np.full(len(kind), _ROAD_CLASS)
    for column, parcel_kind in ((1, _PLAIN), (2, _MERGED), (3, _BLOCK)):
        weights = np.array([entry[column] for entry in _LAND_USE])
        hits = np.flatnonzero(kind == parcel_kind)
        land_use[hits] = rng.choice(len(_LAND_USE), size=len(hits), p=weights / weights.sum())
    return land_use


def _full_names() -> np.ndarray:
    """Every family + middle + given name, men first: index ((sex * F + f) * M + m) * G + g."""
    names = [
        f"{family} {middle} {given}"
        for sex in (0, 1)
        for family in _FAMILY
        for middle in _MIDDLE[sex]
        for given in _GIVEN[sex]
    ]
    return np.array(names, dtype=object)


_FULL_NAMES = _full_names()


def _people(rng: np.random.Generator, n: int, female: np.ndarray) -> np.ndarray:
    """``n`` personal names (object array), women where ``female`` is true."""
    family = rng.choice(len(_FAMILY), n, p=np.divide(_FAMILY_WEIGHTS, sum(_FAMILY_WEIGHTS)))
    middle = rng.choice(len(_MIDDLE[0]), n, p=np.divide(_MIDDLE_WEIGHTS, sum(_MIDDLE_WEIGHTS)))
    given = rng.integers(0, len(_GIVEN[0]), n)
    index = ((female.astype(np.int64) * len(_FAMILY) + family) * len(_MIDDLE[0]) + middle) * len(
        _GIVEN[0]
    ) + given
    return _FULL_NAMES[index]


def _organisations(commune_name: str) -> dict[str, tuple[str, ...]]:
    """Organisation names that hold land of each public or business land-use code."""
    place = commune_name.split(" ", 1)[1]
    council = (f"UBND {commune_name}",)
    return {
        "DGT": council,
        "DKV": council,
        "TSC": council,
        "DCH": (f"Ban Quản lý chợ {place}", *council),
        "DTT": ("UBND thành phố Phan Thiết", *council),
        "DVH": (f"Nhà Văn hóa {place}", *council),
        "DGD": (f"Trường Mầm non {place}", f"Trường Tiểu học {place}", f"Trường THCS {place}"),
        "DYT": (f"Trạm Y tế {commune_name}",),
        "TON": _TEMPLES,
        "TIN": tuple(f"{name} {place}" if name == "Đình làng" else name for name in _SHRINES),
        "TMD": _COMPANIES,
        "SKC": _COMPANIES,
    }


def _owner_names(rng: np.random.Generator, land_use: np.ndarray, commune_name: str) -> np.ndarray:
    """Holders: people, couples, and organisations for public and business land."""
    n = len(land_use)
    owner = _people(rng, n, rng.random(n) < 0.45)
    couple = np.flatnonzero(rng.random(n) < 0.15)
    husband = _people(rng, len(couple), np.zeros(len(couple), bool))
    wife = _people(rng, len(couple), np.ones(len(couple), bool))
    owner[couple] = [f"{man} và {woman}" for man, woman in zip(husband, wife, strict=True)]
    draw = rng.random(n)
    for code, names in _organisations(commune_name).items():
        hits = np.flatnonzero(
            np.isin(land_use, [i for i, entry in enumerate(_LAND_USE) if entry[0] == (code,)])
        )
        if code in ("TMD", "SKC"):
            hits = hits[draw[hits] < 0.6]  # the rest are household businesses
        owner[hits] = np.array(names, dtype=object)[rng.integers(0, len(names), len(hits))]
    return owner


def _addresses(
    rng: np.random.Generator,
    blocks: _Blocks,
    layout: _Layout,
    chosen: np.ndarray,
    commune_name: str,
    in_phan_thiet: bool,
) -> np.ndarray:
    """``No Street, khu phố K, <commune>, thành phố Phan Thiết, tỉnh Bình Thuận``.

    Street names follow the east-west grid lines; house numbers grow eastwards, odd on the
    north side of a street and even on the south side.
    """
    block = layout.block[chosen]
    north_side = layout.north_side[chosen]
    line = blocks.row[block] + north_side
    n_lines = int(blocks.row.max()) + 2
    names = [_STREETS[i] for i in rng.permutation(len(_STREETS))]
    names += [f"Đường số {k}" for k in range(len(names) + 1, n_lines + 1)]
    street = _strings(tuple(names[:n_lines]), line)
    along = blocks.west[block] + layout.front_u[chosen]
    number = 2 * np.floor(along / 8.0).astype(np.int64) + np.where(north_side, 2, 1)
    quarter = 1 + (blocks.row[block] // 4 * 7 + blocks.column[block] // 5) % 12
    district = ", thành phố Phan Thiết" if in_phan_thiet else ""
    return _join(
        number.astype(StringDType()),
        " ",
        street,
        ", khu phố ",
        quarter.astype(StringDType()),
        f", {commune_name}{district}, tỉnh Bình Thuận",
    )


def _recorded_areas(rng: np.random.Generator, area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Declared area (0.1 m², off by under 1 m² on ~2 %, within ATTR_AREA_MISMATCH's default
    tolerance) and legal area (~70 %, else NaN)."""
    n = len(area)
    off = rng.random(n) < 0.02
    error = rng.choice([-1.0, 1.0], n) * rng.uniform(0.2, 0.9, n)
    declared = np.round(np.where(off, np.maximum(area + error, 1.0), area), 1)
    present = rng.random(n) < 0.7
    reduced = rng.random(n) < 0.15  # part of the lot lies in a planned road widening
    legal = np.where(reduced, np.round(declared * rng.uniform(0.85, 0.98, n), 1), declared)
    return declared, np.where(present, legal, np.nan)


# --------------------------------------------------------------------------- faults


def _bow_tie(parcel: shapely.Polygon) -> shapely.Polygon:
    """The parcel's first two and last two corners in crossed order: a self-intersection."""
    ring = np.asarray(parcel.exterior.coords)
    return shapely.Polygon([ring[0], ring[1], ring[-2], ring[-3]])


def _self_touching(parcel: shapely.Polygon) -> shapely.Polygon:
    """The parcel's shell with a zero-area spike: out from its first vertex and back.

    Invalid (the ring touches itself), and repairing it removes the spike and gives back the
    parcel exactly, so its neighbours still share every vertex with it.
    """
    ring = np.asarray(parcel.exterior.coords)[:-1]
    corner = ring[0]
    tip = corner + 0.3 * (np.asarray(parcel.centroid.coords[0]) - corner)
    return shapely.Polygon([corner, tip, *ring])


def _inject_faults(columns: dict[str, Any]) -> None:
    """Apply ``FAULTS`` in place to column arrays sorted by sheet and parcel number."""
    sheet_no, parcel_no = columns["sheet_no"], columns["parcel_no"]

    def row(key: tuple[int, int]) -> int:
        return int(np.searchsorted(sheet_no, key[0])) + key[1] - 1

    geometry = columns["geometry"]
    geometry[row(_BOWTIE)] = _bow_tie(geometry[row(_BOWTIE)])
    geometry[row(_NO_GEOMETRY)] = None
    at = row(_SELF_TOUCHING)
    geometry[at] = _self_touching(geometry[at])
    columns["land_use_codes"][row(_UNKNOWN_LAND_USE)] = [UNKNOWN_LAND_USE_CODE]
    columns["land_use_codes"][row(_LEGACY_LAND_USE)] = [LEGACY_LAND_USE_CODE]
    at = row(_AREA_MISMATCH)
    columns["declared_area_m2"][at] = round(
        columns["declared_area_m2"][at] * AREA_MISMATCH_FACTOR + 2, 1
    )
    columns["commune_code"][row(_UNKNOWN_COMMUNE)] = UNKNOWN_COMMUNE_CODE
    # Key changes last: row() looks keys up in the unchanged numbering.
    missing_parcel_no, missing_sheet_no = row(_NO_PARCEL_NO), row(_NO_SHEET_NO)
    parcel_no[row(_DUPLICATE)] = _DUPLICATE_OF[1]
    parcel_no[missing_parcel_no] = pd.NA
    sheet_no[missing_sheet_no] = pd.NA


# --------------------------------------------------------------------------- public API


def _check_arguments(commune_code: str, n_parcels: int, n_sheets: int | None, faults: bool) -> int:
    if not (len(commune_code) == 5 and commune_code.isascii() and commune_code.isdigit()):
        raise ValueError(f"commune_code must be 5 digits, got {commune_code!r}")
    if faults and commune_code == UNKNOWN_COMMUNE_CODE:
        raise ValueError(f"{UNKNOWN_COMMUNE_CODE} is reserved for the ATTR_COMMUNE_UNKNOWN fault")
    if n_parcels < 1:
        raise ValueError(f"n_parcels must be at least 1, got {n_parcels}")
    sheets = _default_sheet_count(n_parcels) if n_sheets is None else n_sheets
    if not 1 <= sheets <= n_parcels:
        raise ValueError(f"n_sheets must be between 1 and n_parcels, got {sheets}")
    if faults and (sheets < 2 or n_parcels // sheets < _FAULT_MIN_PER_SHEET + 1):
        raise ValueError(
            f"faults need at least 2 sheets of {_FAULT_MIN_PER_SHEET + 1} parcels each; "
            f"got {n_parcels} parcels on {sheets} sheets"
        )
    return sheets


def generate_parcels(
    commune_code: str = DEFAULT_COMMUNE_CODE,
    *,
    n_parcels: int = 2000,
    seed: int = DEFAULT_SEED,
    n_sheets: int | None = None,
    faults: bool = True,
) -> gpd.GeoDataFrame:
    """Generate one commune's parcels with canonical column names.

    Parameters
    ----------
    commune_code
        Five-digit commune code. Only ``22924`` is placed at its real location (central Phan
        Thiết); the codes of :func:`placeable_communes` get a cell inside their own district
        (room for about 10,000 parcels each); other codes get a tile that may lie outside the
        province. See :func:`commune_centre`.
    n_parcels
        Number of records (faults included). 2,000 parcels cover about 1 km².
    seed
        Seed of the generator; together with ``commune_code`` it fixes every value.
    n_sheets
        Number of map sheets; by default one per 500 parcels, at least 2.
    faults
        Inject the faults listed in :data:`FAULTS`. Needs at least 2 sheets of 15 parcels.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``commune_code`` (str), ``sheet_no`` and ``parcel_no`` (nullable ``Int64``),
        ``land_use_codes`` (list of str), ``declared_area_m2``, ``legal_area_m2`` (float, NaN
        when unknown), ``owner_name``, ``address`` (NFC str) and ``geometry`` (Polygon, CRS
        EPSG:9218), sorted by sheet and parcel number.

    Raises
    ------
    ValueError
        If the commune code is not 5 digits, or the counts cannot hold the sheets or faults.
    """
    sheets = _check_arguments(commune_code, n_parcels, n_sheets, faults)
    rng = np.random.default_rng([seed, int(commune_code)])
    origin = commune_centre(commune_code)
    blocks, layout, chosen = _layout_parcels(rng, n_parcels, origin)
    polygons = _polygons(layout, chosen)
    centroid = shapely.get_coordinates(shapely.centroid(polygons))
    sheet_no = _assign_sheets(centroid, sheets)
    parcel_no = _number_parcels(centroid, sheet_no)
    land_use = _land_use_classes(rng, layout.kind[chosen])
    commune_name = _COMMUNE_NAMES.get(commune_code, f"xã {commune_code}")
    owner = _owner_names(rng, land_use, commune_name)
    address = _addresses(rng, blocks, layout, chosen, commune_name, commune_code in _COMMUNE_NAMES)
    declared, legal = _recorded_areas(rng, shapely.area(polygons))

    order = np.lexsort((parcel_no, sheet_no))
    columns = {
        "commune_code": np.full(n_parcels, commune_code, dtype=object),
        "sheet_no": pd.array(sheet_no[order], dtype="Int64"),
        "parcel_no": pd.array(parcel_no[order], dtype="Int64"),
        "land_use_codes": [list(_LAND_USE[i][0]) for i in land_use[order]],
        "declared_area_m2": declared[order],
        "legal_area_m2": legal[order],
        "owner_name": owner[order],
        "address": address[order].astype(object),
        "geometry": polygons[order],
    }
    if faults:
        _inject_faults(columns)
    return gpd.GeoDataFrame(columns, geometry="geometry", crs=CRS)


def generate_delivery(
    commune_code: str = DEFAULT_COMMUNE_CODE,
    *,
    n_parcels: int = 2000,
    seed: int = DEFAULT_SEED,
    n_sheets: int | None = None,
    faults: bool = True,
) -> gpd.GeoDataFrame:
    """Generate the parcels of :func:`generate_parcels` as a ViLIS export carries them.

    Columns are renamed to the values of :data:`VILIS_FIELDS`; land-use codes are joined with
    ``+`` into one string (``ODT+CLN``); areas are floats rounded to 0.1 m². Arguments are those
    of :func:`generate_parcels`.
    """
    parcels = generate_parcels(
        commune_code, n_parcels=n_parcels, seed=seed, n_sheets=n_sheets, faults=faults
    )
    parcels["land_use_codes"] = ["+".join(codes) for codes in parcels["land_use_codes"]]
    for column in ("declared_area_m2", "legal_area_m2"):
        parcels[column] = parcels[column].round(1)
    return parcels.rename(columns=VILIS_FIELDS)


def write_delivery(
    frame: gpd.GeoDataFrame, path: str | os.PathLike, *, driver: str | None = None
) -> pathlib.Path:
    """Write a delivery frame with pyogrio and return its path.

    Parameters
    ----------
    frame
        A frame with plain columns, such as :func:`generate_delivery` returns (list columns
        cannot be written).
    path
        Target file; an existing one is replaced, missing parent folders are made.
    driver
        OGR driver; by default from the suffix: ``.shp`` ESRI Shapefile, ``.gpkg`` GPKG,
        ``.geojson`` GeoJSON.

    Notes
    -----
    A Shapefile is written in UTF-8 with a ``.cpg`` file and a ``.prj`` for the frame's CRS;
    its field names are cut to 10 characters by GDAL (``SoHieuToBa``), and the DBF header
    carries the fixed date :data:`DBF_DATE`, so the same frame always gives the same bytes.
    GeoPackages carry a write timestamp and are not byte-identical between runs.
    """
    target = pathlib.Path(path)
    if driver is None:
        try:
            driver = _SUFFIX_DRIVERS[target.suffix.lower()]
        except KeyError:
            raise ValueError(
                f"cannot tell the driver from {target.name!r}; pass driver= or use one of "
                f"{', '.join(_SUFFIX_DRIVERS)}"
            ) from None
    options: dict[str, object] = {}
    if driver == "ESRI Shapefile":
        options = {
            "encoding": "UTF-8",
            "layer_options": {"DBF_DATE_LAST_UPDATE": DBF_DATE, "RESIZE": "YES"},
        }
    target.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Normalized/laundered field name", RuntimeWarning)
        pyogrio.write_dataframe(frame, target, driver=driver, **options)
    return target
