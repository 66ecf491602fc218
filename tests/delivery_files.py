"""Real delivery files in every format landpipe reads, written from the generator's truth."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pyogrio
import shapely

from landpipe import synth
from landpipe.sources import encoding as codecs
from tests import linework_fixtures

TEXT_FIELDS = ("TenChu", "DiaChi", "MaXa", "KyHieuMucDichSuDung")


def truth(n_parcels: int = 300, seed: int = 11) -> gpd.GeoDataFrame:
    """A generated commune on one sheet (linework drawings are one sheet), no faults, with
    coordinates to the millimetre as surveyed coordinates are (a DGN stores whole units)."""
    frame = synth.generate_delivery(
        "22924", n_parcels=n_parcels, seed=seed, n_sheets=1, faults=False
    )
    frame["geometry"] = shapely.set_precision(frame.geometry.values, 0.001)
    return frame


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*")):
            bundle.write(path, path.relative_to(folder.parent))
    return archive


def legacy_shapefile(
    frame: gpd.GeoDataFrame, path: Path, encoding: str, cpg: str | None = None
) -> Path:
    """A Shapefile whose DBF text is in ``encoding`` (tcvn3, vni, cp1258), with no .cpg or a
    .cpg saying ``cpg`` (which may lie)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    legacy = frame.copy()
    for name in TEXT_FIELDS:
        legacy[name] = [codecs.encode(v, encoding).decode("latin1") for v in legacy[name]]
    pyogrio.write_dataframe(legacy, path, encoding="latin1")
    path.with_suffix(".cpg").unlink(missing_ok=True)
    if cpg is not None:
        path.with_suffix(".cpg").write_text(cpg)
    return path


def write(kind: str, frame: gpd.GeoDataFrame, folder: Path) -> Path:
    """Write ``frame`` as a delivery of ``kind``; return the path to give ``landpipe load``."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "shp":
        return synth.write_delivery(frame, folder / "thua_dat.shp")
    if kind == "gpkg":
        return synth.write_delivery(frame, folder / "thua_dat.gpkg")
    if kind == "geojson":
        return synth.write_delivery(frame, folder / "thua_dat.geojson")
    if kind == "gdb":
        path = folder / "thua_dat.gdb"
        frame.to_file(path, driver="OpenFileGDB", layer="thua_dat")
        return path
    if kind == "shp.zip":
        inner = folder / "giao_nop"
        synth.write_delivery(frame, inner / "thua_dat.shp")
        points = frame.copy()
        points["geometry"] = points.geometry.representative_point()
        points[["SoThuTuThua", "geometry"]].to_file(inner / "nhan_thua.shp")
        archive = zip_folder(inner, folder / "giao_nop.zip")
        shutil.rmtree(inner)
        return archive
    if kind == "gdb.zip":
        inner = folder / "export"
        inner.mkdir()
        frame.to_file(inner / "thua_dat.gdb", driver="OpenFileGDB", layer="thua_dat")
        archive = zip_folder(inner, folder / "export_gdb.zip")
        shutil.rmtree(inner)
        return archive
    canonical = synth.generate_parcels(
        "22924", n_parcels=len(frame), seed=11, n_sheets=1, faults=False
    )
    canonical["geometry"] = frame.geometry.values
    if kind == "dxf":
        return linework_fixtures.write_dxf(canonical, folder / "to_ban_do.dxf")
    if kind == "dgn":
        return linework_fixtures.write_dgn(canonical, folder / "to_ban_do.dgn")
    if kind == "lines.zip":
        inner = folder / "ranh_thua"
        linework_fixtures.write_line_shapefiles(canonical, inner)
        archive = zip_folder(inner, folder / "ranh_thua.zip")
        shutil.rmtree(inner)
        return archive
    raise ValueError(kind)


KINDS = ("shp", "gpkg", "geojson", "gdb", "shp.zip", "gdb.zip", "dxf", "dgn", "lines.zip")
LINEWORK = {"dxf", "dgn", "lines.zip"}


@contextlib.contextmanager
def pipes(*paths: Path) -> Iterator[None]:
    """Named pipes at ``paths``, and a thread that lets go of any reader waiting on one (it
    opens the pipe to write and closes it: the reader reads an end of file), so that code
    that opens one fails the test instead of hanging it."""
    for path in paths:
        os.mkfifo(path)
    done = threading.Event()

    def release() -> None:
        while not done.wait(0.2):
            for path in paths:
                with contextlib.suppress(OSError):  # no reader waiting: ENXIO
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        yield
    finally:
        done.set()
        releaser.join()
