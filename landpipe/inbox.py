"""Deliveries on disk: finding them in an inbox folder, moving them out, placing their reports.

An inbox holds deliveries as technicians copy them in: a Shapefile with its sidecar files, a
GeoPackage, a GeoJSON file, a DXF or DGN drawing, a File Geodatabase folder, a folder of
Shapefiles, or a ``.zip`` of any of these. Each processed delivery is moved, all its files
together, into a folder of its own under ``<inbox>/archive/`` (loaded) or ``<inbox>/failed/``
(refused, or not one parcel usable), and its quality report is written beside it.

No Prefect here: ``flows/inbox.py`` wires these into the scheduled flow.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from landpipe.errors import ConfigError, SourceError
from landpipe.report import Report, folder_beside, write_report
from landpipe.sources.files import DRIVERS, SPECIAL, fingerprint, is_report
from landpipe.undecodable import as_bytes, not_utf8

ARCHIVE = "archive"
FAILED = "failed"
#: Suffixes of a delivery that is one file (a Shapefile is its .shp and its sidecars).
FILE_SUFFIXES = frozenset({*DRIVERS, ".zip"} - {".shp", ".gdb"})
#: Files that travel with a Shapefile (same name, any letter case): GDAL's, ArcGIS's, QGIS's.
SHAPEFILE_SIDECARS = frozenset(
    {
        ".shp",
        ".shx",
        ".dbf",
        ".prj",
        ".cpg",
        ".qix",
        ".sbn",
        ".sbx",
        ".fbn",
        ".fbx",
        ".ain",
        ".aih",
        ".atx",
        ".ixs",
        ".mxs",
        ".xml",
        ".shp.xml",
        ".qmd",
        ".qml",
        ".sld",
    }
)
#: Files that travel with a GeoPackage or a file of another format (SQLite's journals).
FILE_SIDECARS = ("-wal", "-shm", "-journal")
_LOCK = ".landpipe-inbox.lock"


@dataclass(frozen=True)
class InboxDelivery:
    """One delivery found in an inbox.

    Attributes
    ----------
    path
        What landpipe opens: the ``.shp``, the file, or the folder.
    parts
        Every file or folder that belongs to it (moved together).
    sha256
        Its content fingerprint, as ``land.batch.source_sha256`` stores it.
    """

    path: Path
    parts: tuple[Path, ...]
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def stem(self) -> str:
        return delivery_stem(self.path)


@dataclass
class Scan:
    """What an inbox holds: deliveries ready to process, deliveries still arriving, the rest."""

    deliveries: list[InboxDelivery] = field(default_factory=list)
    arriving: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    #: Names that are no UTF-8 (written as their bytes, ``x\\xe0y``): see :func:`scan_inbox`.
    misnamed: list[str] = field(default_factory=list)
    #: Entries that could not be read, as ``name: why``: see :func:`scan_inbox`.
    unreadable: list[str] = field(default_factory=list)


def delivery_stem(path: Path) -> str:
    """The delivery's name without its suffix (``thua_dat_22924.shp`` -> ``thua_dat_22924``)."""
    return path.stem if path.suffix else path.name


def _newest_change(parts: tuple[Path, ...]) -> float:
    newest = 0.0
    for part in parts:
        newest = max(newest, part.stat().st_mtime)
        if part.is_dir():
            for inner in part.rglob("*"):
                newest = max(newest, inner.lstat().st_mtime)
    return newest


def _shapefile_parts(shp: Path, names: dict[str, Path]) -> tuple[Path, ...]:
    """The .shp first, then the files named like it with a known sidecar suffix."""
    prefix = shp.name[: -len(shp.suffix)].lower() + "."
    sidecars = [
        path
        for lower, path in names.items()
        if lower.startswith(prefix) and "." + lower[len(prefix) :] in SHAPEFILE_SIDECARS
    ]
    return (shp, *sorted(p for p in sidecars if p != shp))


def scan_inbox(inbox: Path, quiet_seconds: float = 60, *, now: float | None = None) -> Scan:
    """The deliveries in ``inbox`` (not in its subfolders ``archive`` and ``failed``).

    A delivery any of whose files changed less than ``quiet_seconds`` ago is still being
    copied in: it is listed in ``arriving`` and left for the next run. Hidden files are left
    alone. Files that belong to no delivery (a sidecar without its ``.shp``, a note, a report
    of landpipe's written beside a delivery) are listed in ``ignored`` and left where they
    are. So are files and folders whose name is no UTF-8
    (named in TCVN3, VNI or Windows-1258 on an office PC), listed in ``misnamed``: the
    register, Prefect and the report cannot carry such a name, so it waits to be renamed.
    Entries that cannot be read are listed in ``unreadable`` with the reason and left too:
    a link whose target is gone (a shortcut to an unmounted share), a pipe or a device
    (reading one would wait forever), a file the service may not read, or one removed
    while the scan looked at it. So are empty files and folders (all share one fingerprint, and
    none holds a delivery). The other deliveries are processed all the same.

    Raises
    ------
    ConfigError
        ``inbox`` is not a folder.
    """
    if not inbox.is_dir():
        raise ConfigError(f"inbox {inbox} is not a folder")
    now = time.time() if now is None else now
    entries = sorted(
        entry
        for entry in inbox.iterdir()
        if not entry.name.startswith(".") and entry.name not in (ARCHIVE, FAILED)
    )
    misnamed = [entry for entry in entries if not_utf8(entry.name)]
    entries = [entry for entry in entries if not not_utf8(entry.name)]
    unreadable = {entry: why for entry in entries if (why := _unreadable(entry))}
    entries = [entry for entry in entries if entry not in unreadable]
    names = {entry.name.lower(): entry for entry in entries if entry.is_file()}
    claimed: set[Path] = set()
    groups: list[tuple[Path, tuple[Path, ...]]] = []
    for entry in entries:
        if is_report(entry):  # landpipe's own: a report loaded as parcels would retire them
            continue
        if entry.is_dir():
            groups.append((entry, (entry,)))
        elif entry.suffix.lower() == ".shp":
            groups.append((entry, _shapefile_parts(entry, names)))
        elif entry.suffix.lower() in FILE_SUFFIXES:
            extra = [names[n] for s in FILE_SIDECARS if (n := entry.name.lower() + s) in names]
            groups.append((entry, (entry, *extra)))
        else:
            continue
        claimed.update(groups[-1][1])
    scan = Scan(
        ignored=[entry.name for entry in entries if entry not in claimed],
        misnamed=[as_bytes(entry.name) for entry in misnamed],
        unreadable=[f"{entry.name}: {why}" for entry, why in unreadable.items()],
    )
    for path, parts in groups:
        try:
            if now - _newest_change(parts) < quiet_seconds:
                scan.arriving.append(path.name)
                continue
            if _empty(path):  # all empty files share one fingerprint: "loaded before"
                scan.unreadable.append(f"{path.name}: empty (a copy that failed?)")
                continue
            scan.deliveries.append(InboxDelivery(path, parts, fingerprint(path)))
        except OSError as error:
            scan.unreadable.append(f"{path.name}: {_why(error, path)}")
        except SourceError as error:  # a file of it is a pipe or a device
            scan.unreadable.append(f"{path.name}: {str(error).removeprefix(f'{path}: ')}")
    scan.unreadable.sort()
    return scan


def _empty(path: Path) -> bool:
    """Whether the delivery at ``path`` holds no byte: an empty file, or a folder of none."""
    if path.is_dir():
        return not any(inner.is_file() and inner.stat().st_size for inner in path.rglob("*"))
    return path.stat().st_size == 0


def _unreadable(entry: Path) -> str | None:
    """Why the inbox entry ``entry`` is no file or folder landpipe can read, or None."""
    try:
        mode = entry.stat().st_mode  # through a link
    except FileNotFoundError:
        return "a link to something that is not there" if entry.is_symlink() else "removed"
    except OSError as error:
        return _why(error, entry)
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return SPECIAL
    if not os.access(entry, os.R_OK | (os.X_OK if stat.S_ISDIR(mode) else 0)):
        return "this service may not read it (its permissions)"
    return None


def _why(error: OSError, path: Path) -> str:
    """``error`` in a few words, naming the file when it is not ``path`` itself."""
    what = error.strerror or str(error)
    if error.filename is not None and (name := os.fsdecode(error.filename)) != str(path):
        what += f" ({as_bytes(name) if not_utf8(name) else name})"
    return f"cannot be read: {what}"


@contextlib.contextmanager
def inbox_lock(inbox: Path) -> Iterator[None]:
    """Hold the inbox for one run: a second run on the same inbox is refused, not interleaved.

    Raises
    ------
    ConfigError
        Another run holds the inbox.
    """
    handle = (inbox / _LOCK).open("a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise ConfigError(f"inbox {inbox} is being processed by another run") from error
        yield
    finally:
        handle.close()


def destination(inbox: Path, delivery: InboxDelivery, outcome: str, batch: int | None) -> Path:
    """A new folder under ``archive/`` or ``failed/`` for one delivery and its report.

    Named by date, batch and delivery (``2026-11-27_batch12_thua_dat_22924``), so that the
    same file delivered again next month never overwrites this one.
    """
    where = inbox / (ARCHIVE if outcome == ARCHIVE else FAILED)
    label = f"batch{batch}" if batch is not None else "unrecorded"
    base = f"{datetime.now().astimezone():%Y-%m-%d}_{label}_{delivery.stem}"
    target, n = where / base, 1
    while target.exists():
        n += 1
        target = where / f"{base}_{n}"
    return target


def filed_copy(delivery: Path, batch: int) -> Path | None:
    """Where the inbox filed ``delivery`` (its path in the inbox) of batch ``batch``, if it
    did: in the latest of the folders :func:`destination` names for it."""
    stem = glob.escape(delivery_stem(delivery))
    filed = [
        folder / delivery.name
        for kind in (ARCHIVE, FAILED)
        for folder in delivery.parent.glob(f"{kind}/*_batch{batch}_{stem}*")
        if (folder / delivery.name).exists()
    ]
    return max(filed, key=lambda path: path.parent.name) if filed else None


def move_delivery(delivery: InboxDelivery, target: Path) -> Path:
    """Move every part of ``delivery`` into the new folder ``target``; return its new path.

    The ``.shp`` moves first: a run stopped halfway leaves sidecars without their ``.shp``,
    which a later scan ignores, rather than a Shapefile without its sidecars, which it would
    try to load.
    """
    target.mkdir(parents=True, exist_ok=False)
    for part in delivery.parts:
        shutil.move(part, target / part.name)
    return target / delivery.path.name


def report_folder(delivery_path: Path, report_dir: str | Path | None, home: Path) -> Path:
    """Where the report of a delivery goes: ``report_dir``, else beside the delivery, else
    ``<home>/reports`` when the delivery's folder cannot be written to."""
    return Path(report_dir) if report_dir is not None else folder_beside(delivery_path, home)


def write_report_or_fallback(engine: Engine, batch_id: int, folder: Path, home: Path) -> Report:
    """:func:`landpipe.report.write_report` into ``folder``, or into ``<home>/reports`` when
    ``folder`` cannot be written (a read-only share, no permission)."""
    try:
        return write_report(engine, batch_id, folder)
    except OSError:
        if folder == home / "reports":
            raise
        return write_report(engine, batch_id, home / "reports")
