"""Reading real deliveries (sources/): every format, zips, legacy encodings, CRS, linework."""

from __future__ import annotations

import zipfile

import pytest

from landpipe.errors import CRSError, SourceError
from landpipe.sources import read_delivery
from tests import delivery_files
from tests.delivery_files import KINDS, LINEWORK


@pytest.fixture(scope="module")
def truth():
    return delivery_files.truth()


def _by_key(parcels):
    return {
        (int(row.sheet_no), int(row.parcel_no)): row
        for row in parcels.itertuples(index=False)
        if row.sheet_no == row.sheet_no and row.parcel_no == row.parcel_no
    }


@pytest.mark.parametrize("kind", KINDS)
def test_every_format_yields_the_truth(tmp_path, truth, kind):
    path = delivery_files.write(kind, truth, tmp_path)
    options = {"commune_code": "22924", "sheet_no": 1} if kind in LINEWORK else {}
    delivery = read_delivery(path, **options)
    assert delivery.crs.label == "EPSG:9218"
    assert delivery.linework == (kind in LINEWORK)
    assert [f.rule_code for f in delivery.findings] == []
    read = _by_key(delivery.parcels)
    assert len(read) == len(truth)
    for row in truth.itertuples(index=False):
        parcel = read[(row.SoHieuToBanDo, row.SoThuTuThua)]
        assert "+".join(parcel.land_use_codes) == row.KyHieuMucDichSuDung
        assert abs(parcel.geometry.area - row.geometry.area) < 0.01
        if kind not in LINEWORK:  # drawings carry no owners
            assert parcel.owner_name == row.TenChu and parcel.address == row.DiaChi
            assert parcel.commune_code == row.MaXa


@pytest.mark.parametrize("encoding", ["tcvn3", "vni", "cp1258"])
def test_legacy_encoding_without_cpg_is_detected(tmp_path, truth, encoding):
    path = delivery_files.legacy_shapefile(truth, tmp_path / "thua_dat.shp", encoding)
    delivery = read_delivery(path)
    assert (delivery.text.encoding, delivery.text.how) == (encoding, "detected")
    assert delivery.text.declared is None and delivery.text.confidence > 0.5
    read = _by_key(delivery.parcels)
    for row in truth.itertuples(index=False):
        parcel = read[(row.SoHieuToBanDo, row.SoThuTuThua)]
        assert parcel.owner_name == row.TenChu  # byte for byte (both NFC)
        assert parcel.address == row.DiaChi
    assert delivery.findings == []


def test_a_lying_cpg_is_overruled_and_a_true_one_agreed_with(tmp_path, truth):
    lying = delivery_files.legacy_shapefile(truth, tmp_path / "a" / "t.shp", "tcvn3", "UTF-8")
    delivery = read_delivery(lying)
    assert (delivery.text.encoding, delivery.text.how, delivery.text.declared) == (
        "tcvn3",
        "detected",
        "UTF-8",
    )
    honest = delivery_files.legacy_shapefile(truth, tmp_path / "b" / "t.shp", "cp1258", "1258")
    assert read_delivery(honest).text.how == "declared"


def test_encoding_option_overrides_detection(tmp_path, truth):
    path = delivery_files.legacy_shapefile(truth, tmp_path / "thua_dat.shp", "vni")
    delivery = read_delivery(path, encoding="vni")
    assert (delivery.text.encoding, delivery.text.how) == ("vni", "option")
    wrong = read_delivery(path, encoding="tcvn3")
    assert wrong.text.how == "option"
    # Decoding VNI bytes as TCVN3 gives implausible text: reported, not a crash.
    assert {f.rule_code for f in wrong.findings} == {"ATTR_ENCODING"}
    with pytest.raises(SourceError, match="--encoding 'koi8'"):
        read_delivery(path, encoding="koi8")


def test_utm_prj_over_tm3_data_is_refused_naming_the_right_crs(tmp_path, truth):
    path = delivery_files.write("shp", truth, tmp_path)
    path.with_suffix(".prj").write_text(
        __import__("pyproj").CRS.from_epsg(3405).to_wkt("WKT1_ESRI")
    )
    with pytest.raises(
        CRSError, match=r"fit VN-2000 / TM-3 108-30 \(EPSG:9218\), not VN-2000 / UTM zone 48N"
    ):
        read_delivery(path)


ESRI_PRJ_WITH_TOWGS84 = (
    'PROJCS["VN2000_BinhThuan",GEOGCS["GCS_VN2000",DATUM["D_VN2000",'
    'SPHEROID["WGS_1984",6378137.0,298.257223563],'
    "TOWGS84[-191.90441429,-39.30318279,-111.45032835,-0.00928836,0.01975479,-0.00427372,"
    '0.252906278]],PRIMEM["Greenwich",0.0],'
    'UNIT["Degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
    'PARAMETER["False_Easting",500000.0],PARAMETER["False_Northing",0.0],'
    'PARAMETER["Central_Meridian",108.5],PARAMETER["Scale_Factor",0.9999],'
    'PARAMETER["Latitude_Of_Origin",0.0],UNIT["Meter",1.0]]'
)


def test_esri_prj_of_a_vn2000_zone_is_recognised(tmp_path, truth):
    path = delivery_files.write("shp", truth, tmp_path)
    path.with_suffix(".prj").write_text(ESRI_PRJ_WITH_TOWGS84)
    delivery = read_delivery(path)
    assert delivery.crs.label == "EPSG:9218" and delivery.crs.how == "file"
    assert delivery.crs.note == "recognised as EPSG:9218"


def test_towgs84_sign_error_is_named():
    from pyproj import CRS

    from landpipe.sources.crs import recognise

    published_signs = (
        "+proj=tmerc +lat_0=0 +lon_0=108.5 +k=0.9999 +x_0=500000 +y_0=0 +ellps=WGS84 "
        "+towgs84=-191.90441429,-39.30318279,-111.45032835,-0.00928836,0.01975479,-0.00427372,"
        "0.252906278 +units=m +no_defs"
    )
    crs, note = recognise(CRS(published_signs))
    assert crs.to_epsg() == 9218 and "sign error" in note
    correct = published_signs.replace(
        "-0.00928836,0.01975479,-0.00427372", "0.00928836,-0.01975479,0.00427372"
    )
    crs, note = recognise(CRS(correct))
    assert crs.to_epsg() == 9218 and "sign error" not in note


def test_zip_member_escaping_the_archive_is_refused(tmp_path, truth):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../../etc/landpipe_pwned", "x")
        bundle.writestr("thua_dat.geojson", truth.to_json())
    with pytest.raises(SourceError, match="outside the archive"):
        read_delivery(archive)
    assert not (tmp_path.parent / "etc").exists()


def test_broken_zip_is_a_source_error(tmp_path):
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(SourceError, match="not a readable zip"):
        read_delivery(path)


def test_linework_needs_the_sheet(tmp_path, truth):
    path = delivery_files.write("dxf", truth, tmp_path)
    with pytest.raises(Exception, match="--sheet"):
        read_delivery(path, commune_code="22924")


def test_a_few_legacy_records_in_a_utf8_file_are_findings_not_a_crash(tmp_path, truth):
    import pyogrio

    from landpipe.sources import encoding as codecs

    raw = truth.copy()
    for field in delivery_files.TEXT_FIELDS:
        raw[field] = [text.encode("utf-8").decode("latin1") for text in raw[field]]
    raw.loc[7, "TenChu"] = codecs.encode(truth.loc[7, "TenChu"], "tcvn3").decode("latin1")
    path = tmp_path / "mixed.shp"
    pyogrio.write_dataframe(raw, path, encoding="latin1")
    path.with_suffix(".cpg").write_text("UTF-8")
    delivery = read_delivery(path)
    assert delivery.text.encoding == "utf-8"
    assert [(f.rule_code, f.source_row) for f in delivery.findings] == [("ATTR_ENCODING", 7)]
    assert delivery.parcels.owner_name.iloc[0] == truth.loc[0, "TenChu"]
