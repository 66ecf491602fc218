"""Decide how a delivery's attribute text is encoded, and decode it to NFC Unicode.

Shapefile DBFs carry bytes with no reliable encoding: a ``.cpg`` may be missing or lie, and
cadastral data often holds TCVN3 or VNI-Windows text. landpipe samples the raw bytes, scores
each candidate encoding by how plausible the decoded Vietnamese is (``sources/encoding.py``)
and records which one it chose, how sure it was, and whether it was declared, detected or
given with ``--encoding``. Formats that store Unicode (GeoPackage, FileGDB, GeoJSON) are
taken as they are. Values that decode to nothing plausible become ``ATTR_ENCODING`` findings.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd

from landpipe import schemas
from landpipe.errors import SourceError
from landpipe.schemas.findings import Finding
from landpipe.sources import encoding as codecs
from landpipe.sources.files import Source, declared_encoding, read_layer, sample_text

#: Names a .cpg or --encoding may use, normalised to landpipe's encodings.
_ALIASES = {
    "utf8": "utf-8",
    "utf-8": "utf-8",
    "65001": "utf-8",
    "unicode": "utf-8",
    "cp1258": "cp1258",
    "1258": "cp1258",
    "windows-1258": "cp1258",
    "windows1258": "cp1258",
    "ansi 1258": "cp1258",
    "tcvn3": "tcvn3",
    "tcvn": "tcvn3",
    "abc": "tcvn3",
    "tcvn5712-1": "tcvn3",
    "tcvn-5712": "tcvn3",
    "vni": "vni",
    "vni-windows": "vni",
    "vniwindows": "vni",
}
#: Characters that plausible Vietnamese text does not contain: a value holding one is checked.
_SUSPICIOUS = re.compile(
    "[^\n\x20-\x7eÀ-ÃÈ-ÊÌÍÒ-ÕÙÚÝà-ãè-êìíò-õùúýĂăĐđĨĩŨũƠơƯưẠ-ỹ\u2018\u2019\u201c\u201d\u2013°²]"
)
#: Text values sampled to detect an encoding.
SAMPLE_VALUES = 3000
#: Non-ASCII values per column whose mean plausibility tells a good column from a garbled one.
PLAUSIBILITY_SAMPLE = 300
GOOD_COLUMN = 0.9


@dataclass(frozen=True)
class TextDecision:
    """The encoding a delivery's text was decoded from, and how it was decided.

    ``how`` is ``option`` (``--encoding``), ``declared`` (a ``.cpg`` that the text agrees
    with), ``detected`` (scored from the text, the ``.cpg`` missing or overruled) or
    ``format`` (the format stores Unicode). ``declared`` is what the ``.cpg`` said.
    """

    encoding: str
    how: str
    confidence: float = 1.0
    declared: str | None = None


def normalise_encoding(name: str | None) -> str | None:
    """A .cpg or --encoding name as one of landpipe's encodings, or None when unknown."""
    if not name:
        return None
    return _ALIASES.get(name.strip().lower())


def parse_option(name: str) -> str:
    """``--encoding`` value, checked."""
    encoding = normalise_encoding(name)
    if encoding is None:
        known = ", ".join(codecs.ENCODINGS)
        raise SourceError(f"--encoding {name!r} is not one landpipe decodes ({known})")
    return encoding


def decide(source: Source, layer: str, option: str | None = None) -> TextDecision:
    """Decide the encoding of a DBF-backed layer (Shapefile) before reading it."""
    declared_raw = declared_encoding(source, layer)
    declared = normalise_encoding(declared_raw)
    if option is not None:
        return TextDecision(parse_option(option), "option", 1.0, declared_raw)
    samples = [
        raw
        for values in sample_text(source, layer).values()
        for raw in values
        if any(byte > 0x7F for byte in raw)
    ][:SAMPLE_VALUES]
    if not samples:
        return TextDecision(
            declared or "utf-8", "declared" if declared else "detected", 1.0, declared_raw
        )
    guess = codecs.detect(samples, declared)
    how = "declared" if declared == guess.encoding else "detected"
    return TextDecision(guess.encoding, how, round(float(guess.confidence), 3), declared_raw)


def read_dbf_layer(source: Source, layer: str, decision: TextDecision):
    """Read a Shapefile layer, decoding its text as ``decision`` says, to NFC."""
    if decision.encoding == "utf-8":
        return nfc(read_layer(source, layer, encoding="UTF-8"))
    frame = read_layer(source, layer, encoding="latin1")
    return codecs.decode_frame_text(frame, decision.encoding, _text_columns(frame))


def _text_columns(frame: pd.DataFrame) -> list[str]:
    """Columns of text (a column of other objects, such as a DXF's style maps, is not)."""
    geometry = getattr(frame, "_geometry_column_name", None)
    columns = []
    for name in frame.columns:
        if name == geometry:
            continue
        column = frame[name]
        if column.dtype == object:
            if column.dropna().map(type).eq(str).all():
                columns.append(name)
        elif pd.api.types.is_string_dtype(column):
            columns.append(name)
    return columns


def nfc(frame):
    """Text columns NFC-normalised, as Python strings (None for missing) in object columns.

    Converting once here keeps the later passes (checks, mapping) cheap.
    """
    for name in _text_columns(frame):
        values = [v if isinstance(v, str) else None for v in frame[name].tolist()]
        joined = "\n".join(v for v in values if v is not None)
        if not (joined.isascii() or unicodedata.is_normalized("NFC", joined)):
            values = [None if v is None else unicodedata.normalize("NFC", v) for v in values]
        frame[name] = pd.Series(values, index=frame.index, dtype=object)
    return frame


def _suspicious_rows(column: pd.Series) -> list[int]:
    """Rows whose text holds a character plausible Vietnamese does not (one regex pass)."""
    if _SUSPICIOUS.search("\n".join(column.dropna().tolist())) is None:
        return []
    texts = ["" if not isinstance(v, str) else v for v in column.tolist()]
    joined = "\n".join(texts)
    starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
    hits = [m.start() for m in _SUSPICIOUS.finditer(joined)]
    return sorted(set(np.searchsorted(starts, hits, side="right") - 1))


def encoding_findings(frame: pd.DataFrame, decision: TextDecision) -> list[Finding]:
    """``ATTR_ENCODING`` for each record whose text decodes to nothing plausible.

    Every value holding a character Vietnamese text does not use is checked. When a sample of
    a column's non-ASCII values is not plausible as a whole (the wrong encoding, whose
    mojibake may consist of Vietnamese letters only), every non-ASCII value is checked.
    """
    threshold = schemas.rules()["ATTR_ENCODING"].params["min_plausibility"]
    findings = []
    for name in _text_columns(frame):
        values = frame[name].tolist()
        stride = max(1, len(values) // (4 * PLAUSIBILITY_SAMPLE))
        sample = [v for v in values[::stride] if isinstance(v, str) and not v.isascii()]
        if sample and sum(map(codecs.plausibility, sample)) / len(sample) < GOOD_COLUMN:
            rows = [i for i, v in enumerate(values) if isinstance(v, str) and not v.isascii()]
        else:
            rows = _suspicious_rows(frame[name])
        if not rows:
            continue
        texts = [str(values[row]) for row in rows]
        for index in codecs.undecodable(texts, threshold):
            row, text = rows[index], texts[index]
            findings.append(
                Finding(
                    rule_code="ATTR_ENCODING",
                    message=(
                        f"record {row}: field {name} {text[:40]!r} is not plausible "
                        f"Vietnamese when decoded as {decision.encoding}"
                    ),
                    source_row=int(row),
                    detail={"field": name, "encoding": decision.encoding, "text": text[:200]},
                )
            )
    return sorted(findings, key=lambda f: (f.source_row, f.detail["field"]))
