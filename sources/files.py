"""Open a delivery: find its files, fingerprint them, pick the parcel layer and read it.

A delivery is a file (Shapefile, GeoPackage, GeoJSON, DXF, DGN), a folder (File Geodatabase,
or a folder of Shapefiles) or a ``.zip`` of any of these. A zip is unpacked into a private
temporary folder, refusing any member that would land outside it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import stat
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import geopandas as gpd
import pandas as pd
import pyarrow as pa
import pyogrio
import pyogrio.errors
import shapely

# pyogrio's own parsing of datetimes read as text, so that a frame made here from an Arrow
# read is the one ``read_dataframe`` makes (it has no public function for that step).
from pyogrio.geopandas import _try_parse_datetime

from landpipe.errors import DeliveryError, LayerError, SourceError
from landpipe.sources.fields import match_fields
from landpipe.undecodable import as_bytes, not_utf8

#: Driver by file suffix, for the formats landpipe reads. A folder ending in .gdb is a FileGDB.
DRIVERS = {
    ".shp": "ESRI Shapefile",
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".gdb": "OpenFileGDB",
    ".dxf": "DXF",
    ".dgn": "DGN",
}
FORMAT_NAMES = {
    "ESRI Shapefile": "Shapefile",
    "GPKG": "GeoPackage",
    "GeoJSON": "GeoJSON file",
    "OpenFileGDB": "File Geodatabase",
    "DXF": "DXF drawing",
    "DGN": "DGN (MicroStation v7) drawing",
    "ZIP": "zip archive",
}
#: Inside a zip or a folder, the kinds of dataset looked for, in order of preference.
_DATASET_ORDER = (".gdb", ".gpkg", ".shp", ".geojson", ".json", ".dxf", ".dgn")
#: The files that make up one Shapefile; all present ones are fingerprinted together.
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
#: Layer geometry types as GDAL names them. A layer of unknown type may hold polygons.
POLYGONS = {"Polygon", "MultiPolygon", "Polygon Z", "MultiPolygon Z"}
POLYGONAL = POLYGONS | {"Unknown", None}
LINES = {"LineString", "MultiLineString", "LineString Z", "MultiLineString Z"}
POINTS = {"Point", "MultiPoint", "Point Z", "MultiPoint Z"}


@dataclass(frozen=True)
class Source:
    """A delivery's file(s) on disk: what it is, its content fingerprint, what GDAL opens.

    Attributes
    ----------
    path
        The delivery as the user named it.
    driver
        The GDAL driver of the dataset.
    sha256
        Fingerprint of the delivery's content (see :func:`fingerprint`).
    dataset
        What GDAL opens: ``path`` itself, or a file or folder inside an unpacked zip.
    """

    path: Path
    driver: str
    sha256: str
    dataset: Path = None  # type: ignore[assignment]
    workdir: tempfile.TemporaryDirectory | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.dataset is None:
            object.__setattr__(self, "dataset", self.path)


#: Endings of the files landpipe itself writes beside a delivery (its quality report). They
#: are not part of a delivery: a folder delivery is fingerprinted and searched without them.
REPORT_ENDINGS = (".report.html", ".findings.gpkg")


def is_report(path: Path) -> bool:
    """Whether ``path`` is one of landpipe's own report files, not delivered content."""
    return path.name.lower().endswith(REPORT_ENDINGS)


def fingerprint(path: Path) -> str:
    """SHA-256 over a delivery's content: the file, a Shapefile's parts, or a folder's files.

    Each part contributes its name relative to the delivery (lower-cased suffix for Shapefile
    parts) and its bytes, so renaming the delivery keeps its fingerprint.

    Raises
    ------
    SourceError
        A part is a pipe, a socket or a device (:func:`is_special`).
    OSError
        A part cannot be read.
    """
    refuse_special(path)  # a pipe would wait forever; and its refusal is no batch of this content
    if path.is_dir():
        parts = {
            p.relative_to(path).as_posix(): p
            for p in sorted(path.rglob("*"))
            if p.is_file() and not is_report(p)
        }
    elif path.suffix.lower() == ".shp":
        parts = {ext: p for ext in SHAPEFILE_PARTS for p in _sidecars(path, ext)}
    else:
        parts = {"": path}
    digest = hashlib.sha256()
    for name, part in parts.items():
        digest.update(os.fsencode(name) + b"\0")  # as .encode() for a UTF-8 name
        with part.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _sidecars(shp: Path, ext: str) -> list[Path]:
    """The file beside ``shp`` with suffix ``ext``, in any letter case."""
    return [p for p in shp.parent.glob(shp.stem + ".*") if p.suffix.lower() == ext]


def open_source(path: str | Path, *, fingerprinted: bool = True) -> Source:
    """Check that ``path`` is a delivery landpipe can read, and fingerprint it.

    ``fingerprinted=False`` leaves ``sha256`` empty, for a caller that fingerprints the
    delivery meanwhile (:func:`landpipe.sources.read_delivery`, while GDAL reads it).

    Raises
    ------
    SourceError
        The path does not exist, is of an unsupported kind, a Shapefile lacks a part or is
        truncated, a zip is broken or has a member that escapes it, a folder holds a file
        whose name is no UTF-8, the delivery or one of its files is a pipe, a socket or a
        device, or the delivery is a report of landpipe's.
    LayerError
        A zip or folder holds no dataset landpipe reads.
    """
    path = Path(path)
    dataset, driver, workdir = _locate(path)
    return Source(path, driver, fingerprint(path) if fingerprinted else "", dataset, workdir)


def _locate(path: Path) -> tuple[Path, str, tempfile.TemporaryDirectory | None]:
    """What GDAL opens for the delivery at ``path``, its driver, and the folder a zip is
    unpacked into; checked as :func:`open_source` says."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    refuse_special(path)
    if is_report(path):  # its findings layer has parcel keys: loaded, it would retire parcels
        raise SourceError(f"{path}: a report of landpipe's, not a delivery")
    if path.is_dir():
        for inner in sorted(path.rglob("*")):
            if not_utf8(inner.name):
                name = as_bytes(inner.relative_to(path).as_posix())
                raise SourceError(
                    f"{path}: the name of {name} is not UTF-8 (TCVN3, VNI or Windows-1258?):"
                    " rename it"
                )
    if path.suffix.lower() == ".zip":
        workdir = tempfile.TemporaryDirectory(prefix="landpipe-zip-")
        try:
            _unzip(path, Path(workdir.name))
            dataset, driver = _find_dataset(path, Path(workdir.name))
            _check_shapefiles(dataset, driver)
        except DeliveryError as error:  # named by the zip's member, not the folder gone now
            workdir.cleanup()
            unpacked = f"{Path(workdir.name)}{os.sep}"
            error.args = (str(error).replace(unpacked, f"{path}: "), *error.args[1:])
            raise
        except BaseException:
            workdir.cleanup()
            raise
        return dataset, driver, workdir
    if path.is_dir() and path.suffix.lower() != ".gdb":
        dataset, driver = _find_dataset(path, path)
        _check_shapefiles(dataset, driver)
        return dataset, driver, None
    driver = DRIVERS.get(path.suffix.lower())
    if driver is None:
        known = ", ".join(sorted([*DRIVERS, ".zip"]))
        raise SourceError(
            f"{path}: unsupported delivery type {path.suffix or '(none)'!r}; known: {known}"
        )
    _check_shapefiles(path, driver)
    return path, driver, None


#: What :func:`is_special` finds.
SPECIAL = "not a file or a folder (a pipe, a socket or a device)"


def is_special(path: Path) -> bool:
    """Whether ``path`` (through a link) is neither a regular file nor a folder: reading a
    pipe waits for a writer that never comes."""
    try:
        mode = path.stat().st_mode
    except OSError:  # a link to nothing: whoever opens it says so
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def refuse_special(path: Path) -> None:
    """Refuse the delivery at ``path`` if it, a file in its folder or a file of its Shapefile
    is a pipe, a socket or a device (:func:`is_special`): GDAL, the Shapefile check and the
    fingerprint would wait on a pipe forever. Checked before the fingerprint is made, so no
    refused batch is recorded under the content of the delivery's other files.

    Raises
    ------
    SourceError
        Naming the file, relative to the delivery's folder.
    """
    if is_special(path):
        raise SourceError(f"{path}: {SPECIAL}")
    if path.is_dir():
        folder, parts = path, path.rglob("*")
    elif path.suffix.lower() == ".shp":
        folder, parts = path.parent, path.parent.glob(f"{glob.escape(path.stem)}.*")
    else:
        return
    for part in sorted(parts):
        if is_special(part):
            raise SourceError(f"{path}: {part.relative_to(folder).as_posix()} is {SPECIAL}")


def _check_shapefiles(dataset: Path, driver: str) -> None:
    if driver != "ESRI Shapefile":
        return
    for shp in [dataset] if dataset.is_file() else sorted(dataset.glob("*.[sS][hH][pP]")):
        missing = [ext for ext in (".shx", ".dbf") if not _sidecars(shp, ext)]
        if missing:
            raise SourceError(f"{shp}: incomplete Shapefile, missing {' and '.join(missing)}")
        check_shapefile(shp)


def _unzip(archive: Path, target: Path) -> None:
    """Unpack ``archive`` into ``target``, refusing members that would land outside it."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                name = PurePosixPath(member.filename.replace("\\", "/"))
                if (
                    name.is_absolute()
                    or ".." in name.parts
                    or (name.parts and ":" in name.parts[0])
                ):
                    raise SourceError(
                        f"{archive}: member {member.filename!r} would be written outside the "
                        "archive's folder; refused"
                    )
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise SourceError(f"{archive}: member {member.filename!r} is a symbolic link")
                destination = target.joinpath(*name.parts)
                if member.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as packed, destination.open("wb") as unpacked:
                    shutil.copyfileobj(packed, unpacked, 1 << 20)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise SourceError(f"{archive}: not a readable zip archive ({err})") from err


def _find_dataset(delivery: Path, folder: Path) -> tuple[Path, str]:
    """The dataset inside an unpacked zip or a folder, and its driver."""
    found: dict[str, list[Path]] = {}
    for candidate in sorted(folder.rglob("*")):
        suffix = candidate.suffix.lower()
        if (
            suffix not in _DATASET_ORDER
            or is_report(candidate)
            or any(p.suffix.lower() == ".gdb" for p in candidate.parents)
        ):
            continue
        if (suffix == ".gdb") == candidate.is_dir():
            found.setdefault(suffix, []).append(candidate)
    for suffix in _DATASET_ORDER:
        datasets = found.get(suffix, [])
        if not datasets:
            continue
        if suffix == ".shp":
            folders = sorted({shp.parent for shp in datasets})
            if len(folders) > 1:
                names = ", ".join(str(f.relative_to(folder)) for f in folders)
                raise LayerError(f"{delivery}: Shapefiles in several folders ({names})")
            return (datasets[0] if len(datasets) == 1 else folders[0]), DRIVERS[".shp"]
        if len(datasets) > 1:
            names = ", ".join(str(d.relative_to(folder)) for d in datasets)
            raise LayerError(f"{delivery}: several {suffix} datasets ({names}); deliver one")
        return datasets[0], DRIVERS[suffix]
    raise LayerError(f"{delivery}: holds no dataset landpipe reads ({', '.join(_DATASET_ORDER)})")


def check_shapefile(shp: Path) -> None:
    """Refuse a truncated Shapefile: GDAL reads one, silently dropping the missing geometries.

    The .shp and .shx headers state their file length (bytes 24-27, big-endian, in 16-bit
    words); the DBF header states its record count and sizes.
    """
    for part in (shp, _sidecars(shp, ".shx")[0]):
        with part.open("rb") as handle:
            header = handle.read(100)
        if len(header) < 100 or int.from_bytes(header[:4], "big") != 9994:
            raise SourceError(f"{part}: not a Shapefile part (bad header)")
        declared = int.from_bytes(header[24:28], "big") * 2
        actual = part.stat().st_size
        if actual < declared:
            raise SourceError(
                f"{part}: truncated Shapefile ({actual} of {declared} bytes declared in its header)"
            )
    dbf = _sidecars(shp, ".dbf")[0]
    with dbf.open("rb") as handle:
        header = handle.read(12)
    if len(header) < 12:
        raise SourceError(f"{dbf}: not a dBASE file (bad header)")
    records = int.from_bytes(header[4:8], "little")
    header_size = int.from_bytes(header[8:10], "little")
    record_size = int.from_bytes(header[10:12], "little")
    declared = header_size + records * record_size
    if dbf.stat().st_size < declared:
        raise SourceError(
            f"{dbf}: truncated dBASE file ({dbf.stat().st_size} of {declared} bytes for "
            f"{records} records)"
        )


def _read_error(source: Source, err: Exception) -> SourceError:
    """A one-line error for a file GDAL cannot read, without GDAL's generic hints."""
    detail = (str(err).strip().splitlines() or [type(err).__name__])[0].split(";")[0]
    for shown in (source.dataset, source.path):
        detail = detail.replace(f"'{shown}'", "").replace(str(shown), "")
    detail = detail.strip(" :")
    # SQLite's words for a GeoPackage cut short or damaged, after the statement that met them.
    for damaged in ("database disk image is malformed", "file is not a database"):
        if damaged in detail:
            detail = f"damaged or cut short: SQLite says {damaged}"
    return SourceError(f"{source.path}: not a readable {FORMAT_NAMES[source.driver]} ({detail})")


#: Drawings whose parcels are boundary lines plus label texts, in one layer.
DRAWING_DRIVERS = {"DXF", "DGN"}


@dataclass(frozen=True)
class ParcelLayer:
    """The layer that holds the parcels, and whether they are polygons or linework.

    For linework, ``labels`` names a separate point layer of labels (a line Shapefile delivered
    with a point Shapefile); a drawing (DXF, DGN) holds its labels in the same layer.
    """

    name: str
    linework: bool = False
    labels: str | None = None


def _list_layers(source: Source) -> list[tuple[str, str | None]]:
    try:
        layers = pyogrio.list_layers(source.dataset)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as err:
        raise _read_error(source, err) from err
    return [(str(name), geometry_type) for name, geometry_type in layers]


def choose_layer(source: Source, layer: str | None = None) -> ParcelLayer:
    """The parcel layer: ``layer`` when given, the only layer, or the one that looks like parcels.

    A layer looks like parcels when its geometry is polygonal and its fields include a parcel
    number (see ``schemas/field_mappings.yaml``). With no such layer, a single line layer is
    parcel linework, labelled by the single point layer beside it if there is one.
    """
    layers = _list_layers(source)
    kinds = dict(layers)
    names = [name for name, _ in layers]
    if not names:
        raise LayerError(f"{source.path}: holds no layer")
    if source.driver in DRAWING_DRIVERS:
        return ParcelLayer(layer or names[0], linework=True)
    points = [name for name, kind in layers if kind in POINTS]
    if layer is not None:
        if layer not in names:
            raise LayerError(f"{source.path}: no layer {layer!r}; layers: {', '.join(names)}")
        if kinds[layer] in POINTS:
            raise LayerError(f"{source.path}: layer {layer!r} holds points, not parcels")
        linework = kinds[layer] in LINES
        return ParcelLayer(layer, linework, points[0] if linework and len(points) == 1 else None)
    if len(names) == 1:
        if kinds[names[0]] in POINTS:  # labels, or survey points: no parcel is drawn
            raise LayerError(
                f"{source.path}: holds no parcel layer: its only layer ({names[0]}) holds points"
            )
        return ParcelLayer(names[0], kinds[names[0]] in LINES)
    parcel_layers = []
    for name, geometry_type in layers:
        if geometry_type not in POLYGONAL:
            continue
        info = pyogrio.read_info(source.dataset, layer=name)
        if "parcel_no" in match_fields(list(info["fields"])):
            parcel_layers.append(name)
    if len(parcel_layers) == 1:
        return ParcelLayer(parcel_layers[0])
    lines = [name for name, kind in layers if kind in LINES]
    if not parcel_layers and len(lines) == 1:
        return ParcelLayer(lines[0], linework=True, labels=points[0] if len(points) == 1 else None)
    found = ", ".join(parcel_layers or names)
    raise LayerError(
        f"{source.path}: cannot tell the parcel layer among {found}; name it with --layer"
    )


def read_layer(source: Source, layer: str, *, encoding: str | None = None) -> gpd.GeoDataFrame:
    """Read one layer as delivered (no field mapping, no reprojection): :func:`read_records`'
    frame."""
    return read_records(source, layer, encoding=encoding)[0]


#: Key of the table metadata saying which ``encoding`` GDAL read the records with.
READ_ENCODING = b"landpipe:read_encoding"


def read_records(
    source: Source, layer: str, *, encoding: str | None = None
) -> tuple[gpd.GeoDataFrame, pa.Table]:
    """Read one layer as delivered through Arrow: the records as a frame, and as GDAL handed
    them over (an Arrow table, geometry as WKB), from which a record's hash is made
    (:func:`landpipe.sources.records.record_hashes`).

    The frame is what ``pyogrio.read_dataframe(..., use_arrow=True)`` makes of the same read.
    ``encoding`` is passed to GDAL for formats whose text carries no encoding of its own
    (Shapefile DBF, DGN); ``"latin1"`` reads the raw bytes as code points for later decoding.
    :func:`read_table` and :func:`records_frame` are its two steps, for a caller with work to
    start on the records before the frame is built.

    Raises
    ------
    SourceError
        GDAL cannot read the layer (a truncated or corrupt file).
    LayerError
        The layer holds no features.
    """
    meta, table = read_table(source, layer, encoding=encoding)
    return records_frame(source, layer, meta, table), table


def read_table(source: Source, layer: str, *, encoding: str | None = None) -> tuple[dict, pa.Table]:
    """The first step of :func:`read_records`: the layer's metadata and records, as GDAL
    hands them over."""
    with _read_errors(source):
        meta, table = pyogrio.read_arrow(
            source.dataset, layer=layer, encoding=encoding, datetime_as_string=True
        )
    # Which text a record's bytes hold depends on how GDAL was asked to read them.
    metadata = {**(table.schema.metadata or {}), READ_ENCODING: (encoding or "").encode()}
    return meta, table.replace_schema_metadata(metadata)


def records_frame(source: Source, layer: str, meta: dict, table: pa.Table) -> gpd.GeoDataFrame:
    """The second step of :func:`read_records`: the frame of records :func:`read_table`
    read."""
    with _read_errors(source):
        frame = _frame(meta, table)
    if len(frame) == 0:
        raise LayerError(f"{source.path}: layer {layer!r} holds no parcels")
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name is None:
        raise LayerError(f"{source.path}: layer {layer!r} has no geometry")
    return frame


@contextlib.contextmanager
def _read_errors(source: Source) -> Iterator[None]:
    """GDAL's errors reading ``source`` as :class:`SourceError`; its warnings silenced."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as err:
        raise _read_error(source, err) from err
    except Exception as err:  # GDAL reports corrupt records as generic errors
        if type(err).__module__.startswith("pyogrio"):
            raise _read_error(source, err) from err
        raise


def _frame(meta: dict, table: pa.Table) -> gpd.GeoDataFrame | pd.DataFrame:
    """The frame ``pyogrio.read_dataframe`` makes of an Arrow read (its ``use_arrow`` branch,
    with its defaults), leaving ``table`` whole."""
    geometry_name = meta["geometry_name"] or "wkb_geometry"
    has_geometry = geometry_name in table.column_names
    attributes = table.drop_columns([geometry_name]) if has_geometry else table
    try:
        frame = attributes.to_pandas()
    except UnicodeDecodeError as err:
        raise pyogrio.errors.DataSourceError(
            "The file being read is not encoded in UTF-8; please use_arrow=False"
        ) from err
    for dtype, column in zip(meta["dtypes"], meta["fields"], strict=True):
        if dtype is not None and dtype.startswith("datetime") and dtype != "datetime64[D]":
            frame[column] = _try_parse_datetime(frame[column], False, True)
    for subtype, column in zip(meta["ogr_subtypes"], meta["fields"], strict=True):
        if subtype == "OFSTJSON" and pd.api.types.infer_dtype(frame[column]) == "string":
            with contextlib.suppress(ValueError):  # else left as text, as pyogrio does
                frame[column] = frame[column].map(json.loads, na_action="ignore")
    if not has_geometry:
        return frame
    wkb = table[geometry_name].to_numpy(zero_copy_only=False)
    frame["geometry"] = shapely.from_wkb(wkb, on_invalid="raise")
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=meta["crs"])


def sample_text(source: Source, layer: str, limit: int = 5000) -> dict[str, list[bytes]]:
    """Raw bytes of the text values of the first ``limit`` records, by field (DBF sources)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        options = {"layer": layer, "read_geometry": False, "max_features": limit}
        try:
            # ENCODING="" hands the DBF's bytes over as they are (no recoding: much faster).
            _, table = pyogrio.read_arrow(source.dataset, **options, ENCODING="")
            latin1 = False
        except UnicodeDecodeError:  # field names in a legacy encoding: no UTF-8 for Arrow
            _, table = pyogrio.read_arrow(source.dataset, **options, encoding="latin1")
            latin1 = True
    samples: dict[str, list[bytes]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        if latin1:
            samples[name] = [v.encode("latin1") for v in column.to_pylist() if v is not None]
        else:
            samples[name] = [v for v in column.cast(pa.large_binary()).to_pylist() if v is not None]
    return samples


def declared_encoding(source: Source, layer: str) -> str | None:
    """What a Shapefile's ``.cpg`` says, if it has one (it can lie)."""
    shp = source.dataset if source.dataset.is_file() else source.dataset / f"{layer}.shp"
    cpg = _sidecars(shp, ".cpg")
    if not cpg:
        return None
    return cpg[0].read_text(encoding="ascii", errors="replace").strip() or None
