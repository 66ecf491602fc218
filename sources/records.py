"""Record hashes: tell a re-delivered record from the one loaded before without decoding it.

A survey delivery is mostly re-delivered as it was. Each delivered record (every field as GDAL
hands it over, and the geometry's WKB) is hashed, keyed by the *reading context*: everything
else that decides which parcel landpipe makes of the record (the layer's fields and their
types, how GDAL read them, the text encoding, the field mapping, the CRS and its
transformation, the options filling keys and scale, and :data:`READING_VERSION`; see
:attr:`landpipe.sources.Delivery.reading_context`). The register keeps each version's record
hash (``land.parcel_version.record_hash``): a delivered record whose hash is that of its key's
current version makes the same parcel, so it is unchanged, whatever its content. Any other
record is compared by content (``content_hash``), as before; record hashes only spare that
work. A parcel whose geometry validation repaired keeps none: its record makes it only
through the repair.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from hashlib import sha256
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from landpipe.sources.fields import fixed_width, length_prefix

#: Bump when landpipe makes a different parcel of the same record under the same context
#: (a change in field mapping, text or geometry handling): record hashes made before then no
#: longer match, and each re-delivered record is compared by content once more.
READING_VERSION = 1

#: Bytes of a record hash.
RECORD_HASH_BYTES = 16

#: Records hashed at a time: the framed records of a chunk stay in the CPU's caches.
_CHUNK = 100_000


def reading_context(parts: Mapping[str, Any]) -> bytes:
    """The key of the record hashes of one reading: a digest of ``parts`` (JSON-able) and
    :data:`READING_VERSION`."""
    text = json.dumps(
        {"reading_version": READING_VERSION, **parts}, sort_keys=True, default=str
    ).encode()
    return sha256(text).digest()


def record_hashes(records: pa.Table, context: bytes) -> np.ndarray:
    """The hash of each record of ``records`` under ``context``: an (n, 16) ``uint8`` array.

    The record's fixed-width fields (numbers, dates) come first, each as its byte length and
    bytes (-1 when missing), then the others (text, geometry) framed the same way, so that
    records concatenate without ambiguity; SHA-256 of the context and the record, cut to 16
    bytes.
    """
    key = pa.scalar(context, pa.binary())
    digests: list[bytes] = []
    for batch in records.to_batches(max_chunksize=_CHUNK):  # as read: no copy
        framed = _frames(batch, key).to_numpy(zero_copy_only=False)
        digests.extend([sha256(value).digest() for value in framed])
    whole = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 32)
    return np.ascontiguousarray(whole[:, :RECORD_HASH_BYTES])


def _frames(part: pa.RecordBatch, key: pa.Scalar) -> pa.BinaryArray:
    """The context, then each record of ``part`` framed (see :func:`record_hashes`)."""
    columns = [_plain(column) for column in part.columns]
    fixed = [c for c in columns if _fixed_width(c.type)]
    framed = [key, _fixed_block(fixed, part.num_rows)] if fixed else [key]
    for column in columns:
        if not _fixed_width(column.type):
            framed.extend(_framed(column))
    return pc.binary_join_element_wise(*framed, b"", null_handling="replace", null_replacement=b"")


def _plain(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One array of a plain type: chunks combined, dictionaries decoded, extension types
    (geoarrow.wkb, when registered) as their storage, booleans as bytes."""
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(values.type, pa.ExtensionType):
        values = values.storage
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_boolean(values.type):
        values = values.cast(pa.int8())
    return values


def _fixed_width(kind: pa.DataType) -> bool:
    return pa.types.is_primitive(kind) and kind.bit_width % 8 == 0


def _fixed_block(columns: list[pa.Array], n: int) -> pa.BinaryArray:
    """The fixed-width columns of each record as one value: per column, its byte length
    (4 bytes, big-endian; -1 when missing) and its bytes as Arrow holds them (zeros when
    missing)."""
    widths = [c.type.bit_width // 8 for c in columns]
    record = np.zeros(
        n,
        dtype=[
            item for i, w in enumerate(widths) for item in ((f"l{i}", ">i4"), (f"v{i}", "u1", w))
        ],
    )
    for i, (values, width) in enumerate(zip(columns, widths, strict=True)):
        raw = np.frombuffer(values.buffers()[1], dtype=np.uint8)
        record[f"v{i}"] = raw[values.offset * width : (values.offset + n) * width].reshape(n, width)
        record[f"l{i}"] = width
        if values.null_count:
            missing = ~values.is_valid().to_numpy(zero_copy_only=False)
            record[f"l{i}"][missing] = -1
            record[f"v{i}"][missing] = 0
    return fixed_width(record)


def _framed(values: pa.Array) -> list[pa.Array]:
    """A column of variable width as [lengths, bytes]: text and binary as they are, anything
    else as text."""
    kind = values.type
    if pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
        values = values.cast(pa.large_binary()).cast(pa.binary())
    elif pa.types.is_string(kind):
        values = values.view(pa.binary())
    elif not pa.types.is_binary(kind):
        text = pc.cast(values, pa.string()) if _castable(kind) else _as_json(values)
        values = text.view(pa.binary())
    return [length_prefix(values), values]


def _castable(kind: pa.DataType) -> bool:
    return pa.types.is_decimal(kind) or pa.types.is_temporal(kind)


def _as_json(values: pa.Array) -> pa.StringArray:
    return pa.array(
        [
            None if v is None else json.dumps(v, sort_keys=True, default=str)
            for v in values.to_pylist()
        ],
        pa.string(),
    )
