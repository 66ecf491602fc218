"""Reading deliveries (sources/): every format the reader claims, layers, CRS, fingerprints."""

from __future__ import annotations

import shutil
import zipfile

import pytest
import shapely

from landpipe import synth
from landpipe.errors import CRSError, LayerError, SourceError
from landpipe.sources import read_delivery
from landpipe.sources.files import fingerprint
from tests.delivery_files import pipes
from tests.parcels import delivery, record

FORMATS = {
    ".shp": "ESRI Shapefile",
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".gdb": "OpenFileGDB",
}


@pytest.fixture(scope="module")
def sample_frame():
    return synth.generate_delivery("22924", n_parcels=200, seed=7)


@pytest.mark.parametrize("suffix", FORMATS)
def test_every_format_reads_the_same_parcels(tmp_path, sample_frame, suffix):
    path = tmp_path / f"thua_dat{suffix}"
    sample_frame.to_file(path, driver=FORMATS[suffix])
    read = read_delivery(path)
    assert read.source.driver == FORMATS[suffix]
    assert read.crs.label == "EPSG:9218" and read.crs.how == "file"
    assert len(read.parcels) == len(sample_frame)
    assert read.field_mapping["sheet_no"] in ("SoHieuToBanDo", "SoHieuToBa")
    parcels = read.parcels.dropna(subset=["parcel_no", "sheet_no"])
    keys = zip(parcels.sheet_no, parcels.parcel_no, strict=True)
    owners = dict(zip(keys, parcels.owner_name, strict=True))
    expected = sample_frame.dropna(subset=["SoThuTuThua", "SoHieuToBanDo"])
    for sheet, number, owner in (
        expected[["SoHieuToBanDo", "SoThuTuThua", "TenChu"]].head(20).values
    ):
        assert owners[(sheet, number)] == owner


def test_parcel_layer_is_chosen_by_content(tmp_path, sample_frame):
    path = tmp_path / "export.gpkg"
    labels = sample_frame.copy()
    labels["geometry"] = shapely.point_on_surface(labels.geometry.values)
    labels[["SoThuTuThua", "geometry"]].to_file(path, layer="nhan_thua")
    sample_frame.to_file(path, layer="thua_dat")
    sample_frame[["geometry"]].to_file(path, layer="ranh_gioi")
    assert read_delivery(path).layer == "thua_dat"
    assert read_delivery(path, layer="thua_dat").layer == "thua_dat"
    with pytest.raises(LayerError, match="no layer 'x'"):
        read_delivery(path, layer="x")


def test_a_layer_of_points_is_no_parcel_layer(tmp_path):
    points = delivery([record(i) for i in range(3)])
    points["geometry"] = shapely.point_on_surface(points.geometry.values)
    path = tmp_path / "diem.shp"
    points.to_file(path)
    with pytest.raises(LayerError, match=r"holds no parcel layer: its only layer \(diem\) holds"):
        read_delivery(path)
    with pytest.raises(LayerError, match="layer 'diem' holds points, not parcels"):
        read_delivery(path, layer="diem")


def test_crs_is_inferred_only_when_one_system_fits(tmp_path):
    path = tmp_path / "no_prj.shp"
    delivery([record(i) for i in range(3)], crs=None).to_file(path)
    read = read_delivery(path)
    assert (read.crs.label, read.crs.how) == ("EPSG:9218", "inferred")

    utm = tmp_path / "utm_no_prj.shp"
    frame = delivery([record(i) for i in range(3)]).to_crs(3405).set_crs(None, allow_override=True)
    frame.to_file(utm)
    read = read_delivery(utm)
    assert (read.crs.label, read.crs.how) == ("EPSG:3405", "inferred")
    # Reprojected back to storage: the lots are where they were, to the millimetre.
    original = delivery([record(0)]).geometry.iloc[0]
    assert read.parcels.geometry.iloc[0].symmetric_difference(original).area < 1e-3


def test_crs_option_overrides_the_file(tmp_path):
    path = tmp_path / "wrong.gpkg"
    delivery([record(i) for i in range(3)], crs=None).set_crs(3405).to_file(path)
    with pytest.raises(CRSError, match="fit VN-2000 / TM-3 108-30"):
        read_delivery(path)
    assert read_delivery(path, crs="EPSG:9218").crs.how == "option"
    with pytest.raises(CRSError, match="not a coordinate reference system"):
        read_delivery(path, crs="EPSG:nonsense")


def test_delivery_without_any_geometry_is_refused(tmp_path):
    path = tmp_path / "no_geometry.gpkg"
    delivery([record(i, geometry=None) for i in range(3)]).to_file(path)
    with pytest.raises(LayerError, match="no record has a geometry"):
        read_delivery(path)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        read_delivery(tmp_path / "nothing.shp")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match="unsupported delivery type"):
        read_delivery(tmp_path / "notes.txt")
    shp = tmp_path / "lonely.shp"
    delivery([record(0)]).to_file(shp)
    shp.with_suffix(".dbf").unlink()
    with pytest.raises(SourceError, match=r"missing \.dbf"):
        read_delivery(shp)
    # In a zip, named by the zip and its member: the folder it was unpacked into is gone.
    bundle = tmp_path / "giao_nop.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        for part in (shp, shp.with_suffix(".shx")):
            archive.write(part, f"to_5/{part.name}")
    with pytest.raises(SourceError) as refused:
        read_delivery(bundle)
    assert str(refused.value) == f"{bundle}: to_5/lonely.shp: incomplete Shapefile, missing .dbf"
    # A report's findings layer has parcel keys: loaded, it would retire the parcels it lacks.
    report = tmp_path / "thua.gpkg.batch-3.findings.gpkg"
    delivery([record(0)]).to_file(report)
    with pytest.raises(SourceError, match="a report of landpipe's, not a delivery"):
        read_delivery(report)


def test_a_pipe_socket_or_device_is_refused_not_waited_on(tmp_path):
    """Opened for reading, a named pipe waits for a writer that never comes: the read, the
    fingerprint and the Shapefile check would hang the load (and the inbox) for good."""
    pipe = tmp_path / "thua_dat.gpkg"
    folder = tmp_path / "giao_nop"
    folder.mkdir()
    delivery([record(i) for i in range(3)]).to_file(folder / "thua.gpkg")
    shp = tmp_path / "shp" / "thua.shp"
    shp.parent.mkdir()
    delivery([record(i) for i in range(3)]).to_file(shp)
    shp.with_suffix(".shx").unlink()
    with pipes(pipe, folder / "ghi_chu.gpkg", shp.with_suffix(".shx")):
        with pytest.raises(SourceError, match=r"thua_dat\.gpkg: not a file or a folder \(a pipe"):
            read_delivery(pipe)
        with pytest.raises(SourceError, match="not a file or a folder"):
            fingerprint(pipe)
        with pytest.raises(SourceError, match=r"giao_nop: ghi_chu\.gpkg is not a file or a fold"):
            read_delivery(folder)
        with pytest.raises(SourceError, match=r"thua\.shp: thua\.shx is not a file or a folder"):
            read_delivery(shp)
        # Nor is a fingerprint made of the rest: a refusal recorded under it would make the
        # same files, delivered again without the pipe, "refused before".
        for delivered in (folder, shp):
            with pytest.raises(SourceError, match="is not a file or a folder"):
                fingerprint(delivered)
    # /dev/null is a device: refused, though it reads (empty) without waiting.
    with pytest.raises(SourceError, match="not a file or a folder"):
        read_delivery("/dev/null")


def test_fingerprint_follows_content_not_name(tmp_path):
    first = tmp_path / "a" / "thua.shp"
    first.parent.mkdir()
    delivery([record(i) for i in range(3)]).to_file(first)
    second = tmp_path / "b" / "renamed.shp"
    second.parent.mkdir()
    for part in first.parent.iterdir():
        shutil.copy(part, second.parent / f"renamed{part.suffix}")
    assert fingerprint(first) == fingerprint(second)
    delivery([record(i, TenChu="Khác") for i in range(3)]).to_file(second)
    assert fingerprint(first) != fingerprint(second)


def test_a_report_beside_a_folder_delivery_is_not_part_of_it(tmp_path):
    folder = tmp_path / "giao_nop"
    folder.mkdir()
    delivery([record(i) for i in range(3)]).to_file(folder / "thua.shp")
    before = fingerprint(folder)
    # What `landpipe load giao_nop/thua.shp` writes beside the delivery:
    delivery([record(9)]).to_file(folder / "thua.shp.batch-1.findings.gpkg", driver="GPKG")
    (folder / "thua.shp.batch-1.report.html").write_text("<html></html>")
    assert fingerprint(folder) == before
    parcels = read_delivery(folder).parcels
    assert len(parcels) == 3  # the Shapefile, not the report's GeoPackage
    (folder / "notes.txt").write_text("a delivered file counts")
    assert fingerprint(folder) != before
