"""Open a delivery: find its files, fingerprint them, pick the parcel layer and read it."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pyogrio
import pyogrio.errors

from landpipe.errors import LayerError, SourceError
from landpipe.sources.fields import match_fields

#: Driver by file suffix, for the formats landpipe reads. A folder ending in .gdb is a FileGDB.
DRIVERS = {
    ".shp": "ESRI Shapefile",
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".gdb": "OpenFileGDB",
}
FORMAT_NAMES = {
    "ESRI Shapefile": "Shapefile",
    "GPKG": "GeoPackage",
    "GeoJSON": "GeoJSON file",
    "OpenFileGDB": "File Geodatabase",
}
#: The files that make up one Shapefile; all present ones are fingerprinted together.
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
POLYGONAL = {"Polygon", "MultiPolygon", "Polygon Z", "MultiPolygon Z", "Unknown", None}


@dataclass(frozen=True)
class Source:
    """A delivery's file(s) on disk: what it is and its content fingerprint."""

    path: Path
    driver: str
    sha256: str


def fingerprint(path: Path) -> str:
    """SHA-256 over a delivery's content: the file, a Shapefile's parts, or a folder's files.

    Each part contributes its name relative to the delivery (lower-cased suffix for Shapefile
    parts) and its bytes, so renaming the delivery keeps its fingerprint.
    """
    if path.is_dir():
        parts = {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*")) if p.is_file()}
    elif path.suffix.lower() == ".shp":
        parts = {ext: p for ext in SHAPEFILE_PARTS for p in _sidecars(path, ext)}
    else:
        parts = {"": path}
    digest = hashlib.sha256()
    for name, part in parts.items():
        digest.update(name.encode() + b"\0")
        with part.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _sidecars(shp: Path, ext: str) -> list[Path]:
    """The file beside ``shp`` with suffix ``ext``, in any letter case."""
    return [p for p in shp.parent.glob(shp.stem + ".*") if p.suffix.lower() == ext]


def open_source(path: str | Path) -> Source:
    """Check that ``path`` is a delivery landpipe can read, and fingerprint it.

    Raises
    ------
    SourceError
        The path does not exist, is of an unsupported kind, or a Shapefile lacks a part.
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file or folder")
    driver = DRIVERS.get(path.suffix.lower())
    if driver is None:
        known = ", ".join(sorted(DRIVERS))
        raise SourceError(
            f"{path}: unsupported delivery type {path.suffix or '(none)'!r}; known: {known}"
        )
    if driver == "ESRI Shapefile":
        missing = [ext for ext in (".shx", ".dbf") if not _sidecars(path, ext)]
        if missing:
            raise SourceError(f"{path}: incomplete Shapefile, missing {' and '.join(missing)}")
        check_shapefile(path)
    return Source(path=path, driver=driver, sha256=fingerprint(path))


def check_shapefile(shp: Path) -> None:
    """Refuse a truncated Shapefile: GDAL reads one, silently dropping the missing geometries.

    The .shp and .shx headers state their file length (bytes 24-27, big-endian, in 16-bit
    words); the DBF header states its record count and sizes.
    """
    for part in (shp, _sidecars(shp, ".shx")[0]):
        header = part.read_bytes()[:100]
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
    detail = detail.replace(f"'{source.path}'", "").replace(str(source.path), "").strip(" :")
    return SourceError(f"{source.path}: not a readable {FORMAT_NAMES[source.driver]} ({detail})")


def choose_layer(source: Source, layer: str | None = None) -> str:
    """The parcel layer: ``layer`` when given, the only layer, or the one that looks like parcels.

    A layer looks like parcels when its geometry is polygonal and its fields include a parcel
    number (see ``schemas/field_mappings.yaml``).
    """
    try:
        layers = pyogrio.list_layers(source.path)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as err:
        raise _read_error(source, err) from err
    names = [str(name) for name, _ in layers]
    if not names:
        raise LayerError(f"{source.path}: holds no layer")
    if layer is not None:
        if layer not in names:
            raise LayerError(f"{source.path}: no layer {layer!r}; layers: {', '.join(names)}")
        return layer
    if len(names) == 1:
        return names[0]
    parcel_layers = []
    for name, geometry_type in layers:
        if geometry_type not in POLYGONAL:
            continue
        info = pyogrio.read_info(source.path, layer=name)
        if "parcel_no" in match_fields(list(info["fields"])):
            parcel_layers.append(str(name))
    if len(parcel_layers) == 1:
        return parcel_layers[0]
    found = ", ".join(parcel_layers or names)
    raise LayerError(
        f"{source.path}: cannot tell the parcel layer among {found}; name it with --layer"
    )


def read_layer(source: Source, layer: str) -> gpd.GeoDataFrame:
    """Read one layer as delivered (no field mapping, no reprojection).

    Raises
    ------
    SourceError
        GDAL cannot read the layer (a truncated or corrupt file).
    LayerError
        The layer holds no features.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            frame = pyogrio.read_dataframe(source.path, layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as err:
        raise _read_error(source, err) from err
    except Exception as err:  # GDAL reports corrupt records as generic errors
        if type(err).__module__.startswith("pyogrio"):
            raise _read_error(source, err) from err
        raise
    if len(frame) == 0:
        raise LayerError(f"{source.path}: layer {layer!r} holds no parcels")
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name is None:
        raise LayerError(f"{source.path}: layer {layer!r} has no geometry")
    return frame
