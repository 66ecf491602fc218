"""The reader's shortcuts keep its promises: every text value NFC, every record checked for
implausible text (ATTR_ENCODING), the same values as converting them one by one."""

from __future__ import annotations

import gc
import random
import unicodedata

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import Point

from landpipe import schemas, synth
from landpipe.errors import SourceError
from landpipe.sources import encoding as codecs
from landpipe.sources import fields, files, read_delivery, text

NAMES = ("Nguyễn Văn Hải", "Trần Thị Bích", "Lê Quang Đức", "Phạm Ngọc Ánh", "Võ Thị Sáu")
#: UTF-8 read as Windows-1252 twice over: nothing a Vietnamese name is made of.
GARBLED = "NguyÃ¡Â»â€¦n VÃ„Æ’n"
UTF8 = text.TextDecision("utf-8", "declared", 1.0, "UTF-8")


def _nfd(value: str | None) -> str | None:
    return None if value is None else unicodedata.normalize("NFD", value)


def _reference_findings(frame: pd.DataFrame, decision: text.TextDecision) -> set[tuple]:
    """What :func:`text.encoding_findings` documents, worked out record by record."""
    threshold = schemas.rules()["ATTR_ENCODING"].params["min_plausibility"]
    found = set()
    for name in text._text_columns(frame):
        values = [v if isinstance(v, str) else None for v in frame[name].tolist()]
        stride = max(1, len(values) // (4 * text.PLAUSIBILITY_SAMPLE))
        sample = [v for v in values[::stride] if v is not None and not v.isascii()]
        garbled = bool(sample) and (
            sum(map(codecs.plausibility, sample)) / len(sample) < text.GOOD_COLUMN
        )
        for row, value in enumerate(values):
            if value is None:
                continue
            checked = not value.isascii() if garbled else text._SUSPICIOUS.search(value)
            if checked and codecs.plausibility(value) < threshold:
                found.add((row, name, value))
    return found


def _frame(n: int, dtype: object, seed: int = 5) -> gpd.GeoDataFrame:
    """Owners that repeat, addresses that do not, a column in the wrong encoding; with
    missing, decomposed (NFD) and garbled values among them."""
    rng = random.Random(seed)
    owners: list[str | None] = [rng.choice(NAMES) for _ in range(n)]
    addresses: list[str | None] = [f"{i} Trần Hưng Đạo, phường Phú Thủy" for i in range(n)]
    for row in range(0, n, 7):
        owners[row] = _nfd(owners[row])
        addresses[row] = _nfd(addresses[row])
    for row in (3, n // 2, n - 1):
        owners[row] = GARBLED
    addresses[5] = "ABC\x01DEF"
    owners[1] = addresses[2] = None
    addresses[4] = ""
    wrong = [v.encode("utf-8").decode("cp1252", errors="replace") for v in NAMES]
    return gpd.GeoDataFrame(
        {
            "TenChu": pd.Series(owners, dtype=dtype),
            "DiaChi": pd.Series(addresses, dtype=dtype),
            "Ghi": pd.Series([wrong[i % len(wrong)] for i in range(n)], dtype=dtype),
            "So": np.arange(n),
        },
        geometry=[Point(0, 0)] * n,
    )


@pytest.mark.parametrize("dtype", ["str", object])
@pytest.mark.parametrize("n", [40, 3000])  # fewer and more records than text._PROBE
def test_nfc_checked_is_nfc_then_every_record_checked(n, dtype):
    frame = _frame(n, dtype)
    expected = {
        name: [None if v is None else unicodedata.normalize("NFC", v) for v in values]
        for name in ("TenChu", "DiaChi", "Ghi")
        for values in [[v if isinstance(v, str) else None for v in frame[name].tolist()]]
    }
    checked, findings = text.nfc_checked(frame.copy(), UTF8)
    for name, values in expected.items():
        assert checked[name].dtype == object
        assert checked[name].tolist() == values
    assert checked["So"].tolist() == list(range(n))
    reference = _reference_findings(pd.DataFrame(expected), UTF8)
    assert {(f.source_row, f.detail["field"], f.detail["text"]) for f in findings} == reference
    assert {(n - 1, "TenChu", GARBLED), (5, "DiaChi", "ABC\x01DEF")} <= reference
    assert any(name == "Ghi" for _, name, _ in reference)  # a column in the wrong encoding
    assert findings == sorted(findings, key=lambda f: (f.source_row, f.detail["field"]))
    assert text.encoding_findings(checked, UTF8) == findings
    assert text.nfc(frame.copy())[list(expected)].equals(checked[list(expected)])


def test_decomposed_utf8_text_comes_out_nfc(tmp_path):
    frame = synth.generate_delivery("22924", n_parcels=1500, seed=3, faults=False)
    for name in ("TenChu", "DiaChi"):
        frame[name] = [_nfd(v) if i % 3 else v for i, v in enumerate(frame[name].tolist())]
    path = synth.write_delivery(frame, tmp_path / "thua_dat.shp")
    delivery = read_delivery(path)
    assert delivery.text.encoding == "utf-8" and delivery.findings == []
    for delivered, canonical in (("TenChu", "owner_name"), ("DiaChi", "address")):
        values = delivery.attributes[delivered].tolist()
        assert values == [
            None if v is None else unicodedata.normalize("NFC", v) for v in frame[delivered]
        ]
        owners = delivery.parcels[canonical].dropna().tolist()
        assert owners and all(unicodedata.is_normalized("NFC", v) for v in owners)


def test_a_garbled_record_in_a_good_column_is_an_encoding_finding(tmp_path):
    frame = synth.generate_delivery("22924", n_parcels=1500, seed=4, faults=False)
    owners = frame["TenChu"].tolist()
    owners[700] = owners[1200] = GARBLED
    frame["TenChu"] = owners
    delivery = read_delivery(synth.write_delivery(frame, tmp_path / "thua_dat.shp"))
    assert [(f.rule_code, f.source_row, f.detail["field"]) for f in delivery.findings] == [
        ("ATTR_ENCODING", 700, "TenChu"),
        ("ATTR_ENCODING", 1200, "TenChu"),
    ]
    assert delivery.findings[0].detail["text"] == GARBLED


def test_text_of_plausible_characters_only_is_nfc():
    """nfc skips normalising such text: no plausible character changes under NFC or combines
    with a neighbour."""
    everything = "".join(map(chr, range(0x110000)))
    plausible = text._SUSPICIOUS.sub("", everything)
    assert 200 < len(plausible) < 300 and "\n" in plausible and "ễ" in plausible
    assert text._ALL_PLAUSIBLE.fullmatch(plausible)
    for char in plausible:
        assert unicodedata.normalize("NFC", char) == char and not unicodedata.combining(char)
    assert all(unicodedata.is_normalized("NFC", a + b) for a in plausible for b in plausible)


@given(st.text(alphabet=st.sampled_from("aăâeêđyỹ AĐ\n\t\x01\u0301€ª"), max_size=20))
def test_all_plausible_agrees_with_the_suspicious_character_search(value):
    whole = text._ALL_PLAUSIBLE.fullmatch(value) is not None
    assert whole == (text._SUSPICIOUS.search(value) is None)


def test_sample_text_is_the_raw_bytes_even_under_legacy_field_names(tmp_path):
    name = codecs.encode("Tên", "tcvn3").decode("latin1")
    owner = codecs.encode("Nguyễn Văn Hải", "tcvn3")
    frame = gpd.GeoDataFrame(
        {name: [owner.decode("latin1"), None], "So": ["12", "13"]},
        geometry=[Point(0, 0), Point(1, 1)],
        crs=4326,
    )
    pyogrio.write_dataframe(frame, tmp_path / "thua.shp", encoding="latin1")
    (tmp_path / "thua.cpg").unlink(missing_ok=True)
    source = files.open_source(tmp_path / "thua.shp")
    assert list(files.sample_text(source, "thua").values()) == [[owner], [b"12", b"13"]]

    utf8 = frame.assign(**{name: ["Nguyễn Văn Hải", None]}).rename(columns={name: "Ten"})
    synth.write_delivery(utf8, tmp_path / "utf8.shp")
    source = files.open_source(tmp_path / "utf8.shp")
    assert files.sample_text(source, "utf8")["Ten"] == ["Nguyễn Văn Hải".encode()]


@pytest.mark.parametrize("dtype", ["str", object])
def test_series_to_text_agrees_with_to_text(dtype):
    values = ["  Nguyễn Văn Hải ", _nfd("Trần Thị Bích"), None, "", "   ", "Lê\tĐức"]
    series = pd.Series(values, dtype=dtype)
    assert fields.series_to_text(series) == [fields.to_text(v) for v in values]
    plain = pd.Series([" a ", None, "b"], dtype=dtype)
    assert fields.series_to_text(plain) == ["a", None, "b"]


def test_land_use_codes_are_fresh_lists_and_the_collector_is_left_as_it_was():
    series = pd.Series(["ONT+CLN", "ONT+CLN", None], dtype=object)
    codes = fields.series_to_land_use_codes(series)
    assert codes == [["ONT", "CLN"], ["ONT", "CLN"], []]
    codes[0].append("LUK")
    assert codes[1] == ["ONT", "CLN"]
    assert gc.isenabled()
    gc.disable()
    try:
        fields.series_to_land_use_codes(series)
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "values",
    [["22924", None, 22924.0, "x", "22924"], [None, None], ["1", "2", "1"], [7, "07", 7.5]],
)
def test_commune_codes_and_numbers_agree_with_the_scalar_converters(values):
    series = pd.Series(values, dtype=object)
    codes = fields.series_to_commune_code(series)
    assert codes.dtype == object
    assert codes.tolist() == [fields.to_commune_code(v) for v in values]
    scales = fields.series_to_map_scale(series)
    assert str(scales.dtype) == "Int64"
    assert scales.astype(object).where(scales.notna(), None).tolist() == [
        fields.to_map_scale(v) for v in values
    ]


def test_read_delivery_fingerprints_the_files_it_reads(tmp_path):
    frame = synth.generate_delivery("22924", n_parcels=50, seed=6, faults=False)
    path = synth.write_delivery(frame, tmp_path / "thua_dat.shp")
    delivery = read_delivery(path)
    assert delivery.source == files.open_source(path)
    assert delivery.source.sha256 == files.fingerprint(path) != ""
    with pytest.raises(SourceError, match="no such file"):
        read_delivery(tmp_path / "missing.shp")


def _vni_read_as_tcvn3(value: str) -> str:
    """VNI-Windows bytes decoded as TCVN3: mojibake of Vietnamese letters only."""
    return codecs.decode(codecs.encode(value, "vni"), "tcvn3")


@pytest.mark.parametrize("n", [40, 3000])
def test_arrow_text_of_plausible_characters_is_kept_as_read_and_still_checked(n):
    """A column of Arrow strings of plausible characters only is NFC already: it is handed
    on as read, with no Python string per record. Its sample is still read for plausibility,
    so a column in the wrong encoding whose mojibake is all Vietnamese letters is checked
    record by record, as the reference does."""
    rng = random.Random(11)
    owners: list[str | None] = [rng.choice(NAMES) for _ in range(n)]
    owners[1] = None
    garbled = [_vni_read_as_tcvn3(rng.choice(NAMES)) for _ in range(n)]
    assert all(text._ALL_PLAUSIBLE.fullmatch(v) for v in garbled)
    frame = gpd.GeoDataFrame(
        {"TenChu": pd.Series(owners, dtype="str"), "Ghi": pd.Series(garbled, dtype="str")},
        geometry=[Point(0, 0)] * n,
    )
    assert all(text._TextColumn.of(frame[name]).kept for name in ("TenChu", "Ghi"))
    checked, findings = text.nfc_checked(frame.copy(), UTF8)
    assert checked["TenChu"].dtype == "str" and checked["TenChu"].equals(frame["TenChu"])
    reference = _reference_findings(pd.DataFrame({"TenChu": owners, "Ghi": garbled}), UTF8)
    assert {(f.source_row, f.detail["field"], f.detail["text"]) for f in findings} == reference
    assert reference and {name for _, name, _ in reference} == {"Ghi"}
    # A text that is no plausible Vietnamese is not kept: it is listed, and normalised.
    owners[2] = _nfd(owners[2])
    assert not text._TextColumn.of(pd.Series(owners, dtype="str"), normalise=True).kept
