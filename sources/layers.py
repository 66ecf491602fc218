"""Read a delivery's parcel layer: choose it, decode its text, build polygons from linework."""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import pyarrow as pa

from landpipe.schemas.findings import Finding
from landpipe.sources import text
from landpipe.sources.files import Source, choose_layer
from landpipe.sources.records import RecordDigests, read_digested

#: Drivers whose text has no encoding of its own and is read as raw bytes.
_BYTE_TEXT_DRIVERS = {"ESRI Shapefile"}


@dataclass
class RawLayer:
    """The parcel layer as delivered: its records (text decoded), before field mapping.

    ``records``: the same records as GDAL handed them over (one row per row of ``frame``),
    whose hashes tell a re-delivered record from the one loaded before; None for parcels
    built from linework, which are no delivered records. ``digests``: theirs, under way since
    the records were read.
    """

    layer: str
    frame: gpd.GeoDataFrame
    text: text.TextDecision
    findings: list[Finding] = field(default_factory=list)
    linework: bool = False
    records: pa.Table | None = None
    digests: RecordDigests | None = None


def _read_decoded(
    source: Source, layer: str, encoding: str | None, *, digested: bool = False
) -> tuple[gpd.GeoDataFrame, text.TextDecision, list[Finding], pa.Table, RecordDigests | None]:
    """Read ``layer`` with its text decoded to NFC: the frame, the text decision, the
    ``ATTR_ENCODING`` findings on its text, the records as read and, if ``digested``, their
    digests under way (started before the text is decoded)."""
    if source.driver in _BYTE_TEXT_DRIVERS:
        decision = text.decide(source, layer, encoding)
        frame, findings, records, digests = text.read_dbf_layer(
            source, layer, decision, digested=digested
        )
    else:
        decision = text.TextDecision(
            text.parse_option(encoding) if encoding else "utf-8",
            "option" if encoding else "format",
        )
        frame, records, digests = read_digested(source, layer, digested=digested)
        frame, findings = text.nfc_checked(frame, decision)
    return frame, decision, findings, records, digests


def read_parcel_layer(
    source: Source,
    *,
    layer: str | None = None,
    encoding: str | None = None,
    commune_code: str | None = None,
    sheet_no: int | None = None,
) -> RawLayer:
    """Choose the parcel layer of ``source``, read it and decode its text.

    Drawings (DXF, DGN) and line layers are turned into parcel polygons from their boundary
    lines and label texts (``sources/linework.py``); the result has canonical column names.
    """
    chosen = choose_layer(source, layer)
    frame, decision, findings, records, digests = _read_decoded(
        source, chosen.name, encoding, digested=not chosen.linework
    )
    if not chosen.linework:
        return RawLayer(chosen.name, frame, decision, findings, records=records, digests=digests)
    from landpipe.sources import linework

    for finding in findings:  # rows of the drawing, not parcels: keep the row in the detail
        finding.detail["drawing_row"] = finding.source_row
        finding.source_row = None
    labels = None
    if chosen.labels is not None:
        labels, _, _, _, _ = _read_decoded(source, chosen.labels, encoding)
    parcels, drawn = linework.read_linework(
        frame, labels=labels, driver=source.driver, commune_code=commune_code, sheet_no=sheet_no
    )
    return RawLayer(chosen.name, parcels, decision, findings + drawn, linework=True)
