"""Legacy Vietnamese text encodings: tables, round trips, plausibility and detection."""

from __future__ import annotations

import random
import subprocess
import unicodedata
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point

from landpipe.sources.encoding import (
    ENCODINGS,
    LETTERS,
    EncodingGuess,
    decode,
    decode_frame_text,
    detect,
    encode,
    plausibility,
    undecodable,
)

NAMES = [
    "Nguyễn Thị Ánh Tuyết",
    "Đặng Hữu Phước",
    "Huỳnh Ngọc Ẩn",
    "Trần Quốc Toản",
    "Lê Văn Tám",
    "Phạm Thị Hồng Nhung",
    "Võ Thành Đạt",
    "Hoàng Minh Khuê",
    "Bùi Xuân Trường",
    "Đỗ Thị Yến",
    "Hồ Sỹ Dũng",
    "Ngô Quang Vinh",
    "Dương Thị Thúy Hằng",
    "Lý Công Uẩn",
    "Trịnh Đình Khải",
    "Phan Bội Châu",
    "Vũ Thị Ngọc Diệp",
    "Đinh Tiên Hoàng",
    "Lương Thế Vinh",
    "Tạ Quang Bửu",
    "Mai Thị Ơn",
    "Khúc Thừa Dụ",
    "Quách Thị Ửng",
    "Châu Văn Liêm",
    "Âu Dương Ẩn",
    "Ông Ích Khiêm",
    "Ưng Văn Ỷ",
    "Nguyễn Thị Ẽm",
    "Lâm Thị Ẹn",
    "Tôn Nữ Ý Nhi",
]
ADDRESSES = [
    "Phường Phú Thủy, thành phố Phan Thiết, tỉnh Bình Thuận",
    "Ấp Thạnh Mỹ, xã Hàm Thạnh",
    "Thôn Đông Yên, xã Ỷ La, huyện Sơn Dương",
    "Tổ 5, khu phố Ông Ích, phường Ô Chợ Dừa, quận Đống Đa",
    "Xóm Ấm, xã Ân Hảo, huyện Hoài Ân, tỉnh Bình Định",
    "Số 12 đường Ỷ Lan, thị trấn Ea Kar",
    "Đất trồng cây lâu năm, thửa số 37, tờ bản đồ số 8",
]
#: The 67 lowercase letters outside ASCII, written out (not generated, unlike the module's).
LOWER = "àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ"
ALPHABET = LOWER + LOWER.upper()
#: Toned capitals: TCVN 5712 VN1 gives each a byte (0x80-0x9F, C0 positions, VN2 positions).
TONED_CAPITALS = frozenset(c for c in LOWER.upper() if c not in "ĂÂÊÔƠƯĐ")
CORPUS = [*NAMES, *ADDRESSES, *(text.upper() for text in NAMES + ADDRESSES), ALPHABET]


def tcvn3_expected(text: str) -> str:
    return text


def cp1252_view(raw: bytes) -> str:
    """Bytes as a cp1252 viewer shows them (Latin-1 for the bytes cp1252 leaves undefined)."""
    return "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in raw)


def test_alphabet_is_the_134_letters() -> None:
    assert len(LOWER) == 67 and len(set(ALPHABET)) == 134
    assert set(LETTERS) == set(ALPHABET)
    assert len(TONED_CAPITALS) == 60
    assert set(ALPHABET) <= set("".join(CORPUS))


# --- tables ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        # DOMAIN.md anchors.
        (b"\xb5\xb8\xb6\xb7\xb9", "àáảãạ"),
        (b"\xa8\xa9\xaa\xab\xac\xad\xae", "ăâêôơưđ"),
        (b"\xa1\xa2\xa3\xa4\xa5\xa6\xa7", "ĂÂÊÔƠƯĐ"),
        # Published TCVN3 samples.
        ("TiÕng ViÖt rÊt hay".encode("latin1"), "Tiếng Việt rất hay"),
        ("hép møt tÕt".encode("latin1"), "hộp mứt tết"),
        ("B¶o Th¾ng, M\xadêng Kh\xad¬ng".encode("latin1"), "Bảo Thắng, Mường Khương"),
    ],
)
def test_tcvn3_known_bytes(raw: bytes, text: str) -> None:
    assert decode(raw, "tcvn3") == text


def test_tcvn3_table_matches_glibc_iconv() -> None:
    """glibc's TCVN5712-1 is VN1 (VN3 plus the toned capitals): landpipe decodes every byte
    0x80-0xFF as it does, capitals in 0x80-0x9F included."""
    high = bytes(range(0x80, 0x100))
    # One byte a line, so that glibc does not compose 0xB0-0xB4 with the byte before.
    out = subprocess.run(
        ["iconv", "-f", "TCVN5712-1", "-t", "UTF-8"],
        input=b"\n".join(bytes([b]) for b in high),
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8")
    glibc = dict(zip(high, out.split("\n"), strict=True))
    ours = {b: decode(bytes([b]), "tcvn3") for b in high}
    for byte in range(0x80, 0x100):
        assert unicodedata.normalize("NFC", glibc[byte]) == ours[byte], hex(byte)
    differ = {b for b in high if unicodedata.normalize("NFC", glibc[b]) != ours[b]}
    assert differ <= set(range(0x80, 0xA0))
    # Every lowercase letter has a byte of its own that glibc agrees with.
    for letter in LOWER + "ĂÂÊÔƠƯĐ":
        (byte,) = encode(letter, "tcvn3")
        assert byte >= 0xA1 and glibc[byte] == letter


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        # DOMAIN.md anchors.
        (b"a\xf9 a\xf8 a\xfb a\xf5 a\xef a\xe2 a\xea", "á à ả ã ạ â ă"),
        (b"\xf4 \xf6 \xf1 \xd1 \xe6 \xf3 \xf2 \xee", "ơ ư đ Đ ỉ ĩ ị ỵ"),
        (b"a\xe1 a\xe0 a\xe5 a\xe3 a\xe4", "ấ ầ ẩ ẫ ậ"),
        (b"a\xe9 a\xe8 a\xfa a\xfc a\xeb", "ắ ằ ẳ ẵ ặ"),
        (b"A\xd9 \xd4\xd9 \xd6\xcf \xcd \xcc \xce", "Á Ớ Ự Í Ì Ỵ"),
        # Published VNI samples.
        ("Xin chaøo caùc baïn".encode("latin1"), "Xin chào các bạn"),
        ("Tieáng Vieät raát hay".encode("latin1"), "Tiếng Việt rất hay"),
        ("Ñaø Naüng, saün coù".encode("latin1"), "Đà Nẵng, sẵn có"),
        # Spellings some converters write (read, never written).
        ("kieám hiù yï".encode("latin1"), "kiếm hí ỵ"),
    ],
)
def test_vni_known_bytes(raw: bytes, text: str) -> None:
    assert decode(raw, "vni") == text


def test_vni_spells_every_letter_as_base_plus_at_most_one_mark() -> None:
    for letter in ALPHABET:
        spelling = encode(letter, "vni").decode("latin1")
        if len(spelling) == 2:
            base = unicodedata.normalize("NFD", letter)[0]
            assert spelling[0] == base or spelling[0] in "ôöÔÖ", letter  # ơ ư take a tone mark
        else:
            assert len(spelling) == 1 and not spelling.isascii(), letter


def test_cp1258_decodes_combining_tones_to_nfc() -> None:
    assert decode(b"Vi\xea\xf2t Nam", "cp1258") == "Việt Nam"
    assert encode("Việt", "cp1258") == b"Vi\xea\xf2t"
    assert decode(b"\xd0\xe3\xeck L\xe3\xeck", "cp1258") == "Đắk Lắk"
    assert decode(b"\xd0a\xcc\xd0\xe0", "cp1258") == "ĐàĐà"  # combining or precomposed


@pytest.mark.parametrize("encoding", ["cp1258", "tcvn3", "vni"])
def test_every_byte_decodes_in_single_byte_encodings(encoding: str) -> None:
    text = decode(bytes(range(256)), encoding)
    assert unicodedata.is_normalized("NFC", text)


def test_utf8_is_strict_and_unknown_names_refused() -> None:
    with pytest.raises(UnicodeDecodeError):
        decode(b"Nguy\xeaTn", "utf-8")
    with pytest.raises(ValueError, match="unknown encoding"):
        decode(b"abc", "cp1252")
    with pytest.raises(ValueError, match="unknown encoding"):
        encode("abc", "latin1")


@pytest.mark.parametrize("encoding", ["cp1258", "tcvn3", "vni"])
def test_encode_refuses_what_the_encoding_cannot_hold(encoding: str) -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        encode("Nguyễn 中", encoding)


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "cp1258", "vni"])
@pytest.mark.parametrize("text", CORPUS)
def test_round_trip(text: str, encoding: str) -> None:
    assert decode(encode(text, encoding), encoding) == text


@pytest.mark.parametrize("text", CORPUS)
def test_tcvn3_round_trip_keeps_toned_capitals(text: str) -> None:
    assert decode(encode(text, "tcvn3"), "tcvn3") == text


def test_tcvn3_capitals_use_vn1_bytes_and_abc_capitals_read_lowercase() -> None:
    assert encode("ÁNH TUYẾT", "tcvn3") == b"\x83NH TUY\xda" + b"T"
    assert decode(encode("ĐẶNG Ư", "tcvn3"), "tcvn3") == "ĐẶNG Ư"
    # Text typed with the ABC .VnTimeH fonts writes a capital with the lowercase byte.
    assert decode(b"\xb8NH", "tcvn3") == "áNH"


_VIETNAMESE_TEXT = st.text(alphabet=st.sampled_from(ALPHABET + " 0123456789"), max_size=40)


@settings(max_examples=150, deadline=None)
@given(_VIETNAMESE_TEXT)
def test_alphabet_round_trips(text: str) -> None:
    for encoding in ("utf-8", "cp1258", "vni"):
        assert decode(encode(text, encoding), encoding) == text
    assert decode(encode(text, "tcvn3"), "tcvn3") == tcvn3_expected(text)


# --- plausibility ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", [*NAMES, *ADDRESSES, *(t.upper() for t in NAMES)])
def test_real_vietnamese_is_plausible(text: str) -> None:
    assert plausibility(text) > 0.9


@pytest.mark.parametrize("text", ["", "ONT+CLN", "12345", "123,5 m2", "Nguyen Van A", "ĐT 741"])
def test_ascii_numbers_and_abbreviations_are_plausible(text: str) -> None:
    assert plausibility(text) == 1.0


@pytest.mark.parametrize("text", NAMES + ADDRESSES)
def test_mojibake_is_implausible(text: str) -> None:
    assert plausibility(cp1252_view(text.encode("utf-8"))) < 0.5
    tcvn3_as_latin1 = encode(text, "tcvn3").decode("latin1")
    if text == "Khúc Thừa Dụ":
        # TCVN3 ú ừ ụ are the Latin-1 bytes of ó õ ô: "Khóc Thõa Dô" is three real syllables.
        # One value can read as Vietnamese both ways; detect() decides on many.
        assert tcvn3_as_latin1 == "Khóc Thõa Dô" and plausibility(tcvn3_as_latin1) == 1.0
    else:
        assert plausibility(tcvn3_as_latin1) < 0.5


def test_plausibility_penalties() -> None:
    assert plausibility("Nguyễn\x01\x02") < plausibility("Nguyễn")
    assert plausibility("Nguy\ufffdn") < 0.5
    assert plausibility("Nguyễn Грибоедов") < 0.5
    # Decomposed text is Vietnamese; precomposed and combining mixed is not.
    assert plausibility(unicodedata.normalize("NFD", "Nguyễn Thị")) == 1.0
    assert plausibility("Nguyễn Thi\u0323") == 0.5
    # Two tones, or a stop final with a tone it cannot take.
    assert plausibility("Ngụyễn") == 0.0
    assert plausibility("Tầt") == 0.0


# --- detection ------------------------------------------------------------------------------


def _sample(n: int = 20, seed: int = 0) -> list[str]:
    return random.Random(seed).sample(NAMES + ADDRESSES, n)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("seed", range(3))
def test_detect_picks_the_encoding(encoding: str, seed: int) -> None:
    samples = [encode(text, encoding) for text in _sample(seed=seed)]
    guess = detect(samples)
    assert isinstance(guess, EncodingGuess)
    assert guess.encoding == encoding, guess.scores
    assert guess.confidence > 0.5
    assert set(guess.scores) == set(ENCODINGS)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_detect_upper_case_values(encoding: str) -> None:
    samples = [encode(text.upper(), encoding) for text in _sample()]
    assert detect(samples).encoding == encoding


@pytest.mark.parametrize("declared", ["UTF-8", "cp1252", "ISO-8859-1", "cp1258", "vni"])
def test_a_lying_cpg_does_not_win(declared: str) -> None:
    samples = [encode(text, "tcvn3") for text in _sample()]
    guess = detect(samples, declared)
    assert guess.encoding == "tcvn3"
    assert guess.confidence > 0.5


def test_declared_wins_a_tie() -> None:
    # cp1258 "Hà" is 48 E0, which vni also reads "Hà" and tcvn3 (VN2) "HỔ": a three-way tie.
    samples = [encode("Hà", "cp1258")]
    assert detect(samples, "vni").encoding == "vni"
    assert detect(samples, "cp1258").encoding == "cp1258"


@pytest.mark.parametrize("declared", [None, "cp1258", "CP1252"])
def test_ascii_samples_are_certain(declared: str | None) -> None:
    guess = detect([b"Nguyen Van A", b"ONT", b"123"], declared)
    assert guess.confidence == 1.0
    assert guess.encoding == ("cp1258" if declared == "cp1258" else "utf-8")


# --- undecodable and frames -----------------------------------------------------------------


def test_undecodable_flags_garbage_not_names_or_numbers() -> None:
    rng = random.Random(7)
    garbage = [rng.randbytes(rng.randint(8, 30)) for _ in range(60)]
    garbage = [raw for raw in garbage if not raw.isascii()]
    values = [
        *NAMES,
        "12345",
        "123,5",
        "ONT+CLN",
        *(decode(raw, "tcvn3") for raw in garbage),
        *(raw.decode("latin1") for raw in garbage),
    ]
    first = len(NAMES) + 3
    assert undecodable(values) == list(range(first, len(values)))


def test_decode_frame_text_keeps_non_strings() -> None:
    raw = [encode(name, "vni").decode("latin1") for name in NAMES[:3]]
    frame = pd.DataFrame(
        {
            "name": pd.Series([raw[0], None, raw[1]], dtype=object),
            "address": pd.Series([raw[2], None, "12"], dtype="string"),
            "area": [1.5, 2.0, float("nan")],
            "code": [1, 2, 3],
        }
    )
    out = decode_frame_text(frame, "vni")
    assert out["name"].tolist() == [NAMES[0], None, NAMES[1]]
    assert out["address"].dtype == frame["address"].dtype
    assert out["address"][0] == NAMES[2] and pd.isna(out["address"][1])
    assert out["area"].equals(frame["area"]) and out["code"].equals(frame["code"])
    assert frame["name"][0] == raw[0]  # the input is left as it was
    assert decode_frame_text(frame, "vni", ["address"])["name"][0] == raw[0]


def test_decode_frame_text_bad_utf8_and_wrong_reads() -> None:
    bad = pd.DataFrame({"name": ["Nguy\xc3n"]})  # not UTF-8: kept as U+FFFD, then flagged
    decoded = decode_frame_text(bad, "utf-8")["name"].tolist()
    assert decoded == ["Nguy\ufffdn"] and undecodable(decoded) == [0]
    with pytest.raises(ValueError, match="Latin-1"):
        decode_frame_text(pd.DataFrame({"name": ["Nguyễn"]}), "tcvn3")


@pytest.mark.parametrize("encoding", ["tcvn3", "vni"])
def test_shapefile_round_trip(tmp_path: Path, encoding: str) -> None:
    names = _sample()
    frame = gpd.GeoDataFrame(
        {
            "TENCHU": [encode(n, encoding).decode("latin1") for n in names],
            "SOTHUA": list(range(len(names))),
        },
        geometry=[Point(i, i) for i in range(len(names))],
        crs="EPSG:4326",
    )
    path = tmp_path / "parcels.shp"
    pyogrio.write_dataframe(frame, path, encoding="latin1")
    path.with_suffix(".cpg").unlink(missing_ok=True)
    read = pyogrio.read_dataframe(path, encoding="latin1")
    samples = [value.encode("latin1") for value in read["TENCHU"]]
    guess = detect(samples)
    assert guess.encoding == encoding and guess.confidence > 0.5
    decoded = decode_frame_text(read, guess.encoding)
    expected = [tcvn3_expected(n) for n in names] if encoding == "tcvn3" else names
    assert decoded["TENCHU"].tolist() == expected
    assert decoded["SOTHUA"].tolist() == list(range(len(names)))
