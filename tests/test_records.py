"""Record hashes (``sources/records.py``) on real files: stable, and sensitive to each field."""

from __future__ import annotations

import numpy as np
import pytest

from landpipe.sources import read_delivery
from landpipe.sources.records import RECORD_HASH_BYTES
from tests import delivery_files


@pytest.mark.parametrize("kind", ["gpkg", "shp", "geojson"])
def test_the_same_records_hash_alike_in_another_file(kind, tmp_path):
    frame = delivery_files.truth(n_parcels=60)
    first = read_delivery(delivery_files.write(kind, frame, tmp_path / "a"))
    again = read_delivery(delivery_files.write(kind, frame, tmp_path / "b"))
    assert first.record_hashes.shape == (len(frame), RECORD_HASH_BYTES)
    assert np.array_equal(first.record_hashes, again.record_hashes)
    assert len({row.tobytes() for row in first.record_hashes}) == len(frame)


@pytest.mark.parametrize(
    "field, value",
    [
        ("TenChu", "Lê Thị Hoa"),
        ("TenChu", None),
        ("DienTich", 1.5),
        ("SoThuTuThua", 9999),
        ("KyHieuMucDichSuDung", "CLN"),
    ],
)
def test_a_changed_field_changes_its_record_hash_only(field, value, tmp_path):
    frame = delivery_files.truth(n_parcels=20)
    changed = frame.copy()
    if value is None:
        changed[field] = changed[field].astype(object)
    changed.loc[3, field] = value
    first = read_delivery(delivery_files.write("gpkg", frame, tmp_path / "a"))
    again = read_delivery(delivery_files.write("gpkg", changed, tmp_path / "b"))
    differs = (first.record_hashes != again.record_hashes).any(axis=1)
    assert list(np.flatnonzero(differs)) == [3]


def test_a_moved_vertex_changes_the_record_hash(tmp_path):
    from shapely.affinity import translate

    frame = delivery_files.truth(n_parcels=20)
    moved = frame.copy()
    moved.loc[5, "geometry"] = translate(moved.geometry[5], xoff=0.001)
    first = read_delivery(delivery_files.write("gpkg", frame, tmp_path / "a"))
    again = read_delivery(delivery_files.write("gpkg", moved, tmp_path / "b"))
    assert list(np.flatnonzero((first.record_hashes != again.record_hashes).any(axis=1))) == [5]


def test_the_reading_context_keys_the_hashes(tmp_path):
    path = delivery_files.write("gpkg", delivery_files.truth(n_parcels=20), tmp_path)
    plain, scaled = read_delivery(path), read_delivery(path, map_scale=500)
    assert not (plain.record_hashes == scaled.record_hashes).all(axis=1).any()
    assert np.array_equal(plain.record_hashes, read_delivery(path).record_hashes)


def test_parcels_built_from_linework_have_no_record_hashes(tmp_path):
    path = delivery_files.write("dxf", delivery_files.truth(n_parcels=20), tmp_path)
    read = read_delivery(path, commune_code="22924", sheet_no=1)
    assert len(read.parcels) and read.record_hashes is None


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".shp"])
def test_a_layer_reads_as_pyogrio_reads_it(suffix, tmp_path):
    """``read_records`` builds its frame from the Arrow read as ``read_dataframe`` does."""
    import datetime as dt

    import geopandas as gpd
    import pandas as pd
    import pyogrio
    from shapely.geometry import box

    from landpipe.sources.files import open_source, read_records

    frame = gpd.GeoDataFrame(
        {
            "SoThuTuThua": [1, 2, 3],
            "DienTich": [100.5, None, 3.0],
            "TenChu": ["Nguyễn Văn An", None, ""],
            "NgayDo": pd.to_datetime(["2019-05-03 08:30:00", None, "2020-01-01 00:00:00"]),
            "NgayCap": [dt.date(2019, 5, 3), None, dt.date(2021, 2, 1)],
            "geometry": [box(0, 0, 1, 1), box(1, 0, 2, 1), None],
        },
        crs=9218,
    )
    if suffix == ".shp":  # a DBF has no date-times
        frame = frame.drop(columns="NgayDo")
    path = tmp_path / f"d{suffix}"
    pyogrio.write_dataframe(frame, path)
    expected = pyogrio.read_dataframe(path, use_arrow=True)
    read, records = read_records(open_source(path), path.stem)
    pd.testing.assert_frame_equal(pd.DataFrame(read), pd.DataFrame(expected))
    assert read.crs == expected.crs and records.num_rows == 3


def test_how_gdal_read_a_shapefile_keys_the_hashes(tmp_path):
    """A DBF declared UTF-8 with one record that is not is read byte by byte (latin1) and
    decoded here; read so, a correct name has the bytes that mojibake has when read as UTF-8.
    The two readings must not share record hashes."""
    import geopandas as gpd
    import pyogrio

    from tests.parcels import record

    def shapefile(name: str, owners: list[str]) -> str:
        frame = gpd.GeoDataFrame(
            [record(i, TenChu=o, DiaChi="12 Tran Hung Dao") for i, o in enumerate(owners)],
            crs=9218,
        )
        for column in ("TenChu", "DiaChi", "MaXa", "KyHieuMucDichSuDung"):  # raw UTF-8 bytes
            frame[column] = [v.encode("utf-8").decode("latin1") for v in frame[column]]
        path = tmp_path / name / "thua_dat.shp"
        path.parent.mkdir()
        pyogrio.write_dataframe(frame, path, encoding="latin1")
        path.with_suffix(".cpg").write_text("UTF-8")
        return path

    fixed = "Nguyễn Văn An"
    mojibake = fixed.encode("utf-8").decode("latin1")
    as_utf8 = read_delivery(shapefile("a", [mojibake, "Lê Thị Hoa"]))
    # The same first record corrected, and a second record with a byte that is no UTF-8.
    bad = "Lê Thị Hoa".encode().decode("latin1") + "\xff"
    path = shapefile("b", [fixed, "x"])
    frame = gpd.read_file(path, encoding="latin1")
    frame.loc[1, "TenChu"] = bad
    pyogrio.write_dataframe(frame, path, encoding="latin1")
    path.with_suffix(".cpg").write_text("UTF-8")
    byte_by_byte = read_delivery(path)
    assert as_utf8.text.encoding == byte_by_byte.text.encoding == "utf-8"
    assert as_utf8.parcels["owner_name"][0] != byte_by_byte.parcels["owner_name"][0]
    assert as_utf8.record_hashes[0].tobytes() != byte_by_byte.record_hashes[0].tobytes()


@pytest.mark.parametrize("kind", ["gpkg", "geojson"])
def test_decomposed_text_is_stored_composed(kind, tmp_path):
    """Text typed decomposed (NFD) reaches the parcels composed (NFC) and stripped: the read
    normalises it, and mapping trusts that (``text_nfc``)."""
    import unicodedata

    frame = delivery_files.truth(n_parcels=5)
    frame["TenChu"] = [" " + unicodedata.normalize("NFD", "Nguyễn Thị Ánh") + " "] * 5
    frame["DiaChi"] = [unicodedata.normalize("NFD", "Thôn Lạc Trị")] * 5
    read = read_delivery(delivery_files.write(kind, frame, tmp_path))
    assert list(read.parcels["owner_name"]) == ["Nguyễn Thị Ánh"] * 5
    assert list(read.parcels["address"]) == ["Thôn Lạc Trị"] * 5
    assert unicodedata.is_normalized("NFC", read.parcels["owner_name"][0])


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """Shared memory for the children, here a folder of the test's own."""
    from landpipe.sources import records

    folder = tmp_path / "shm"
    folder.mkdir()
    monkeypatch.setattr(records, "_SHM", folder)
    return folder


@pytest.mark.parametrize("kind", ["gpkg", "shp"])
def test_a_child_process_makes_the_digests_made_here(kind, tmp_path, monkeypatch, scratch, caplog):
    """Above CHILD_MIN_RECORDS the digests are made by landpipe/arrowbytes.py in a child
    process while the delivery is decoded: the same hashes as made in this process, and the
    child's files are gone once they are taken."""
    from landpipe.arrowbytes import record_digests
    from landpipe.sources import records

    path = delivery_files.write(kind, delivery_files.truth(n_parcels=60), tmp_path / "a")
    monkeypatch.setattr(records, "CHILD_MIN_RECORDS", 10**9)
    here = read_delivery(path)
    monkeypatch.setattr(records, "CHILD_MIN_RECORDS", 1)
    there = read_delivery(path)
    assert not here.digests.in_child and there.digests.in_child
    child, folder = there.digests._child, there.digests._folder
    assert folder.parent == scratch and folder.is_dir()
    with caplog.at_level("WARNING", logger=records.__name__):
        assert np.array_equal(there.record_hashes, here.record_hashes)
    assert child.returncode == 0 and caplog.text == ""  # made there, not here
    assert np.array_equal(there.digests.result(), record_digests(there.records))
    assert list(scratch.iterdir()) == []


def test_arrowbytes_hands_digests_over_in_a_file_or_on_stdout(tmp_path):
    """``python landpipe/arrowbytes.py RECORDS.arrow [DIGESTS]``: the records' digests, on
    its standard output or in the file, and the records' file removed."""
    import subprocess
    import sys

    import pyarrow as pa

    from landpipe import arrowbytes

    table = pa.table({"name": ["Lê Văn Tám", None, "Đặng Thị Hoa"], "n": [1, 2, None]})
    expected = arrowbytes.record_digests(table).tobytes()
    for target in (None, tmp_path / "digests"):
        source = tmp_path / "records.arrow"
        with pa.OSFile(str(source), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        command = [sys.executable, "-I", arrowbytes.__file__, str(source)]
        done = subprocess.run(command + ([str(target)] if target else []), capture_output=True)
        assert done.returncode == 0, done.stderr
        assert (target.read_bytes() if target else done.stdout) == expected
        assert not source.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digests"]  # no part left


def test_a_child_that_fails_leaves_the_digests_to_this_process(
    tmp_path, monkeypatch, scratch, caplog
):
    from landpipe.arrowbytes import record_digests
    from landpipe.sources import records

    path = delivery_files.write("gpkg", delivery_files.truth(n_parcels=30), tmp_path / "a")
    table = read_delivery(path).records
    monkeypatch.setattr(records.sys, "executable", "/bin/false")  # starts, then fails
    digests = records.RecordDigests(table, child=True)
    assert digests.in_child
    with caplog.at_level("WARNING", logger=records.__name__):
        assert np.array_equal(digests.result(), record_digests(table))
    assert "child process ended with 1" in caplog.text
    assert list(scratch.iterdir()) == []


def test_records_a_child_cannot_be_handed_are_digested_here(scratch, caplog):
    """A table whose chunks have different dictionaries is no Arrow IPC file: the digests are
    made here, and nothing is left behind."""
    import pyarrow as pa

    from landpipe.arrowbytes import record_digests
    from landpipe.sources import records

    codes = pa.chunked_array(
        [pa.array(["ONT", "CLN"]).dictionary_encode(), pa.array(["LUC"]).dictionary_encode()]
    )
    table = pa.table({"codes": codes, "n": [1, 2, 3]})
    with caplog.at_level("WARNING", logger=records.__name__):
        digests = records.RecordDigests(table, child=True)
    assert not digests.in_child and "made in this process" in caplog.text
    assert np.array_equal(digests.result(), record_digests(table))
    assert list(scratch.iterdir()) == []


def test_digests_never_taken_stop_their_child_and_remove_its_files(tmp_path, monkeypatch, scratch):
    import gc

    from landpipe.sources import records

    path = delivery_files.write("gpkg", delivery_files.truth(n_parcels=30), tmp_path / "a")
    table = read_delivery(path).records
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nexec sleep 60\n")
    slow.chmod(0o755)
    monkeypatch.setattr(records.sys, "executable", str(slow))  # a child that runs on
    digests = records.RecordDigests(table, child=True)
    child, folder = digests._child, digests._folder
    assert child.poll() is None and folder.is_dir()
    del digests
    gc.collect()
    assert child.poll() is not None and list(scratch.iterdir()) == []


def test_a_delivery_whose_digests_a_child_made_pickles_with_them(tmp_path, monkeypatch, scratch):
    import pickle

    from landpipe.sources import records

    path = delivery_files.write("gpkg", delivery_files.truth(n_parcels=30), tmp_path / "a")
    monkeypatch.setattr(records, "CHILD_MIN_RECORDS", 1)
    delivery = read_delivery(path)
    assert delivery.digests.in_child
    again = pickle.loads(pickle.dumps(delivery))
    assert np.array_equal(again.record_hashes, delivery.record_hashes)
    assert list(scratch.iterdir()) == []


def test_folders_left_by_ended_processes_are_swept(tmp_path):
    """A process killed while its child made digests leaves its folder behind, its lock
    free: the next process that starts a child removes it, and leaves the folders whose lock
    is held (a process runs) or that have none yet alone."""
    import os

    from landpipe.sources import records

    folders = {name: tmp_path / f"{records._PREFIX}{name}" for name in ("left", "held", "new")}
    for folder in folders.values():
        folder.mkdir()
        (folder / "records.arrow").write_bytes(b"x")
    os.close(os.open(folders["left"] / "lock", os.O_CREAT | os.O_RDWR))
    held = records._locked(folders["held"])
    other = tmp_path / "unrelated"
    other.mkdir()
    try:
        records._sweep(tmp_path)
    finally:
        os.close(held)
    assert not folders["left"].exists()
    assert folders["held"].is_dir() and folders["new"].is_dir() and other.is_dir()
