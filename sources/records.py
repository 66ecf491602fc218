"""Record hashes: tell a re-delivered record from the one loaded before without decoding it.

A survey delivery is mostly re-delivered as it was. Each delivered record (every field as GDAL
hands it over, and the geometry's WKB) is digested (:func:`landpipe.arrowbytes.record_digests`),
and its hash is that digest keyed by the *reading context*: everything else that decides which
parcel landpipe makes of the record (the layer's fields and their types, how GDAL read them,
the text encoding, the field mapping, the CRS and its transformation, the options filling keys
and scale, and :data:`READING_VERSION`; see :attr:`landpipe.sources.Delivery.reading_context`).
The register keeps each version's record hash (``land.parcel_version.record_hash``): a
delivered record whose hash is that of its key's current version makes the same parcel, so it
is unchanged, whatever its content. Any other record is compared by content
(``content_hash``), as before; record hashes only spare that work. A parcel whose geometry
validation repaired keeps none: its record makes it only through the repair.

A record's hash is its digest (SHA-256 of the framed record, cut to 16 bytes) XOR the
context's (cut alike). The digests need no context, so a large delivery's are made in a child
process as soon as its records are read, while this process decodes them
(:class:`RecordDigests`). Two records read under different contexts share a hash only if
their digests differ by exactly the difference of the contexts' digests: finding such a pair
is as hard as a collision of the cut digest.
"""

from __future__ import annotations

import fcntl
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

import geopandas as gpd
import numpy as np
import pyarrow as pa

from landpipe import arrowbytes
from landpipe.arrowbytes import DIGEST_BYTES, record_digests
from landpipe.sources.files import Source, read_table, records_frame

log = logging.getLogger(__name__)

#: Bump when landpipe makes a different parcel of the same record under the same context
#: (a change in field mapping, text or geometry handling), or hashes records otherwise:
#: record hashes made before then no longer match, and each re-delivered record is compared
#: by content once more. 2: digests XOR the context's, made in a child process. (Rounding
#: areas as PostgreSQL does, 100.05 to 100.1 where landpipe made 100.0, bumped nothing: a
#: version loaded before keeps its area as it was until its record changes; see
#: :func:`landpipe.register.compare`.)
READING_VERSION = 2

#: Bytes of a record hash.
RECORD_HASH_BYTES = DIGEST_BYTES

#: Records from which on the digests are made in a child process: below, starting one
#: (0.3 s) costs more than it spares (digests take about 0.9 s per million records).
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


def read_digested(
    source: Source, layer: str, *, encoding: str | None = None, digested: bool = False
) -> tuple[gpd.GeoDataFrame, pa.Table, RecordDigests | None]:
    """:func:`landpipe.sources.files.read_records`, and, if ``digested``, the records'
    digests, under way before the frame is built."""
    meta, records = read_table(source, layer, encoding=encoding)
    digests = RecordDigests(records) if digested else None
    return records_frame(source, layer, meta, records), records, digests


class RecordDigests:
    """The digests of a table's records (:func:`landpipe.arrowbytes.record_digests`), made in a
    child process while this one goes on when the table is large; else, or when the child
    fails, made here when asked for.

    The records go to the child as an Arrow IPC file in shared memory (``/dev/shm``), only
    where it and the machine's memory have room for them; the child removes the file once it
    has it mapped, and hands the digests back as a file beside it. The parent holds a lock
    on its folder while it lives: a folder whose lock is free is what a process killed
    meanwhile left behind, and the next child's start removes it (a process id would not do:
    containers sharing ``/dev/shm`` each have their own).
    """

    def __init__(self, records: pa.Table, *, child: bool | None = None) -> None:
        self.records = records
        self._digests: np.ndarray | None = None
        self._child: subprocess.Popen | None = None
        self._folder: Path | None = None
        self._done: weakref.finalize | None = None
        if child is None:
            child = records.num_rows >= CHILD_MIN_RECORDS
        scratch = _scratch(records) if child else None
        if scratch is None:
            return
        _sweep(scratch)
        folder = lock = None
        try:
            folder = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=scratch))
            lock = _locked(folder)
            self._child = _start(records, folder)
        except Exception as err:  # no room, no process, a table IPC cannot write: made here
            log.warning("record digests made in this process: %s", err)
            _end(None, folder, lock)
        except BaseException:
            _end(None, folder, lock)
            raise
        else:
            self._folder = folder
            self._done = weakref.finalize(self, _end, self._child, folder, lock)

    @property
    def in_child(self) -> bool:
        """Whether a child process makes the digests (or made them)."""
        return self._folder is not None

    def result(self) -> np.ndarray:
        """The digests: an (n, 16) ``uint8`` array, one row per record."""
        if self._digests is None:
            made = self._from_child() if self._child is not None else None
            self._digests = made if made is not None else record_digests(self.records)
        return self._digests

    def _from_child(self) -> np.ndarray | None:
        """The child's digests, or None (logged) if it failed; the child and its files go."""
        assert self._child is not None and self._done is not None and self._folder is not None
        n = self.records.num_rows
        try:
            timeout = CHILD_TIMEOUT_S + CHILD_TIMEOUT_S * n / 1_000_000
            # One wait and one read of a file: reading a pipe in 64 kB pieces took up to 0.5 s
            # for a million records, each piece waiting for the GIL while the background
            # topology search held it.
            returncode = self._child.wait(timeout=timeout)
            made = self._folder / _DIGESTS
            if returncode == 0 and made.stat().st_size == n * RECORD_HASH_BYTES:
                return np.fromfile(made, dtype=np.uint8).reshape(n, RECORD_HASH_BYTES)
            errors = (self._folder / "errors").read_text(errors="replace").strip()
            why = f"the child process ended with {returncode}: {errors[-2000:]}"
        except (OSError, ValueError, subprocess.TimeoutExpired) as err:
            why = f"the child process failed: {err!r}"
        finally:
            self._done()
            self._child = None
        log.warning("record digests made in this process: %s", why)
        return None

    def __getstate__(self) -> dict:
        """Pickled with its digests made (a child process and its lock stay here)."""
        return {"records": self.records, "digests": self.result()}

    def __setstate__(self, state: dict) -> None:
        self.records, self._digests = state["records"], state["digests"]
        self._child = self._folder = self._done = None


#: Seconds a child may take to digest records, and as many again per million records.
CHILD_TIMEOUT_S = 60.0

#: Prefix of the folders handing records to a child, and the file of its digests in them.
_PREFIX = "landpipe-digests-"
_DIGESTS = "digests"
_SHM = Path("/dev/shm")


def _scratch(records: pa.Table) -> Path | None:
    """Shared memory, if it and the machine's free memory have room for the records twice
    over; else None: written to disk, the records would cost more than the child spares."""
    needed = 2 * records.nbytes
    try:
        if not (_SHM.is_dir() and shutil.disk_usage(_SHM).free > needed):
            return None
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    return _SHM if available > needed else None


def _locked(folder: Path) -> int:
    """A lock on ``folder`` held by this process until :func:`_end` (or its death)."""
    descriptor = os.open(folder / "lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return descriptor


def _sweep(scratch: Path) -> None:
    """Remove the folders left by processes that ended while their child worked: those whose
    lock no process holds."""
    for folder in scratch.glob(f"{_PREFIX}*"):
        try:
            descriptor = os.open(folder / "lock", os.O_RDWR)
        except OSError:  # being made, or not ours to open
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its process runs
            pass
        else:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(descriptor)


def _start(records: pa.Table, folder: Path) -> subprocess.Popen:
    """``landpipe/arrowbytes.py`` in a child process, on ``records`` written into ``folder``."""
    source = folder / "records.arrow"
    with pa.OSFile(str(source), "wb") as sink, pa.ipc.new_file(sink, records.schema) as writer:
        writer.write_table(records)
    with open(folder / "errors", "wb") as errors:
        # The file this process imported, isolated from the environment and the folder it
        # runs in (-I): it needs only numpy and pyarrow.
        return subprocess.Popen(
            [sys.executable, "-I", arrowbytes.__file__, str(source), str(folder / _DIGESTS)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )


def _end(child: subprocess.Popen | None, folder: Path | None, lock: int | None) -> None:
    """Stop ``child`` if it still runs, and remove its files and lock."""
    if child is not None and child.poll() is None:
        child.kill()
        child.wait()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    if lock is not None:
        os.close(lock)
