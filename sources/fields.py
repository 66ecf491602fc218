"""Map a delivery's fields onto the canonical parcel and normalise their values."""

from __future__ import annotations

import math
import re
import unicodedata
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


def to_int(value: Any) -> int | None:
    """A key number as delivered (``"05"``, ``5.0``, ``5``) as an int; None when unreadable."""
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


def json_value(value: Any) -> Any:
    """A delivered attribute value as something JSON can hold."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
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


_CONVERTERS = {
    "commune_code": to_commune_code,
    "sheet_no": to_int,
    "parcel_no": to_int,
    "land_use_codes": to_land_use_codes,
    "declared_area_m2": to_area,
    "legal_area_m2": to_area,
    "owner_name": to_text,
    "address": to_text,
}


def map_fields(
    frame: gpd.GeoDataFrame, *, commune_code: str | None = None
) -> tuple[gpd.GeoDataFrame, dict[str, str]]:
    """Map a delivered layer onto the canonical parcel.

    Parameters
    ----------
    frame
        The layer as read, with the delivery's own field names.
    commune_code
        Commune of the delivery, used for records whose commune field is blank or absent.

    Returns
    -------
    parcels, mapping
        One row per delivered record, in delivery order: ``source_row``, the canonical
        attributes (missing keys as ``<NA>``), ``extra`` (unmapped fields), ``delivered``
        (every field as read) and the geometry; and canonical field -> delivered field name.

    Raises
    ------
    FieldError
        The layer has no parcel-number or sheet-number field, or no commune field and no
        ``commune_code`` was given.
    """
    fields = [name for name in frame.columns if name != frame.geometry.name]
    mapping = match_fields(fields)
    for required, option in (
        ("parcel_no", None),
        ("sheet_no", None),
        ("commune_code", commune_code),
    ):
        if required not in mapping and option is None:
            wanted = ", ".join(schemas.field_aliases()[required][:4])
            hint = " or give --commune" if required == "commune_code" else ""
            raise FieldError(
                f"no {required} field (such as {wanted}) among the delivered fields "
                f"{', '.join(fields) or '(none)'}{hint}"
            )
    records = frame[fields].to_dict("records")
    delivered = [{name: json_value(value) for name, value in record.items()} for record in records]
    mapped_names = set(mapping.values())
    columns: dict[str, Any] = {parcel.SOURCE_ROW: np.arange(len(frame), dtype="int64")}
    for canonical, convert in _CONVERTERS.items():
        source_name = mapping.get(canonical)
        values = [convert(r[source_name]) for r in records] if source_name else [None] * len(frame)
        columns[canonical] = values
    if commune_code is not None:
        columns["commune_code"] = [code or commune_code for code in columns["commune_code"]]
    for key in ("sheet_no", "parcel_no"):
        columns[key] = pd.array(columns[key], dtype="Int64")
    for area in ("declared_area_m2", "legal_area_m2"):
        columns[area] = np.array(
            [np.nan if v is None else v for v in columns[area]], dtype="float64"
        )
    columns[parcel.EXTRA] = [
        {name: value for name, value in row.items() if name not in mapped_names}
        for row in delivered
    ]
    columns[parcel.DELIVERED] = delivered
    parcels = gpd.GeoDataFrame(columns, geometry=frame.geometry.values, crs=frame.crs)
    return parcels, mapping
