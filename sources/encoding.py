"""Vietnamese attribute text in UTF-8, Windows-1258, TCVN3 or VNI-Windows: decode it, guess which.

A Shapefile's DBF holds bytes; its ``.cpg`` is often missing and can lie. landpipe reads the
DBF with ``encoding="latin1"`` so that each string's code points are the raw bytes, then
:func:`detect` scores every candidate encoding by how plausible the decoded text is as
Vietnamese (:func:`plausibility`, built on syllable structure) and :func:`decode_frame_text`
decodes the frame to NFC Unicode.

No maintained PyPI package provides TCVN3 or VNI-Windows codecs (the few that mention them are
document loaders or input-method helpers), and glibc iconv, which knows TCVN 5712, would mean
shelling out, so the two tables are data here. They are checked in the tests against glibc's
``TCVN5712-1`` and against published VNI-Windows charts.
"""

from __future__ import annotations

import contextlib
import functools
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

import pandas as pd

#: The encodings landpipe decodes, in the order that breaks an exact tie in :func:`detect`.
ENCODINGS: tuple[str, ...] = ("utf-8", "cp1258", "tcvn3", "vni")

#: The five Vietnamese tone marks as combining characters, after "no tone":
#: sắc (acute), huyền (grave), hỏi (hook above), ngã (tilde), nặng (dot below).
_TONES = ("", "\u0301", "\u0300", "\u0309", "\u0303", "\u0323")
_TONE_MARKS = frozenset(_TONES[1:])
_VOWELS = ("a", "ă", "â", "e", "ê", "i", "o", "ô", "ơ", "u", "ư", "y")
#: TCVN3 has bytes of their own for these capitals only (besides the ASCII ones).
_TCVN3_CAPITALS = "ĂÂÊÔƠƯĐ"

# TCVN 5712:1993 VN3 ("TCVN3", "ABC", the .VnTime fonts): the byte of each lowercase vowel,
# by tone in _TONES order. Checked against glibc iconv TCVN5712-1 in the tests.
_TCVN3_VOWELS = {
    "a": (0x61, 0xB8, 0xB5, 0xB6, 0xB7, 0xB9),
    "ă": (0xA8, 0xBE, 0xBB, 0xBC, 0xBD, 0xC6),
    "â": (0xA9, 0xCA, 0xC7, 0xC8, 0xC9, 0xCB),
    "e": (0x65, 0xD0, 0xCC, 0xCE, 0xCF, 0xD1),
    "ê": (0xAA, 0xD5, 0xD2, 0xD3, 0xD4, 0xD6),
    "i": (0x69, 0xDD, 0xD7, 0xD8, 0xDC, 0xDE),
    "o": (0x6F, 0xE3, 0xDF, 0xE1, 0xE2, 0xE4),
    "ô": (0xAB, 0xE8, 0xE5, 0xE6, 0xE7, 0xE9),
    "ơ": (0xAC, 0xED, 0xEA, 0xEB, 0xEC, 0xEE),
    "u": (0x75, 0xF3, 0xEF, 0xF1, 0xF2, 0xF4),
    "ư": (0xAD, 0xF8, 0xF5, 0xF6, 0xF7, 0xF9),
    "y": (0x79, 0xFD, 0xFA, 0xFB, 0xFC, 0xFE),
}
_TCVN3_OTHERS = {
    "đ": 0xAE,
    "Ă": 0xA1,
    "Â": 0xA2,
    "Ê": 0xA3,
    "Ô": 0xA4,
    "Ơ": 0xA5,
    "Ư": 0xA6,
    "Đ": 0xA7,
    "\xa0": 0xA0,
}
# Bytes in 0xA0-0xFF that VN3 leaves unassigned but its superset VN2 gives a meaning (toned
# capitals and the five combining tones). A VN3 writer never emits them, so decoding them as VN2
# costs nothing and reads text from a VN1/VN2-aware converter. glibc's TCVN5712-1 (VN1) agrees;
# it differs from this decoder only in 0x01-0x17 and 0x80-0x9F, where VN1 puts more capitals and
# landpipe keeps ASCII controls and the cp1252 punctuation that Windows .VnTime text carries.
_TCVN3_VN2_ONLY = {
    0xAF: "Ằ",
    0xB0: "\u0300",
    0xB1: "\u0309",
    0xB2: "\u0303",
    0xB3: "\u0301",
    0xB4: "\u0323",
    0xBA: "Ẳ",
    0xBF: "Ẵ",
    0xC0: "Ắ",
    0xC1: "Ầ",
    0xC2: "Ẩ",
    0xC3: "Ẫ",
    0xC4: "Ấ",
    0xC5: "Ề",
    0xCD: "Ể",
    0xD9: "Ễ",
    0xDA: "Ế",
    0xDB: "Ồ",
    0xE0: "Ổ",
    0xF0: "Ỗ",
    0xFF: "Ố",
}

# VNI-Windows: the spelling of each lowercase vowel, by tone in _TONES order. Every character
# here stands for its Latin-1 byte: a base letter, then one mark byte that carries the vowel's
# shape (circumflex, breve) and its tone together; ơ ư đ and five i/y forms are single bytes.
# Capitals are the same spellings upper-cased (capital base + capital mark byte, 0x20 lower).
_VNI_VOWELS = {
    "a": ("a", "aù", "aø", "aû", "aõ", "aï"),
    "ă": ("aê", "aé", "aè", "aú", "aü", "aë"),
    "â": ("aâ", "aá", "aà", "aå", "aã", "aä"),
    "e": ("e", "eù", "eø", "eû", "eõ", "eï"),
    "ê": ("eâ", "eá", "eà", "eå", "eã", "eä"),
    "i": ("i", "í", "ì", "æ", "ó", "ò"),
    "o": ("o", "où", "oø", "oû", "oõ", "oï"),
    "ô": ("oâ", "oá", "oà", "oå", "oã", "oä"),
    "ơ": ("ô", "ôù", "ôø", "ôû", "ôõ", "ôï"),
    "u": ("u", "uù", "uø", "uû", "uõ", "uï"),
    "ư": ("ö", "öù", "öø", "öû", "öõ", "öï"),
    "y": ("y", "yù", "yø", "yû", "yõ", "î"),
}
_VNI_OTHERS = {"đ": "ñ"}
# Some converters write i and ỵ like the other vowels; read those spellings too (never written).
_VNI_READ_ALSO = {"iù": "í", "iø": "ì", "iû": "ỉ", "iõ": "ĩ", "iï": "ị", "yï": "ỵ"}


def _compose(vowel: str, tone: str) -> str:
    return unicodedata.normalize("NFC", vowel + tone)


def _letters() -> tuple[str, ...]:
    """The 67 lowercase Vietnamese letters outside ASCII: 60 toned vowels, ă â ê ô ơ ư, đ."""
    toned = (_compose(v, t) for v in _VOWELS for t in _TONES)
    return (*(c for c in toned if not c.isascii()), "đ")


#: The 134 Vietnamese letters outside ASCII (67 lowercase, then their capitals).
LETTERS: tuple[str, ...] = (*_letters(), *(c.upper() for c in _letters()))


def _cp1252_high() -> dict[int, str]:
    """Bytes 0x80-0x9F as cp1252 reads them (undefined ones as the C1 control they are)."""
    high = {}
    for byte in range(0x80, 0xA0):
        try:
            high[byte] = bytes([byte]).decode("cp1252")
        except UnicodeDecodeError:
            high[byte] = chr(byte)
    return high


_CP1252_HIGH = _cp1252_high()


#: Toned capitals that TCVN 5712:1993 (VN1, as glibc's ``TCVN5712-1``) places in 0x80-0x9F and
#: in unused C0 control positions; with the VN2 capitals in 0xA0-0xFF (above) every toned
#: capital has a byte, so text round-trips with its case. Text typed with the ABC .VnTimeH
#: fonts writes capitals with the lowercase bytes instead; it decodes to lowercase.
_TCVN3_VN1_CAPITALS = {
    0x01: "Ú",
    0x02: "Ụ",
    0x04: "Ừ",
    0x05: "Ử",
    0x06: "Ữ",
    0x11: "Ứ",
    0x12: "Ự",
    0x13: "Ỳ",
    0x14: "Ỷ",
    0x15: "Ỹ",
    0x16: "Ý",
    0x17: "Ỵ",
    0x80: "À",
    0x81: "Ả",
    0x82: "Ã",
    0x83: "Á",
    0x84: "Ạ",
    0x85: "Ặ",
    0x86: "Ậ",
    0x87: "È",
    0x88: "Ẻ",
    0x89: "Ẽ",
    0x8A: "É",
    0x8B: "Ẹ",
    0x8C: "Ệ",
    0x8D: "Ì",
    0x8E: "Ỉ",
    0x8F: "Ĩ",
    0x90: "Í",
    0x91: "Ị",
    0x92: "Ò",
    0x93: "Ỏ",
    0x94: "Õ",
    0x95: "Ó",
    0x96: "Ọ",
    0x97: "Ộ",
    0x98: "Ờ",
    0x99: "Ở",
    0x9A: "Ỡ",
    0x9B: "Ớ",
    0x9C: "Ợ",
    0x9D: "Ù",
    0x9E: "Ủ",
    0x9F: "Ũ",
}


def _tcvn3_tables() -> tuple[str, dict[str, int]]:
    """The TCVN3 decoding table (256 characters) and encoding map."""
    assigned = dict(_TCVN3_OTHERS)
    for vowel, row in _TCVN3_VOWELS.items():
        for tone, byte in zip(_TONES, row, strict=True):
            assigned[_compose(vowel, tone)] = byte
    by_byte = {byte: char for char, byte in assigned.items()}
    by_byte.update(_TCVN3_VN2_ONLY)
    by_byte.update(_CP1252_HIGH)
    by_byte.update(_TCVN3_VN1_CAPITALS)
    decoding = "".join(by_byte.get(byte, chr(byte)) for byte in range(256))
    encoding = {chr(byte): byte for byte in range(0x80)}
    encoding.update({char: byte for byte, char in _CP1252_HIGH.items()})
    encoding.update(assigned)
    encoding.update({char: byte for byte, char in _TCVN3_VN2_ONLY.items() if char.isupper()})
    encoding.update({char: byte for byte, char in _TCVN3_VN1_CAPITALS.items()})
    return decoding, encoding


_TCVN3_DECODING, _TCVN3_ENCODING = _tcvn3_tables()


def _vni_tables() -> tuple[dict[str, str], dict[str, str], re.Pattern[str]]:
    """VNI-Windows: spelling -> letter (for reading), letter -> spelling, and the reading regex."""
    written = dict(_VNI_OTHERS)
    for vowel, row in _VNI_VOWELS.items():
        for tone, spelling in zip(_TONES, row, strict=True):
            if spelling != vowel:
                written[_compose(vowel, tone)] = spelling
    written.update({letter.upper(): spelling.upper() for letter, spelling in written.items()})
    reading = {spelling: letter for letter, spelling in written.items()}
    for spelling, letter in _VNI_READ_ALSO.items():
        reading[spelling] = letter
        reading[spelling.upper()] = letter.upper()
    # Mark bytes are read in either case; the base letter decides the case of the result.
    for spelling, letter in list(reading.items()):
        if len(spelling) == 2:
            base, mark = spelling
            for other in (mark.lower(), mark.upper()):
                reading.setdefault(base + other, letter)
    reading.update({chr(byte): char for byte, char in _CP1252_HIGH.items()})
    bases = sorted({s[0] for s in reading if len(s) == 2})
    marks = sorted({s[1] for s in reading if len(s) == 2})
    singles = sorted(s for s in reading if len(s) == 1)
    assert not set(marks) & set(singles), "a VNI mark byte must not also be a letter byte"
    pattern = re.compile(
        f"[{re.escape(''.join(bases))}][{re.escape(''.join(marks))}]"
        f"|[{re.escape(''.join(singles))}]"
    )
    writing = {chr(byte): chr(byte) for byte in range(0x80)}
    writing.update({char: chr(byte) for byte, char in _CP1252_HIGH.items()})
    # Latin-1 symbols 0xA0-0xBF are no VNI letter or mark byte: they stand for themselves.
    writing.update({chr(byte): chr(byte) for byte in range(0xA0, 0xC0)})
    writing.update(written)
    return reading, writing, pattern


_VNI_READING, _VNI_WRITING, _VNI_PATTERN = _vni_tables()


def _cp1258_decoding() -> str:
    """Python's cp1258 table, with its undefined bytes kept as the C1 controls they are."""
    chars = []
    for byte in range(256):
        try:
            chars.append(bytes([byte]).decode("cp1258"))
        except UnicodeDecodeError:
            chars.append(chr(byte))
    return "".join(chars)


_CP1258_DECODING = _cp1258_decoding()


def _vni_letter(match: re.Match[str]) -> str:
    spelling = match.group()
    letter = _VNI_READING.get(spelling)
    if letter is None:  # a base followed by a mark it does not take: read them apart
        letter = _VNI_READING.get(spelling[0], spelling[0]) + spelling[1:]
    return letter


def decode(raw: bytes, encoding: str) -> str:
    """Decode ``raw`` bytes in one of :data:`ENCODINGS` to NFC Unicode.

    For the single-byte legacy encodings every byte maps to something: TCVN3 bytes that VN3
    leaves unassigned read as TCVN 5712 VN2 has them (toned capitals, combining tones), and
    0x80-0x9F, cp1258's undefined bytes and stray VNI mark bytes read as their Windows-1252 or
    Latin-1 character, which :func:`plausibility` then counts against the text. VNI is read
    longest match first: a base letter and the mark byte after it make one letter.

    Raises
    ------
    UnicodeDecodeError
        ``raw`` is not valid UTF-8 (``encoding="utf-8"`` only).
    ValueError
        ``encoding`` is not one of :data:`ENCODINGS`.
    """
    if encoding == "utf-8":
        text = raw.decode("utf-8")
    elif encoding == "cp1258":
        text = raw.decode("latin1").translate(_CP1258_DECODING)
    elif encoding == "tcvn3":
        text = raw.decode("latin1").translate(_TCVN3_DECODING)
    elif encoding == "vni":
        text = _VNI_PATTERN.sub(_vni_letter, raw.decode("latin1"))
    else:
        raise ValueError(f"unknown encoding {encoding!r}; landpipe decodes {', '.join(ENCODINGS)}")
    return unicodedata.normalize("NFC", text)


def encode(text: str, encoding: str) -> bytes:
    """Encode NFC ``text`` as bytes in one of :data:`ENCODINGS` (for tests and fixtures).

    TCVN3 keeps no case for toned capitals: it has bytes of its own only for the capitals
    Ă Â Ê Ô Ơ Ư Đ, and a toned capital (Á, Ấ, Ự ...) is written with its lowercase byte, as
    text set in the all-capitals .VnTimeH font is. :func:`decode` therefore gives those 60
    letters back in lowercase. Windows-1258 is written as that code page's precomposed letter
    where it has one, else as base letter (with its circumflex, breve or horn) + combining tone.

    Raises
    ------
    ValueError
        ``text`` holds a character the encoding cannot hold, or ``encoding`` is unknown.
    """
    text = unicodedata.normalize("NFC", text)
    if encoding == "utf-8":
        return text.encode("utf-8")
    if encoding == "cp1258":
        return b"".join(_cp1258_char(char) for char in text)
    try:
        if encoding == "tcvn3":
            return bytes(_TCVN3_ENCODING[char] for char in text)
        if encoding == "vni":
            return "".join(_VNI_WRITING[char] for char in text).encode("latin1")
    except KeyError as err:
        raise _cannot_hold(encoding, err.args[0]) from None
    raise ValueError(f"unknown encoding {encoding!r}; landpipe encodes {', '.join(ENCODINGS)}")


def _cannot_hold(encoding: str, char: str) -> ValueError:
    return ValueError(f"{encoding} cannot hold {char!r} (U+{ord(char):04X})")


def _cp1258_char(char: str) -> bytes:
    try:
        return char.encode("cp1258")
    except UnicodeEncodeError:
        pass
    decomposed = unicodedata.normalize("NFD", char)
    base = unicodedata.normalize("NFC", "".join(c for c in decomposed if c not in _TONE_MARKS))
    tones = "".join(c for c in decomposed if c in _TONE_MARKS)
    try:
        return (base + tones).encode("cp1258")
    except UnicodeEncodeError:
        raise _cannot_hold("cp1258", char) from None


# --- plausibility ---------------------------------------------------------------------------

# A syllable is onset + nucleus + coda (this order of trial: longest spelling first).
_ONSETS = (
    *("ngh", "ng", "nh", "ch", "gh", "gi", "kh", "ph", "qu", "th", "tr"),
    *("kr", "pl", *"bcdđghklmnprstvx"),  # kr, pl: Central Highlands names (Krông, Plông)
)
_NUCLEI = (
    *("uyê", "uya", "ươ", "uô", "iê", "yê", "ia", "ya", "ưa", "ua"),
    *("oa", "oă", "oe", "oo", "uâ", "uê", "uy", "uơ", *"aăâeêioôơuưy"),
)
#: Finals; k closes Central Highlands names (Đắk Lắk) as c does.
_CODAS = frozenset({"", "c", "ch", "k", "m", "n", "ng", "nh", "p", "t", "i", "y", "o", "u"})
_STOPS = frozenset({"c", "ch", "k", "p", "t"})
#: Nuclei that never end a syllable (tiên, not tiê; ăn, not ă) and ones that always do (mua).
_NEED_CODA = frozenset({"ă", "â", "oă", "uâ", "iê", "yê", "uô", "ươ", "uyê", "oo"})
_NO_CODA = frozenset({"ia", "ya", "ua", "ưa", "uya"})
#: The semivowel finals each nucleus takes (ai ay ao au, âu ây, eo, êu, iu ...).
_SEMIVOWEL_CODAS = {
    **{"a": "iyou", "â": "yu", "e": "o", "ê": "u", "i": "u", "o": "i", "ô": "i", "ơ": "i"},
    **{"u": "i", "ư": "iu", "oa": "iyo", "oe": "o", "uâ": "y", "uô": "i", "ươ": "iu"},
    **{"iê": "u", "yê": "u", "uy": "u"},
}
#: The nuclei that ch and nh follow (y: quỳnh, where the u belongs to qu).
_PALATAL_NUCLEI = frozenset({"a", "ê", "i", "y", "oa", "uê", "uy"})
#: Syllables closed by p, t, c or ch take only the sắc or nặng tone, or none.
_STOP_TONES = frozenset({"", "\u0301", "\u0323"})


def _rhyme_ok(onset: str, nucleus: str, coda: str, tone: str) -> bool:
    """Whether ``nucleus`` + ``coda`` with ``tone`` is a Vietnamese rhyme after ``onset``."""
    if coda not in _CODAS or (onset in ("gh", "ngh") and nucleus[0] not in "eêi"):
        return False
    if not coda:
        return nucleus not in _NEED_CODA
    if nucleus in _NO_CODA:
        return False
    if coda in "iyou":
        return coda in _SEMIVOWEL_CODAS.get(nucleus, "")
    if nucleus == "oo" and coda not in ("c", "ng"):
        return False
    if coda in ("ch", "nh") and nucleus not in _PALATAL_NUCLEI:
        return False
    return coda not in _STOPS or tone in _STOP_TONES


@functools.lru_cache(maxsize=65536)
def _is_syllable(toneless: str, tone: str) -> bool:
    """Whether a lowercase word without its tone spells a Vietnamese syllable."""
    for onset in (*_ONSETS, ""):
        if toneless.startswith(onset):
            rest = toneless[len(onset) :]
            for nucleus in _NUCLEI:
                if rest.startswith(nucleus) and _rhyme_ok(
                    onset, nucleus, rest[len(nucleus) :], tone
                ):
                    return True
    return False


#: Letters of an abbreviation (ĐT, QL, TP): consonants only, neither scored nor penalised.
_CONSONANTS = frozenset("bcdđfghjklmnpqrstvwxz")
#: A word: a run of anything but ASCII white space and punctuation, digits and the common
#: punctuation of U+2010-U+205E. A no-break space joins: in mojibake it is half a letter.
_WORD = re.compile(r"[^\t\n\v\f\r !-/:-@\[-`{-~0-9\u2010-\u2027\u2030-\u205e]+")
#: Characters no plausible text holds: controls, format characters, private use, U+FFFD,
#: anything outside Latin, Vietnamese, combining marks, punctuation and currency signs, and the
#: ASCII symbols that names and addresses do not use (but random bytes often hold).
_BAD = re.compile(
    r"[^\t\n\r !-)+-;?A-Z_a-z\xa0-\xac\xae-\u024f\u0300-\u036f\u1e00-\u1eff\u2010-\u2027"
    r"\u2030-\u205e\u20a0-\u20c0]"
)
_COMBINING = re.compile(r"[\u0300-\u036f]")
_LOWER_LETTERS = frozenset(c for c in LETTERS if c.islower()) | frozenset(
    "abcdefghijklmnopqrstuvwxyz"
)


def _tone_tables() -> tuple[dict[int, str], dict[str, str]]:
    """Lowercase toned letter -> the letter without tone, and -> its tone mark."""
    toneless: dict[int, str] = {}
    tone_of: dict[str, str] = {}
    for vowel in _VOWELS:
        for tone in _TONES[1:]:
            letter = _compose(vowel, tone)
            toneless[ord(letter)] = vowel
            tone_of[letter] = tone
    return toneless, tone_of


_TONELESS, _TONE_OF = _tone_tables()
_PRECOMPOSED_TONED = frozenset(_TONE_OF) | frozenset(c.upper() for c in _TONE_OF)


@functools.lru_cache(maxsize=65536)
def _word_score(word: str) -> float | None:
    """1.0 for a valid Vietnamese syllable, 0.0 for not, None for a word not to score."""
    word = unicodedata.normalize("NFC", word).lower()
    if word.isascii() and word.isalpha():
        return None
    if all(c in _CONSONANTS for c in word) and len(word) <= 4:
        return None
    if not all(c in _LOWER_LETTERS for c in word):
        return 0.0
    tones = [_TONE_OF[c] for c in word if c in _TONE_OF]
    if len(tones) > 1:
        return 0.0
    return 1.0 if _is_syllable(word.translate(_TONELESS), tones[0] if tones else "") else 0.0


def plausibility(text: str) -> float:
    """How plausible ``text`` is as Vietnamese (or plain ASCII and numbers), from 0 to 1.

    The share of its words that are valid Vietnamese syllables: an optional initial consonant
    cluster, a vowel nucleus carrying at most one tone, an optional final consonant or
    semivowel, and a stop final (p t c ch k) only with the sắc or nặng tone. ASCII words, numbers
    and consonant-only abbreviations are not scored; each control, format, private-use or
    replacement character and each character outside Latin and Vietnamese counts as one more
    invalid word; text mixing precomposed toned letters with combining marks scores half.
    Text with nothing to score is 1.0.
    """
    bad = len(_BAD.findall(text))
    scores = [s for s in map(_word_score, _WORD.findall(text)) if s is not None]
    units = len(scores) + bad
    score = sum(scores) / units if units else 1.0
    if _COMBINING.search(text) and any(c in _PRECOMPOSED_TONED for c in text):
        score *= 0.5
    return score


# --- detection ------------------------------------------------------------------------------

#: Mean plausibility within this of the best is a tie, which a declared encoding wins.
TIE = 0.02
#: A lead in mean plausibility of this much over the runner-up is full confidence.
CLEAR_LEAD = 0.25
_NAMES = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "65001": "utf-8",
    "cp1258": "cp1258",
    "1258": "cp1258",
    "windows-1258": "cp1258",
    "windows1258": "cp1258",
    "tcvn3": "tcvn3",
    "tcvn": "tcvn3",
    "vni": "vni",
    "vni-windows": "vni",
}


@dataclass(frozen=True)
class EncodingGuess:
    """The encoding :func:`detect` chose, how sure it is, and every candidate's score.

    ``confidence`` is 0 to 1: the chosen encoding's lead in mean plausibility over the
    runner-up (full at :data:`CLEAR_LEAD`), times its own mean plausibility. ``scores`` holds
    each candidate's mean plausibility over the samples.
    """

    encoding: str
    confidence: float
    scores: dict[str, float]


def detect(samples: list[bytes], declared: str | None = None) -> EncodingGuess:
    """Choose the encoding of a delivery's text from a sample of its raw values.

    Every sample is decoded under each of :data:`ENCODINGS` and scored by
    :func:`plausibility` (a sample that is not valid UTF-8 scores 0 as UTF-8); the candidate
    with the best mean wins. ``declared`` (what a ``.cpg`` said, if anything) wins a tie but
    not a clearly better candidate, since a ``.cpg`` can lie; a name that is not one of
    landpipe's encodings (``cp1252``, ``ISO-8859-1``) is ignored. Samples all ASCII read the
    same in every encoding: then the declared encoding or UTF-8, with confidence 1.
    """
    declared = _NAMES.get((declared or "").strip().lower())
    counts = Counter(raw for raw in samples if not raw.isascii())
    if not counts:
        return EncodingGuess(declared or "utf-8", 1.0, dict.fromkeys(ENCODINGS, 1.0))
    total = sum(counts.values())
    scores = {}
    for encoding in ENCODINGS:
        score = 0.0
        for raw, count in counts.items():
            with contextlib.suppress(UnicodeDecodeError):  # not UTF-8: scores 0 as UTF-8
                score += count * plausibility(decode(raw, encoding))
        scores[encoding] = score / total
    best = max(ENCODINGS, key=lambda e: scores[e])  # the first of equals, in ENCODINGS order
    chosen = declared if declared and scores[declared] >= scores[best] - TIE else best
    runner_up = max(score for encoding, score in scores.items() if encoding != chosen)
    lead = min(1.0, max(0.0, scores[chosen] - runner_up) / CLEAR_LEAD)
    return EncodingGuess(chosen, lead * scores[chosen], scores)


# --- frames ---------------------------------------------------------------------------------


def _is_text_column(column: pd.Series) -> bool:
    return column.dtype == object or pd.api.types.is_string_dtype(column.dtype)


def decode_frame_text(
    frame: pd.DataFrame, encoding: str, columns: list[str] | None = None
) -> pd.DataFrame:
    """A copy of ``frame`` (read with ``encoding="latin1"``) with its text decoded to NFC.

    ``columns`` defaults to every object or string column but the geometry. Values that are
    not strings (None, NaN, numbers) are left as they are. A UTF-8 value that does not decode
    keeps its bad bytes as U+FFFD, so that :func:`undecodable` reports it rather than the read
    failing.

    Raises
    ------
    ValueError
        A value holds a character above U+00FF: the frame was not read as Latin-1.
    """
    decoded = frame.copy()
    geometry = getattr(frame, "_geometry_column_name", None)
    if columns is None:
        columns = [n for n in frame.columns if n != geometry and _is_text_column(frame[n])]

    def one(value: object, column: str) -> object:
        if not isinstance(value, str):
            return value
        try:
            raw = value.encode("latin1")
        except UnicodeEncodeError:
            raise ValueError(
                f"field {column}: {value[:40]!r} was not read as Latin-1 bytes"
            ) from None
        if encoding == "utf-8":
            return unicodedata.normalize("NFC", raw.decode("utf-8", errors="replace"))
        return decode(raw, encoding)

    for column in columns:
        values = [one(value, column) for value in frame[column].tolist()]
        decoded[column] = pd.Series(values, index=frame.index, dtype=frame[column].dtype)
    return decoded


def undecodable(values: list[str], threshold: float = 0.5) -> list[int]:
    """Indices of decoded ``values`` whose :func:`plausibility` is below ``threshold``.

    For the ``ATTR_ENCODING`` finding: text that decodes to nothing plausible. ASCII values
    and numbers are plausible; values that are not strings are skipped.
    """
    return [
        index
        for index, value in enumerate(values)
        if isinstance(value, str) and plausibility(value) < threshold
    ]
