"""Map a delivery's fields onto the canonical parcel and normalise their values."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from hashlib import sha256
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from landpipe import schemas
from landpipe.arrowbytes import fixed_width, length_prefix
from landpipe.errors import FieldError
from landpipe.memory import collector_paused
from landpipe.schemas import parcel
from landpipe.schemas.findings import Finding

#: A Shapefile's DBF cuts field names to this many characters.
DBF_NAME_LENGTH = 10
_LAND_USE_SEPARATORS = re.compile(r"[\s+,;/&-]+")


def normalise_name(name: str) -> str:
    """Field name reduced for matching: no accents, no case, letters and digits only."""
    decomposed = unicodedata.normalize("NFKD", name.replace("đ", "d").replace("Đ", "D"))
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^0-9a-z]", "", ascii_only.lower())


def match_fields(names: list[str], aliases: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Canonical field -> delivered field name, for the delivered ``names`` that match.

    An exact (normalised) match wins over a Shapefile-truncated one; among aliases the first
    listed wins; a delivered field maps onto at most one canonical field.
    """
    aliases = aliases if aliases is not None else schemas.field_aliases()
    normalised = {name: normalise_name(name) for name in names}
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for truncated_ok in (False, True):
        for canonical, candidates in aliases.items():
            if canonical in mapping:
                continue
            for alias in candidates:
                wanted = normalise_name(alias)
                hit = next(
                    (
                        name
                        for name, norm in normalised.items()
                        if name not in taken
                        and norm
                        and (
                            norm == wanted
                            or (
                                truncated_ok
                                and len(name) == DBF_NAME_LENGTH
                                and wanted.startswith(norm)
                            )
                        )
                    ),
                    None,
                )
                if hit is not None:
                    mapping[canonical] = hit
                    taken.add(hit)
                    break
    return mapping


#: Key numbers are stored as PostgreSQL ``integer``: larger ones are unreadable.
MAX_KEY_NUMBER = 2**31 - 1
#: The largest area the register holds (``numeric(14, 1)``: under 10^13 m², once rounded to
#: tenths); a delivered area beyond it is no area (Bình Thuận is 7.8 * 10^9 m²).
MAX_AREA_M2 = 10.0**13 - 0.05


def to_int(value: Any) -> int | None:
    """A key number as delivered (``"05"``, ``5.0``, ``5``) as an int; None when unreadable or
    not a positive number (map sheets and parcels are numbered from 1, as the register's
    checks require)."""
    number = _to_int(value)
    return number if number is not None and 0 < number <= MAX_KEY_NUMBER else None


def _to_int(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else None
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    if re.fullmatch(r"\d+[.,]0*", text):
        return int(re.split(r"[.,]", text)[0])
    return None


def to_commune_code(value: Any) -> str | None:
    """A commune code as delivered (``22924``, ``"22924"``, ``22924.0``) as 5 digits."""
    number = to_int(value)
    if number is None or not 0 < number < 100_000:
        return None
    return f"{number:05d}"


def to_area(value: Any) -> float | None:
    """An area in m² as delivered; a comma decimal (``"123,5"``, ``"1.234,5"``) is read right."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return number if _holdable(number) else None
    text = str(value).strip().replace(" ", "")
    if not text:
        return None
    if "," in text and "." in text:
        decimal = "," if text.rfind(",") > text.rfind(".") else "."
        thousands = "." if decimal == "," else ","
        text = text.replace(thousands, "").replace(decimal, ".")
    else:
        text = text.replace(",", ".")
    try:
        number = float(text)
    except ValueError:
        return None
    return number if _holdable(number) else None


def _holdable(area: float) -> bool:
    return math.isfinite(area) and abs(area) < MAX_AREA_M2


def to_land_use_codes(value: Any) -> list[str]:
    """Land-use codes as delivered (``"ONT+CLN"``, ``"ONT, CLN"``) as a list of codes."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return []
    return [code for code in _LAND_USE_SEPARATORS.split(str(value).strip().upper()) if code]


def to_text(value: Any) -> str | None:
    """Free text as NFC-normalised Unicode, None when blank."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    text = unicodedata.normalize("NFC", str(value)).strip()
    return text or None


def is_nfc(texts: Iterable[str | None]) -> bool:
    """Whether every text (missing ones, None, skipped) is NFC, in one pass over them all."""
    # "\n" never combines with its neighbours, so the joined text is NFC when every text is.
    joined = "\n".join(filter(None, texts))
    return joined.isascii() or unicodedata.is_normalized("NFC", joined)


def json_value(value: Any) -> Any:
    """A delivered attribute value as something JSON can hold."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, (pd.Timestamp, datetime, date)):
        return value.isoformat()
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    return str(value)


def _mixed(values: pd.Series) -> bool:
    """Whether an object column mixes text with numbers (as a GeoJSON property may)."""
    if values.dtype != object:
        return False
    # Looks at every value in C; "empty" is a column of missing values only.
    return pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty")


def _per_distinct(values: pd.Series, convert) -> list:
    """``convert`` applied once per distinct value (codes repeat a lot), spread back out."""
    if _mixed(values):  # 0 and 0.0 are one value to factorize, but not to the converters
        return [convert(value) for value in values.tolist()]
    codes, converted = _convert_distinct(values, convert)
    return [converted[code] for code in codes.tolist()]


def _per_distinct_array(values: pd.Series, convert, dtype: str) -> pd.api.extensions.ExtensionArray:
    """:func:`_per_distinct` as a pandas array of ``dtype``."""
    if _mixed(values):
        return pd.array([convert(value) for value in values.tolist()], dtype=dtype)
    codes, converted = _convert_distinct(values, convert)
    return pd.array(converted, dtype=dtype).take(codes)


def _convert_distinct(values: pd.Series, convert) -> tuple[np.ndarray, list]:
    """Each value's code, and ``convert`` of each distinct value, then of a missing one: the
    code of a missing value, -1, picks the last entry."""
    codes, distinct = pd.factorize(values, use_na_sentinel=True)
    return codes, [*(convert(value) for value in distinct), convert(None)]


def series_to_int(values: pd.Series) -> pd.Series:
    """Vectorised :func:`to_int`: key numbers as nullable ``Int64``, unreadable ones as NA."""
    if pd.api.types.is_integer_dtype(values):
        numbers = values.astype("Int64")
        return numbers.where((numbers > 0) & (numbers <= MAX_KEY_NUMBER))
    if pd.api.types.is_float_dtype(values):
        whole = values.notna() & (values % 1 == 0) & (values.abs() <= MAX_KEY_NUMBER)
        numbers = values.where(whole).astype("Int64")
        return numbers.where(numbers > 0)
    return pd.Series(_per_distinct_array(values, to_int, "Int64"))


def series_to_commune_code(values: pd.Series) -> pd.Series:
    """Vectorised :func:`to_commune_code`: 5-digit text, or None."""
    return pd.Series(_per_distinct_array(values, to_commune_code, "object"), dtype=object)


def series_to_area(values: pd.Series) -> pd.Series:
    """Vectorised :func:`to_area`: float m², NaN when unreadable; comma decimals read right."""
    if pd.api.types.is_numeric_dtype(values):
        areas = values.astype("float64")
        return areas.where(np.isfinite(areas) & (areas.abs() < MAX_AREA_M2))
    areas = _per_distinct(values, to_area)
    return pd.Series([np.nan if a is None else a for a in areas], dtype="float64")


def series_to_land_use_codes(values: pd.Series) -> list[list[str]]:
    """Vectorised :func:`to_land_use_codes`: a list of codes per value (fresh lists)."""
    with collector_paused():
        if _mixed(values):
            return [to_land_use_codes(value) for value in values.tolist()]
        codes, converted = _convert_distinct(values, to_land_use_codes)
        return [list(converted[code]) for code in codes.tolist()]


def series_to_text(values: pd.Series) -> list[str | None]:
    """Vectorised :func:`to_text`: NFC text, None when blank."""
    if not pd.api.types.is_string_dtype(values):
        return [to_text(value) for value in values.tolist()]
    if values.dtype != object:  # Arrow strings: check, then strip in Arrow
        if not is_nfc(values.dropna().tolist()):
            return [to_text(value) for value in values.tolist()]
        stripped = values.str.strip()
        return (
            stripped.where(stripped.str.len() > 0)
            .astype(object)
            .where(stripped.notna(), None)
            .tolist()
        )
    texts = [value if isinstance(value, str) else None for value in values.tolist()]
    if not is_nfc(texts):
        return [to_text(text) for text in texts]
    return [None if text is None else text.strip() or None for text in texts]


def text_column(values: pd.Series, *, nfc: bool = False) -> pd.Series | list[str | None]:
    """:func:`series_to_text` as a text column, the stripping done in Arrow: the same values
    (Arrow strips the same whitespace as Python), without a Python string per record.
    ``nfc``: the text is known to be NFC already (read by landpipe), so it is not checked."""
    if not len(values) or not (values.dtype == object or pd.api.types.is_string_dtype(values)):
        return series_to_text(values)
    try:
        texts = _one_chunk(pa.array(values, type=pa.string(), from_pandas=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers among the texts
        return series_to_text(values)
    if texts.null_count == len(texts):
        return series_to_text(values)
    # Python strings are at hand in an object column; an Arrow one is checked in Arrow.
    if not nfc:
        nfc = is_nfc(values.dropna().tolist()) if values.dtype == object else _arrow_is_nfc(texts)
    if not nfc:
        return series_to_text(values)
    stripped = pc.utf8_trim_whitespace(texts)
    blank = pc.equal(pc.binary_length(stripped), 0)
    return pd.Series(pd.array(pc.if_else(blank, pa.scalar(None, pa.string()), stripped), "str"))


def _arrow_is_nfc(texts: pa.StringArray) -> bool:
    """:func:`is_nfc` over an Arrow array: one decoded text, the values joined by newlines."""
    present = texts.drop_null()
    if pc.all(pc.string_is_ascii(present)).as_py() is not False:
        return True
    lines = pc.binary_join_element_wise(present, pa.scalar("", pa.string()), "\n")
    return unicodedata.is_normalized("NFC", str(values_bytes(lines), "utf-8"))


def values_bytes(values: pa.Array) -> memoryview:
    """The bytes of all values of a binary or string array (large or not), back to back."""
    wide = pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64 if wide else np.int32)
    offsets = offsets[values.offset : values.offset + len(values) + 1]
    return memoryview(values.buffers()[2])[offsets[0] : offsets[-1]]


def to_map_scale(value: Any) -> int | None:
    """A map scale as delivered (``"1:1000"``, ``"1/1000"``, ``1000``) as its denominator."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().replace(" ", "").replace(".", "")
    match = re.fullmatch(r"(?:1[:/])?(\d{3,6})(?:,0+)?", text)
    return int(match.group(1)) if match else None


def series_to_map_scale(values: pd.Series) -> pd.Series:
    """Vectorised :func:`to_map_scale`."""
    return pd.Series(_per_distinct_array(values, to_map_scale, "Int64"))


_CONVERTERS = {
    "commune_code": series_to_commune_code,
    "sheet_no": series_to_int,
    "parcel_no": series_to_int,
    "land_use_codes": series_to_land_use_codes,
    "declared_area_m2": series_to_area,
    "legal_area_m2": series_to_area,
    "owner_name": text_column,
    "address": text_column,
    "map_scale": series_to_map_scale,
}

#: Options that fill a key field for records that lack it.
_FILLS = {"commune_code": "--commune", "sheet_no": "--sheet"}


def map_fields(
    frame: gpd.GeoDataFrame,
    *,
    commune_code: str | None = None,
    sheet_no: int | None = None,
    mapping: dict[str, str] | None = None,
    map_scale: int | None = None,
    text_nfc: bool = False,
) -> tuple[gpd.GeoDataFrame, dict[str, str]]:
    """Map a delivered layer onto the canonical parcel.

    Parameters
    ----------
    frame
        The layer as read, with the delivery's own field names.
    commune_code, sheet_no, map_scale
        Commune, map sheet and map scale (1:1000 -> 1000) of the delivery, for records whose
        field is blank or absent (a drawing of one sheet often carries none).
    mapping
        Canonical field -> delivered field name (from ``--mapping``); wins over detection.
    text_nfc
        The layer's text is NFC already (as :func:`landpipe.sources.read_parcel_layer`
        decodes it): not checked again.

    Returns
    -------
    parcels, mapping
        One row per delivered record, in delivery order: ``source_row``, the canonical
        attributes (missing keys as ``<NA>``) and the geometry; and the mapping used
        (canonical field -> delivered field name). The delivered fields themselves stay in
        ``frame``: see :func:`attribute_records` and :func:`attribute_json`.

    Raises
    ------
    FieldError
        The layer lacks a parcel-number field, or a sheet or commune field and no option
        supplies it, or ``mapping`` names a field the layer does not have.
    """
    fields = [name for name in frame.columns if name != frame.geometry.name]
    detected = match_fields(fields)
    if mapping:
        not_canonical = [c for c in mapping if c not in _CONVERTERS]
        if not_canonical:
            raise FieldError(
                f"the field mapping maps onto no canonical field: {', '.join(not_canonical)};"
                f" canonical fields: {', '.join(_CONVERTERS)}"
            )
        missing = {c: f for c, f in mapping.items() if f not in fields}
        if missing:
            raise FieldError(
                f"the field mapping names fields the layer lacks: {missing}; delivered fields: "
                f"{', '.join(fields)}"
            )
        taken = set(mapping.values())
        displaced = {c: f for c, f in detected.items() if f in taken and mapping.get(c) != f}
        detected = {c: f for c, f in detected.items() if f not in taken} | mapping
    fills = {"commune_code": commune_code, "sheet_no": sheet_no}
    for required in parcel.KEY:
        if required not in detected and fills.get(required) is None:
            wanted = ", ".join(schemas.field_aliases()[required][:4])
            hint = f" or give {_FILLS[required]}" if required in _FILLS else ""
            if mapping and required in displaced:  # the field it would have been is mapped
                field = displaced[required]
                onto = ", ".join(c for c, f in mapping.items() if f == field)
                raise FieldError(
                    f"no {required} field: the field mapping maps {field}, which would be it,"
                    f" onto {onto}; map {required} too{hint}"
                )
            raise FieldError(
                f"no {required} field (such as {wanted}) among the delivered fields "
                f"{', '.join(fields) or '(none)'}{hint}"
            )
    for key in parcel.KEY:
        name = detected.get(key)
        if name is not None and fills.get(key) is None and frame[name].isna().all():
            hint = f"; give {_FILLS[key]}" if key in _FILLS else ""
            raise FieldError(f"the {key} field {name!r} is empty in every record{hint}")
    columns: dict[str, Any] = {parcel.SOURCE_ROW: np.arange(len(frame), dtype="int64")}
    for canonical, convert in _CONVERTERS.items():
        source_name = detected.get(canonical)
        if source_name is None:
            empty = pd.Series([None] * len(frame), dtype=object)
            columns[canonical] = convert(empty)
        else:
            values = frame[source_name].reset_index(drop=True)
            if text_nfc and convert is text_column:
                columns[canonical] = text_column(values, nfc=True)
            else:
                columns[canonical] = convert(values)
    if commune_code is not None:
        columns["commune_code"] = [code or commune_code for code in columns["commune_code"]]
    if sheet_no is not None:
        columns["sheet_no"] = columns["sheet_no"].fillna(sheet_no)
    if map_scale is not None:
        columns["map_scale"] = columns["map_scale"].fillna(map_scale)
    parcels = gpd.GeoDataFrame(columns, geometry=frame.geometry.values, crs=frame.crs)
    return parcels, {c: detected[c] for c in _CONVERTERS if c in detected}


#: Canonical fields whose delivered value, when it cannot be read, is stored as unknown (the
#: record is kept): what :func:`unreadable_findings` reports. Keys that cannot be read reject
#: the record instead (``ATTR_MISSING``).
_KEPT_UNKNOWN = {
    "declared_area_m2": "an area in m²",
    "legal_area_m2": "an area in m²",
    "map_scale": "a map scale",
}


def unreadable_findings(
    frame: pd.DataFrame, parcels: pd.DataFrame, mapping: dict[str, str]
) -> list[Finding]:
    """``ATTR_UNREADABLE`` for each delivered area or map scale that :func:`map_fields` could
    not read (so ``parcels`` holds it as unknown), with the value as delivered.

    ``frame`` is the layer as read, ``parcels`` what :func:`map_fields` made of it (one row
    per record, in order) and ``mapping`` the mapping it used.
    """
    findings = []
    for canonical, what in _KEPT_UNKNOWN.items():
        name = mapping.get(canonical)
        if name is None or name not in frame:
            continue
        delivered = frame[name].reset_index(drop=True)
        if canonical == "map_scale":  # --scale may have filled what could not be read
            unknown = series_to_map_scale(delivered).isna().to_numpy()
        else:
            unknown = pd.Series(parcels[canonical]).reset_index(drop=True).isna().to_numpy()
        for row in np.flatnonzero(unknown & delivered.notna().to_numpy()).tolist():
            value = delivered.iloc[row]
            if isinstance(value, str) and not value.strip():
                continue  # blank: not delivered
            keys = parcels.iloc[row]
            findings.append(
                Finding(
                    rule_code="ATTR_UNREADABLE",
                    message=f"record {row}: field {name} {str(value)[:40]!r} is not {what};"
                    " taken as unknown",
                    source_row=row,
                    commune_code=None if pd.isna(keys["commune_code"]) else keys["commune_code"],
                    sheet_no=None if pd.isna(keys["sheet_no"]) else int(keys["sheet_no"]),
                    parcel_no=None if pd.isna(keys["parcel_no"]) else int(keys["parcel_no"]),
                    detail={"field": name, "value": str(value)[:200], "canonical": canonical},
                )
            )
    return findings


def attribute_records(frame: pd.DataFrame, rows: list[int]) -> list[dict[str, Any]]:
    """Every delivered field of the records at ``rows`` (0-based), JSON-able, by its own name.

    ``frame`` holds the delivered attributes without geometry (``Delivery.attributes``).
    """
    subset = frame.iloc[rows]
    return [
        {name: json_value(value) for name, value in record.items()}
        for record in subset.to_dict("records")
    ]


def attribute_json(frame: pd.DataFrame, fields: list[str], rows: np.ndarray) -> list[str]:
    """The delivered ``fields`` of the records at ``rows`` as one JSON object text per record."""
    if not fields:
        return ["{}"] * len(rows)
    subset = pd.DataFrame(frame[fields].iloc[rows]).reset_index(drop=True)
    text = subset.to_json(orient="records", lines=True, force_ascii=False, date_format="iso")
    return text.splitlines()


# --------------------------------------------------------------------------- content hash

#: Well-known binary geometry type codes, and the EWKB flag of an SRID.
_POLYGON, _MULTIPOLYGON, _EWKB_SRID = 3, 6, 0x20000000


def joined(parts: list[pa.Array]) -> pa.BinaryArray:
    """The values of ``parts`` concatenated row by row (a missing value adds nothing)."""
    parts = [p if pa.types.is_binary(p.type) else p.cast(pa.binary()) for p in parts]
    return pc.binary_join_element_wise(*parts, b"", null_handling="replace", null_replacement=b"")


def length_prefixed(values: pa.Array) -> pa.BinaryArray:
    """Each value as its byte length (4 bytes, big-endian; -1 when missing), then its bytes.

    Such values concatenate without ambiguity. It is also how PostgreSQL's binary ``COPY``
    frames a field.
    """
    return joined([length_prefix(values), values])


def multipolygon_wkb(
    geometries: np.ndarray, srid: int | None = None, *, prefixed: bool = False
) -> pa.BinaryArray:
    """Little-endian WKB of each geometry as the register stores it: a Polygon becomes a
    one-part MultiPolygon. With ``srid``, extended WKB carrying it, as PostGIS reads it.
    Missing geometries are nulls; ``prefixed``, each is :func:`length_prefixed` instead.

    Parcels are nearly all polygons without holes: their WKB is written straight from the
    coordinate array; other geometries go through GEOS's writer one by one.
    """
    geometries = np.asarray(geometries, dtype=object)
    simple = shapely.get_type_id(geometries) == _POLYGON
    simple[simple] = (shapely.get_num_interior_rings(geometries[simple]) == 0) & ~shapely.has_z(
        geometries[simple]
    )
    simple[simple] = ~shapely.is_empty(geometries[simple])
    wkb = _simple_polygons_wkb(geometries[simple], srid, prefixed)
    if simple.all():
        return wkb
    others = np.flatnonzero(~simple)
    written = [_multipolygon_wkb(g, srid) for g in geometries[others]]
    if prefixed:
        written = [
            b"\xff\xff\xff\xff" if w is None else len(w).to_bytes(4, "big") + w for w in written
        ]
    order = np.concatenate([np.flatnonzero(simple), others]).argsort()
    combined = pa.concat_arrays([wkb, pa.array(written, type=pa.binary())])
    return combined.take(pa.array(order))


def _simple_polygons_wkb(polygons: np.ndarray, srid: int | None, prefixed: bool) -> pa.BinaryArray:
    """WKB of polygons with one ring each (no holes, 2D, not empty) as one-part MultiPolygons,
    each a header and the ring's coordinates as they lie in GEOS's coordinate array."""
    points = shapely.get_num_coordinates(polygons).astype(np.int64)
    coordinates = shapely.get_coordinates(polygons)  # one ring each: the ring's points in order
    fields = [("length", ">i4")] if prefixed else []
    fields += [("order", "u1"), ("type", "<u4")]
    if srid is not None:
        fields.append(("srid", "<u4"))
    fields += [
        ("parts", "<u4"),
        ("part_order", "u1"),
        ("part_type", "<u4"),
        ("rings", "<u4"),
        ("points", "<u4"),
    ]
    header = np.empty(len(polygons), dtype=fields)
    if prefixed:
        header["length"] = header.dtype.itemsize - 4 + 16 * points
    header["order"] = 1
    header["type"] = _MULTIPOLYGON if srid is None else _MULTIPOLYGON | _EWKB_SRID
    if srid is not None:
        header["srid"] = srid
    header["parts"] = 1
    header["part_order"] = 1
    header["part_type"] = _POLYGON
    header["rings"] = 1
    header["points"] = points
    offsets = np.zeros(len(polygons) + 1, dtype=np.int64)
    np.cumsum(points * 16, out=offsets[1:])
    body = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        len(polygons),
        [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(coordinates, "<f8"))],
    ).cast(pa.binary())
    return joined([fixed_width(header), body])


def _multipolygon_wkb(geometry: shapely.Geometry | None, srid: int | None) -> bytes | None:
    if geometry is None:
        return None
    wkb = shapely.to_wkb(geometry, byte_order=1)
    if shapely.get_type_id(geometry) == _POLYGON:
        wkb = b"\x01\x06\x00\x00\x00\x01\x00\x00\x00" + wkb
    if srid is None:
        return wkb
    kind = int.from_bytes(wkb[1:5], "little") | _EWKB_SRID
    return wkb[:1] + kind.to_bytes(4, "little") + srid.to_bytes(4, "little") + wkb[5:]


def text_arrow(values: pd.Series | list) -> pa.StringArray:
    """Text values as an Arrow array; anything that is not a string is missing."""
    if isinstance(values, pd.Series) and pd.api.types.is_string_dtype(values):
        return _one_chunk(pa.array(values, type=pa.string(), from_pandas=True))
    return pa.array([v if isinstance(v, str) else None for v in values], type=pa.string())


def _one_chunk(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """An Arrow column of pandas (read in batches, or sliced across them) as one array."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def land_use_arrow(values: pd.Series | np.ndarray) -> pa.ListArray:
    """Land-use code lists as an Arrow list array (a missing list is an empty one)."""
    codes = pa.array(values, type=pa.list_(pa.string()), from_pandas=True)
    if codes.null_count:
        codes = pc.if_else(codes.is_null(), pa.scalar([], pa.list_(pa.string())), codes)
    return codes


def area_tenths(values: pd.Series | np.ndarray, *, legacy: bool = False) -> np.ndarray:
    """Areas in tenths of m², as PostgreSQL stores a float in ``numeric(14, 1)`` (NaN where
    unknown, and where not a number the register can hold: not finite, or
    :data:`MAX_AREA_M2` or more).

    PostgreSQL takes the float's 15 significant digits (``%.15g``), then rounds to one decimal,
    halves away from zero: 100.05 m² is 100.1, as written, although the float nearest 100.05
    lies below it and ``round(x, 1)`` would give 100.0. So are 12.25 (12.3, not 12.2 to even)
    and -0.25 (-0.3). ``legacy``: as landpipe rounded before (the float times ten, halves to
    even), which the areas of versions loaded then hold.
    """
    x = np.asarray(values, dtype="float64")
    with np.errstate(invalid="ignore", over="ignore"):
        tenths = np.rint(x * 10)
        if not legacy:
            # Only a float within a hair of a half tenth can round otherwise.
            scaled = x * 10
            half = np.abs(scaled - np.floor(scaled) - 0.5) <= 1e-9 * np.maximum(1, np.abs(scaled))
            half &= np.abs(x) < MAX_AREA_M2
            tenths[half] = [_tenths_as_numeric(v) for v in x[half].tolist()]
    tenths[~(np.abs(tenths) < MAX_AREA_M2 * 10)] = np.nan
    return tenths


def _tenths_as_numeric(value: float) -> float:
    """One area in tenths of m², the way PostgreSQL casts a float to ``numeric(14, 1)``."""
    decimal = Decimal(f"{value:.15g}").quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return float(decimal * 10)


#: Parcels hashed at a time: the content of a chunk stays in the CPU's caches.
HASH_CHUNK = 100_000


def content_hashes(parcels: gpd.GeoDataFrame, *, legacy_rounding: bool = False) -> np.ndarray:
    """SHA-256 of what makes a parcel changed when it is delivered again: one 32-byte row
    per parcel, an (n, 32) ``uint8`` array.

    The content is the geometry (as stored: a MultiPolygon in the storage CRS), the land-use
    codes, the declared and legal areas (in tenths of m²), the owner and the address, each
    field length-prefixed. ``land.parcel_content_hash`` in ``sql/030_parcel.sql`` computes
    the same bytes from a stored version, so two parcels have the same hash exactly when the
    register would call them the same. ``legacy_rounding``: areas rounded as versions loaded
    before landpipe rounded as PostgreSQL does hold them (:func:`area_tenths`).
    """
    geometries = np.asarray(parcels.geometry.values)
    codes = land_use_arrow(parcels["land_use_codes"])
    declared = _tenths_field(area_tenths(parcels["declared_area_m2"], legacy=legacy_rounding))
    legal = _tenths_field(area_tenths(parcels["legal_area_m2"], legacy=legacy_rounding))
    owner, address = text_arrow(parcels["owner_name"]), text_arrow(parcels["address"])
    digests: list[bytes] = []
    with collector_paused():
        for start in range(0, len(parcels), HASH_CHUNK):
            part = slice(start, start + HASH_CHUNK)
            n = len(geometries[part])
            content = joined(
                [
                    multipolygon_wkb(geometries[part], prefixed=True),
                    _codes_field(codes.slice(start, n)),
                    declared.slice(start, n),
                    legal.slice(start, n),
                    length_prefix(owner.slice(start, n)),
                    owner.slice(start, n),
                    length_prefix(address.slice(start, n)),
                    address.slice(start, n),
                ]
            )
            digests.extend(sha256(value).digest() for value in content.to_numpy(False))
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 32)


def _codes_field(codes: pa.ListArray) -> pa.BinaryArray:
    """The number of codes (4 bytes), then each code length-prefixed."""
    counts = pc.list_value_length(codes).to_numpy(zero_copy_only=False).astype(">i4")
    elements = pa.ListArray.from_arrays(codes.offsets, length_prefixed(codes.values))
    return joined([fixed_width(counts), pc.binary_join(elements, b"")])


def _tenths_field(tenths: np.ndarray) -> pa.BinaryArray:
    """A length-prefixed 8-byte big-endian integer, or -1 where the area is unknown."""
    record = np.zeros(len(tenths), dtype=[("length", ">i4"), ("value", ">i8")])
    known = ~np.isnan(tenths)
    record["length"] = np.where(known, 8, -1)
    record["value"][known] = tenths[known]
    field = fixed_width(record)
    if known.all():
        return field
    return pc.if_else(pa.array(known), field, pa.scalar(b"\xff\xff\xff\xff", pa.binary()))
