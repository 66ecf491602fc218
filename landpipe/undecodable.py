"""Names and text whose bytes are no UTF-8.

A file named on an office PC in TCVN3, VNI or Windows-1258, or text typed on a terminal set to
one of them, reaches Python as lone surrogates (PEP 383). GDAL, the register (text columns),
Prefect's JSON parameters and psycopg cannot take them, so landpipe refuses them where they
come in: command-line arguments, names in the inbox, files inside a delivery folder.
"""

from __future__ import annotations

import os


def not_utf8(name: str) -> bool:
    """Whether ``name`` (read from the disk, or an argument) held bytes that are no UTF-8."""
    return any("\udc80" <= c <= "\udcff" for c in name)


def as_bytes(name: str) -> str:
    """``name`` as its bytes, printable: ``th\\xfea_dat`` for "thửa_dat" in TCVN3."""
    return repr(os.fsencode(name))[2:-1]
