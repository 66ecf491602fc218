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

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa

from landpipe import schemas
from landpipe.errors import SourceError
from landpipe.schemas.findings import Finding
from landpipe.sources import encoding as codecs
from landpipe.sources.fields import is_nfc, values_bytes
from landpipe.sources.files import Source, declared_encoding, sample_text
from landpipe.sources.records import RecordDigests, read_digested

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
#: The characters of plausible Vietnamese text, and "\n" (which joins values to check them in
#: one pass). None of them is decomposed or combines with another (checked in
#: ``tests/test_reading_speedups.py``), so text made of them only is NFC.
_PLAUSIBLE = (
    "\n\x20-\x7eÀ-ÃÈ-ÊÌÍÒ-ÕÙÚÝà-ãè-êìíò-õùúýĂăĐđĨĩŨũƠơƯưẠ-ỹ\u2018\u2019\u201c\u201d\u2013°²"
)
#: Characters that plausible Vietnamese text does not contain: a value holding one is checked.
_SUSPICIOUS = re.compile(f"[^{_PLAUSIBLE}]")
#: Text of plausible characters only (matching the class repeatedly is twice as fast as
#: searching for its complement).
_ALL_PLAUSIBLE = re.compile(f"[{_PLAUSIBLE}]*")
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
        raw for values in sample_text(source, layer).values() for raw in values if not raw.isascii()
    ][:SAMPLE_VALUES]
    if not samples:
        return TextDecision(
            declared or "utf-8", "declared" if declared else "detected", 1.0, declared_raw
        )
    guess = codecs.detect(samples, declared)
    how = "declared" if declared == guess.encoding else "detected"
    return TextDecision(guess.encoding, how, round(float(guess.confidence), 3), declared_raw)


def read_dbf_layer(
    source: Source, layer: str, decision: TextDecision, *, digested: bool = False
) -> tuple[gpd.GeoDataFrame, list[Finding], pa.Table, RecordDigests | None]:
    """Read a Shapefile layer, decoding its text as ``decision`` says, to NFC.

    Returns the layer, its ``ATTR_ENCODING`` findings (see :func:`encoding_findings`), the
    records as read (:func:`landpipe.sources.files.read_records`) and, if ``digested``, their
    digests, under way since before the text was decoded.
    """
    if decision.encoding == "utf-8":
        try:
            frame, records, digests = read_digested(
                source, layer, encoding="UTF-8", digested=digested
            )
            return (*nfc_checked(frame, decision), records, digests)
        except pa.ArrowException:
            # Some records are not UTF-8 after all (a few names typed in TCVN3 into a UTF-8
            # file): read the bytes and decode them here, so those records become findings.
            pass
    frame, records, digests = read_digested(source, layer, encoding="latin1", digested=digested)
    frame = codecs.decode_frame_text(frame, decision.encoding, _text_columns(frame))
    return frame, encoding_findings(frame, decision), records, digests


def _text_columns(frame: pd.DataFrame) -> list[str]:
    """Columns of text (a column of other objects, such as a DXF's style maps, is not)."""
    geometry = getattr(frame, "_geometry_column_name", None)
    columns = []
    for name in frame.columns:
        if name == geometry:
            continue
        column = frame[name]
        if column.dtype == object:
            if _only_strings(column):
                columns.append(name)
        elif pd.api.types.is_string_dtype(column):
            columns.append(name)
    return columns


def _only_strings(column: pd.Series) -> bool:
    """Whether every value of an object column that is not missing is a ``str``."""
    if set(map(type, column.tolist())) <= {str, type(None)}:  # as :func:`nfc` leaves them
        return True
    return bool(column.dropna().map(type).eq(str).all())


#: Records looked at to tell a column whose values repeat from one whose values hardly do.
_PROBE = 1000


class _TextColumn:
    """A text column as Python strings and, per record, the index of its text among them (-1
    when missing). Values that repeat (communes, land uses, owners) are listed, converted and
    checked once each; where they hardly repeat (addresses), each record's text is listed.
    ``plausible``: every text is of plausible characters only.

    A column of Arrow strings of plausible characters only is NFC already and stays as it is
    (``kept``): its texts are listed only if a check asks for them, which one that finds its
    sample plausible does not.
    """

    def __init__(
        self,
        column: pd.Series,
        texts: list[str] | None,
        codes: np.ndarray | None,
        plausible: bool,
    ) -> None:
        self.column = column
        self.kept = texts is None
        self._texts, self._codes = texts, codes
        self.plausible = plausible

    @classmethod
    def of(cls, column: pd.Series, *, normalise: bool = False) -> _TextColumn:
        """The values of ``column`` (NFC-normalised if ``normalise``)."""
        if _arrow_plausible(column):
            return cls(column, None, None, True)
        texts, codes = _listed(column)
        plausible = _all_plausible(texts)
        # Text of plausible characters only is NFC already (see _PLAUSIBLE).
        if normalise and not plausible and not is_nfc(texts):
            texts = [unicodedata.normalize("NFC", text) for text in texts]
            plausible = _all_plausible(texts)
        return cls(column, texts, codes, plausible)

    def __len__(self) -> int:
        """Records, missing text included."""
        return len(self.column)

    @property
    def texts(self) -> list[str]:
        return self._listing()[0]

    @property
    def codes(self) -> np.ndarray:
        return self._listing()[1]

    def _listing(self) -> tuple[list[str], np.ndarray]:
        """The texts and codes, listed the first time a kept column is asked for them."""
        if self._texts is None:
            self._texts, self._codes = _listed(self.column)
        return self._texts, self._codes

    def series(self, index: pd.Index) -> pd.Series:
        """The records' values: a kept column as it is; else Python strings (None for
        missing) in an object column."""
        if self.kept:
            return self.column
        lookup = np.array([*self.texts, None], dtype=object)  # code -1 picks the None
        return pd.Series(lookup[self.codes], index=index, dtype=object)

    def sample(self, stride: int) -> list[str]:
        """The values of every ``stride``-th record, skipping missing ones."""
        if self.kept:
            return pa.array(self.column.array)[::stride].drop_null().to_pylist()
        return [self.texts[code] for code in self.codes[::stride].tolist() if code >= 0]

    def rows(self, which: list[int]) -> np.ndarray:
        """The records (0-based, in order) whose text is one of ``texts[which]``."""
        chosen = np.zeros(len(self.texts) + 1, dtype=bool)
        chosen[which] = True
        return np.flatnonzero(chosen[self.codes])


def _listed(column: pd.Series) -> tuple[list[str], np.ndarray]:
    """The texts of ``column`` and each record's index among them (-1 when missing): each
    distinct text once where values repeat, else each record's."""
    probe = column.iloc[:_PROBE]
    if probe.nunique() < 0.9 * probe.count():  # values repeat: list each once
        codes, distinct = pd.factorize(column, use_na_sentinel=True)
        return distinct.tolist(), codes
    present = column.notna().to_numpy()  # factorizing would find little to share
    return column[present].tolist(), np.where(present, np.cumsum(present) - 1, -1)


def _arrow_plausible(column: pd.Series) -> bool:
    """Whether ``column`` holds Arrow strings of plausible characters only: one regex pass
    over each chunk's text bytes, no Python string per record. (Bytes that are no UTF-8 are
    left to the listing, which fails on them as it did.)"""
    if not isinstance(column.array, pd.arrays.ArrowStringArray):
        return False
    values = pa.array(column.array)
    for chunk in values.chunks if isinstance(values, pa.ChunkedArray) else [values]:
        try:
            text = str(values_bytes(chunk), "utf-8")
        except UnicodeDecodeError:
            return False
        if _ALL_PLAUSIBLE.fullmatch(text) is None:
            return False
    return True


def nfc(frame):
    """Text columns NFC-normalised: as Python strings (None for missing) in object columns,
    or, Arrow text of plausible characters only (NFC already), as it is.

    Converting once here keeps the later passes (checks, mapping) cheap.
    """
    for name in _text_columns(frame):
        frame[name] = _TextColumn.of(frame[name], normalise=True).series(frame.index)
    return frame


def nfc_checked(frame: pd.DataFrame, decision: TextDecision) -> tuple[pd.DataFrame, list[Finding]]:
    """:func:`nfc`, then :func:`encoding_findings` on the result, reading each column once.

    Each text column is converted to Python strings once, and a value that repeats is
    normalised and checked once.
    """
    columns = {name: _TextColumn.of(frame[name], normalise=True) for name in _text_columns(frame)}
    for name, column in columns.items():
        frame[name] = column.series(frame.index)
    return frame, _findings(columns, decision)


def encoding_findings(frame: pd.DataFrame, decision: TextDecision) -> list[Finding]:
    """``ATTR_ENCODING`` for each record whose text decodes to nothing plausible.

    Every value holding a character Vietnamese text does not use is checked. When a sample of
    a column's non-ASCII values is not plausible as a whole (the wrong encoding, whose
    mojibake may consist of Vietnamese letters only), every non-ASCII value is checked.
    """
    columns = {name: _TextColumn.of(frame[name]) for name in _text_columns(frame)}
    return _findings(columns, decision)


def _all_plausible(texts: list[str]) -> bool:
    """Whether the texts hold plausible characters only (one regex pass)."""
    return _ALL_PLAUSIBLE.fullmatch("\n".join(texts)) is not None


def _suspicious(texts: list[str]) -> list[int]:
    """Indices of the texts holding a character plausible Vietnamese does not (one regex pass)."""
    joined = "\n".join(texts)
    starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
    hits = [m.start() for m in _SUSPICIOUS.finditer(joined)]
    return sorted(set((np.searchsorted(starts, hits, side="right") - 1).tolist()))


def _findings(columns: dict[str, _TextColumn], decision: TextDecision) -> list[Finding]:
    """:func:`encoding_findings` for text columns already read."""
    threshold = schemas.rules()["ATTR_ENCODING"].params["min_plausibility"]
    findings = []
    for name, column in columns.items():
        stride = max(1, len(column) // (4 * PLAUSIBILITY_SAMPLE))
        sample = [v for v in column.sample(stride) if not v.isascii()]
        if sample and sum(map(codecs.plausibility, sample)) / len(sample) < GOOD_COLUMN:
            checked = [i for i, v in enumerate(column.texts) if not v.isascii()]
        else:
            checked = [] if column.plausible else _suspicious(column.texts)
        texts = [column.texts[i] for i in checked]
        implausible = [checked[i] for i in codecs.undecodable(texts, threshold)]
        for row in column.rows(implausible).tolist() if implausible else []:
            text = column.texts[column.codes[row]]
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
