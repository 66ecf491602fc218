"""Record hashes: tell a re-delivered record from the one loaded before without decoding it.

A survey delivery is mostly re-delivered as it was. Each delivered record (every field as GDAL
hands it over, and the geometry's WKB) is digested (:func:`landpipe.arrowbytes.record_digests`)
and the digest keyed by the *reading context*: everything
else that decides which parcel landpipe makes of the record (the layer's fields and their
types, how GDAL read them, the text encoding, the field mapping, the CRS and its
transformation, the options filling keys and scale, and :data:`READING_VERSION`; see
:attr:`landpipe.sources.Delivery.reading_context`). The register keeps each version's record
hash (``land.parcel_version.record_hash``): a delivered record whose hash is that of its key's
current version makes the same parcel, so it is unchanged, whatever its content. Any other
record is compared by content (``content_hash``), as before; record hashes only spare that
work. A parcel whose geometry validation repaired keeps none: its record makes it only
through the repair.

A record's hash is its digest (SHA-256 of the framed record, cut to 16 bytes) XOR the
context's (cut alike). The digests need no context, so a large delivery's are made in a child
process as soon as its records are read, while this process decodes them
(:class:`RecordDigests`). Two records read under different contexts share a hash only if
their digests differ by exactly the difference of the contexts' digests: finding such a pair
is as hard as a collision of the cut digest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Mapping
from hashlib import sha256
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from landpipe.arrowbytes import DIGEST_BYTES, record_digests

log = logging.getLogger(__name__)

#: Bump when landpipe makes a different parcel of the same record under the same context
#: (a change in field mapping, text or geometry handling), or hashes records otherwise:
#: record hashes made before then no longer match, and each re-delivered record is compared
#: by content once more. 2: digests XOR the context's, made in a child process.
READING_VERSION = 2

#: Bytes of a record hash.
RECORD_HASH_BYTES = DIGEST_BYTES

#: Records from which on the digests are made in a child process: below, starting one
#: costs more than it spares (about 1.3 s of digests per million records).
CHILD_MIN_RECORDS = 100_000


def reading_context(parts: Mapping[str, Any]) -> bytes:
    """The key of the record hashes of one reading: a digest of ``parts`` (JSON-able) and
    :data:`READING_VERSION`."""
    text = json.dumps(
        {"reading_version": READING_VERSION, **parts}, sort_keys=True, default=str
    ).encode()
    return sha256(text).digest()


def record_hashes(
    records: pa.Table, context: bytes, digests: RecordDigests | None = None
) -> np.ndarray:
    """The hash of each record of ``records`` under ``context``: an (n, 16) ``uint8`` array,
    each record's digest XOR the context's (see the module). ``digests``: the records'
    digests, under way (made here when not given)."""
    made = digests.result() if digests is not None else record_digests(records)
    key = np.frombuffer(context[:RECORD_HASH_BYTES], dtype=np.uint8)
    return np.bitwise_xor(made, key)


class RecordDigests:
    """The digests of a table's records (:func:`landpipe.arrowbytes.record_digests`), made in a
    child process while this one goes on when the table is large; else, or when the child
    fails, made here when asked for.

    The records go to the child as an Arrow IPC file in shared memory (``/dev/shm``) where it
    has room, else in the temporary folder; the child removes the file once it has it mapped,
    and hands the digests back on its standard output. What a process killed meanwhile leaves
    behind (a folder named after it) is removed by the next one that starts a child.
    """

    def __init__(self, records: pa.Table, *, child: bool | None = None) -> None:
        self.records = records
        self._digests: np.ndarray | None = None
        self._child: subprocess.Popen | None = None
        self._folder: Path | None = None
        self._done: weakref.finalize | None = None
        if child is None:
            child = records.num_rows >= CHILD_MIN_RECORDS
        if child:
            scratch = _scratch(records)
            _sweep(Path(scratch or tempfile.gettempdir()))
            prefix = f"{_PREFIX}{os.getpid()}-"
            folder = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch))
            try:
                self._child = _start(records, folder)
            except OSError as err:  # no room, no process: made here instead
                log.warning("record digests made in this process: %s", err)
                shutil.rmtree(folder, ignore_errors=True)
            else:
                self._folder = folder
                self._done = weakref.finalize(self, _end, self._child, folder)

    @property
    def in_child(self) -> bool:
        """Whether a child process makes the digests (or made them)."""
        return self._child is not None

    def result(self) -> np.ndarray:
        """The digests: an (n, 16) ``uint8`` array, one row per record."""
        if self._digests is None:
            made = self._from_child() if self._child is not None else None
            self._digests = made if made is not None else record_digests(self.records)
        return self._digests

    def _from_child(self) -> np.ndarray | None:
        assert self._child is not None and self._done is not None
        try:
            made = self._child.stdout.read()
            code = self._child.wait()
            n = self.records.num_rows
            if code == 0 and len(made) == n * RECORD_HASH_BYTES:
                return np.frombuffer(made, dtype=np.uint8).reshape(n, RECORD_HASH_BYTES)
            errors = (self._folder / "errors").read_text(errors="replace").strip()
            log.warning(
                "record digests made in this process: the child process ended with %s: %s",
                code,
                errors[-2000:],
            )
            return None
        finally:
            self._done()


#: Prefix of the folders handing records to a child, followed by the parent's process id.
_PREFIX = "landpipe-digests-"


def _scratch(records: pa.Table) -> str | None:
    """Shared memory if it has room for the records twice over, else the temporary folder."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and shutil.disk_usage(shm).free > 2 * records.nbytes:
            return str(shm)
    except OSError:
        pass
    return None


def _sweep(scratch: Path) -> None:
    """Remove the folders of processes that no longer run (killed while a child worked)."""
    for folder in scratch.glob(f"{_PREFIX}*"):
        pid = folder.name[len(_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # runs, under another user
            pass


def _start(records: pa.Table, folder: Path) -> subprocess.Popen:
    """``python -m landpipe.arrowbytes`` on ``records``, written into ``folder``."""
    source = folder / "records.arrow"
    with pa.OSFile(str(source), "wb") as sink, pa.ipc.new_file(sink, records.schema) as writer:
        writer.write_table(records)
    with open(folder / "errors", "wb") as errors:
        # -P: the landpipe installed, never a folder of that name where the load runs.
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "landpipe.arrowbytes", str(source)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        )


def _end(child: subprocess.Popen, folder: Path) -> None:
    """Stop ``child`` if it still runs, and remove its files."""
    if child.poll() is None:
        child.kill()
        child.wait()
    if child.stdout is not None:
        child.stdout.close()
    shutil.rmtree(folder, ignore_errors=True)
