"""Map a delivery's fields onto the canonical parcel and normalise their values."""

from __future__ import annotations

import gc
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from landpipe import schemas
from landpipe.errors import FieldError
from landpipe.schemas import parcel

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


def to_int(value: Any) -> int | None:
    """A key number as delivered (``"05"``, ``5.0``, ``5``) as an int; None when unreadable."""
    number = _to_int(value)
    return number if number is not None and 0 <= number <= MAX_KEY_NUMBER else None


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
        return None if math.isnan(number) else number
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
        return float(text)
    except ValueError:
        return None


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
        return numbers.where((numbers >= 0) & (numbers <= MAX_KEY_NUMBER))
    if pd.api.types.is_float_dtype(values):
        whole = values.notna() & (values % 1 == 0) & (values.abs() <= MAX_KEY_NUMBER)
        numbers = values.where(whole).astype("Int64")
        return numbers.where(numbers >= 0)
    return pd.Series(_per_distinct_array(values, to_int, "Int64"))


def series_to_commune_code(values: pd.Series) -> pd.Series:
    """Vectorised :func:`to_commune_code`: 5-digit text, or None."""
    return pd.Series(_per_distinct_array(values, to_commune_code, "object"), dtype=object)


def series_to_area(values: pd.Series) -> pd.Series:
    """Vectorised :func:`to_area`: float m², NaN when unreadable; comma decimals read right."""
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    areas = _per_distinct(values, to_area)
    return pd.Series([np.nan if a is None else a for a in areas], dtype="float64")


def series_to_land_use_codes(values: pd.Series) -> list[list[str]]:
    """Vectorised :func:`to_land_use_codes`: a list of codes per value (fresh lists)."""
    with _collector_paused():
        if _mixed(values):
            return [to_land_use_codes(value) for value in values.tolist()]
        codes, converted = _convert_distinct(values, to_land_use_codes)
        return [list(converted[code]) for code in codes.tolist()]


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while making many small containers.

    A list per record sets off a collection every 700 lists, walking the new lists again and
    again and now and then every live object (a delivery's geometries among them): several
    times the cost of making lists that hold only strings and can form no cycle. The collector
    runs again afterwards, as it was.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
    "owner_name": series_to_text,
    "address": series_to_text,
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
        unknown = {c: f for c, f in mapping.items() if f not in fields or c not in _CONVERTERS}
        if unknown:
            raise FieldError(
                f"the field mapping names what the layer lacks: {unknown}; delivered fields: "
                f"{', '.join(fields)}; canonical fields: {', '.join(_CONVERTERS)}"
            )
        taken = set(mapping.values())
        detected = {c: f for c, f in detected.items() if f not in taken} | mapping
    fills = {"commune_code": commune_code, "sheet_no": sheet_no}
    for required in parcel.KEY:
        if required not in detected and fills.get(required) is None:
            wanted = ", ".join(schemas.field_aliases()[required][:4])
            hint = f" or give {_FILLS[required]}" if required in _FILLS else ""
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
            columns[canonical] = convert(frame[source_name].reset_index(drop=True))
    if commune_code is not None:
        columns["commune_code"] = [code or commune_code for code in columns["commune_code"]]
    if sheet_no is not None:
        columns["sheet_no"] = columns["sheet_no"].fillna(sheet_no)
    if map_scale is not None:
        columns["map_scale"] = columns["map_scale"].fillna(map_scale)
    parcels = gpd.GeoDataFrame(columns, geometry=frame.geometry.values, crs=frame.crs)
    return parcels, {c: detected[c] for c in _CONVERTERS if c in detected}


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
