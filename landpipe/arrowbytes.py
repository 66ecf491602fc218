"""Bytes of Arrow arrays: fixed-width values, length prefixes, framed records and their
digests.

It imports nothing of landpipe's but itself, so that ``python -m landpipe.arrowbytes`` starts
in a fraction of a second: a load digests a large delivery's records in such a child process
while it decodes them (:class:`landpipe.sources.records.RecordDigests`). SHA-256 holds the
GIL for values this short, so a thread could not do the same.

    python -m landpipe.arrowbytes RECORDS.arrow [DIGESTS]

reads an Arrow IPC file, removes it once mapped, and writes the 16-byte digest of each record,
back to back, into the file DIGESTS (made whole or not at all), or on its standard output.
"""

from __future__ import annotations

import json
import sys
from hashlib import sha256
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Bytes of a record digest.
DIGEST_BYTES = 16

#: Records framed at a time: the framed records of a chunk stay in the CPU's caches.
_CHUNK = 100_000


def fixed_width(records: np.ndarray) -> pa.BinaryArray:
    """The bytes of each element of ``records`` (any fixed-size dtype) as a binary array."""
    records = np.ascontiguousarray(records)
    buffer = pa.py_buffer(records.view(np.uint8).reshape(-1))
    width = pa.binary(records.dtype.itemsize)
    return pa.FixedSizeBinaryArray.from_buffers(width, len(records), [None, buffer]).cast(
        pa.binary()
    )


def length_prefix(values: pa.Array) -> pa.BinaryArray:
    """The byte length of each value: 4 bytes, big-endian, -1 when the value is missing."""
    lengths = pc.fill_null(pc.binary_length(values), -1).to_numpy(zero_copy_only=False)
    return fixed_width(lengths.astype(">i4"))


def record_digests(records: pa.Table) -> np.ndarray:
    """SHA-256 of each record of ``records``, cut to :data:`DIGEST_BYTES`: an (n, 16)
    ``uint8`` array.

    A record is framed as: its fixed-width fields (numbers, dates) first, each as its byte
    length and bytes (-1 when missing), then the others (text, geometry) framed the same
    way, so that records concatenate without ambiguity.
    """
    digests: list[bytes] = []
    for batch in records.to_batches(max_chunksize=_CHUNK):  # as read: no copy
        framed = frames(batch)
        data = memoryview(framed.buffers()[2] or b"")
        ends = np.frombuffer(framed.buffers()[1], dtype=np.int32)
        ends = ends[framed.offset : framed.offset + len(framed) + 1].tolist()
        digests.extend([sha256(data[a:b]).digest() for a, b in pairwise(ends)])
    whole = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 32)
    return np.ascontiguousarray(whole[:, :DIGEST_BYTES])


def frames(part: pa.RecordBatch) -> pa.BinaryArray:
    """Each record of ``part`` framed (see :func:`record_digests`)."""
    columns = [_plain(column) for column in part.columns]
    fixed = [c for c in columns if _fixed_width(c.type)]
    framed = [_fixed_block(fixed, part.num_rows)] if fixed else []
    for column in columns:
        if not _fixed_width(column.type):
            framed.extend(_framed(column))
    if not framed:  # no field at all
        return pa.array([b""] * part.num_rows, pa.binary())
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


def main(argv: list[str]) -> int:
    """``python -m landpipe.arrowbytes RECORDS.arrow [DIGESTS]`` (see the module)."""
    if len(argv) not in (1, 2):
        print("usage: python -m landpipe.arrowbytes RECORDS.arrow [DIGESTS]", file=sys.stderr)
        return 2
    source = Path(argv[0])
    with pa.memory_map(str(source)) as mapped:
        source.unlink()  # mapped: its memory stays until this process ends
        digests = record_digests(pa.ipc.open_file(mapped).read_all())
    if len(argv) == 1:
        sys.stdout.buffer.write(digests.tobytes())
        sys.stdout.buffer.flush()
        return 0
    target = Path(argv[1])
    part = target.with_name(f"{target.name}.part")
    digests.tofile(part)
    part.replace(target)  # whole, or not there
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
