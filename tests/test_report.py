"""The quality report of a batch (landpipe/report.py): the HTML page, the GeoPackage, the
``landpipe report`` command and the Prefect artifact, against the suite's real PostGIS. The
page is rendered by a real headless Chromium; a missing Chromium fails the test."""

from __future__ import annotations

import html
import json
import re
import struct
import subprocess
import warnings
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
import sqlalchemy as sa
from shapely import affinity

from landpipe import load as loader
from landpipe import synth
from landpipe.report import COLOURS, _MapFrame, publish_artifact, report_folder, write_report
from landpipe.sources import read_delivery
from landpipe.validate import validate
from tests.conftest import run_cli
from tests.parcels import delivery, record

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1400, 2000)


# --------------------------------------------------------------------------- the delivery


@pytest.fixture(scope="module")
def delivery_path(tmp_path_factory) -> Path:
    """A generated ward of 400 parcels with the generator's faults and a few more.

    Beyond :data:`synth.FAULTS`: a parcel pushed 1.5 m into its neighbour (an overlap, whose
    location is an area), one pushed 3 cm (an edge mismatch, located by lines), one delivered
    as its boundary line and one as a point (rejected records that are not polygons).
    """
    frame = synth.generate_delivery("22924", n_parcels=400)

    def at(sheet: int, parcel: int) -> int:
        hits = frame.index[(frame["SoHieuToBanDo"] == sheet) & (frame["SoThuTuThua"] == parcel)]
        assert len(hits) == 1
        return hits[0]

    shapes = frame.geometry.copy()

    def pushed(i: int, distance: float):
        """The parcel moved by ``distance`` towards a neighbour it then overlaps."""
        for dx, dy in ((distance, 0), (-distance, 0), (0, distance), (0, -distance)):
            moved = affinity.translate(shapes[i], dx, dy)
            if (shapes.drop(i).intersection(moved).area > 0.2 * distance).any():
                return moved
        raise AssertionError(f"parcel {frame.loc[i, 'SoThuTuThua']} has no neighbour")

    shapes[at(1, 31)] = pushed(at(1, 31), 1.5)
    shapes[at(2, 31)] = pushed(at(2, 31), 0.03)
    shapes[at(1, 40)] = shapes[at(1, 40)].exterior
    shapes[at(2, 40)] = shapes[at(2, 40)].centroid
    frame = frame.set_geometry(shapes)
    path = tmp_path_factory.mktemp("delivery") / "thua_dat_22924.gpkg"
    synth.write_delivery(frame, path)
    return path


def load_batch(engine: sa.Engine, path: Path) -> int:
    read = read_delivery(path)
    result = loader.load(engine, read, validate(read.parcels), started_at=datetime.now(UTC))
    assert result.status == "loaded"
    return result.batch


@pytest.fixture
def batch(register, delivery_path) -> int:
    return load_batch(register, delivery_path)


def scalar_rows(engine: sa.Engine, query: str, **params) -> list:
    with engine.connect() as connection:
        return connection.execute(sa.text(query), params).all()


# --------------------------------------------------------------------------- HTML and files


def test_report_counts_are_the_databases(register, batch, tmp_path):
    report = write_report(register, batch, tmp_path / "new" / "folder")
    assert report.html == tmp_path / f"new/folder/thua_dat_22924.gpkg.batch-{batch}.report.html"
    assert report.gpkg == tmp_path / f"new/folder/thua_dat_22924.gpkg.batch-{batch}.findings.gpkg"
    assert report.html.is_file() and report.gpkg.is_file()

    per_rule = dict(
        scalar_rows(
            register,
            "SELECT rule_code, count(*) FROM land.finding WHERE batch_id = :b GROUP BY 1",
            b=batch,
        )
    )
    per_severity = dict(
        scalar_rows(
            register,
            "SELECT severity, count(*) FROM land.finding WHERE batch_id = :b GROUP BY 1",
            b=batch,
        )
    )
    (numbers,) = scalar_rows(
        register,
        "SELECT status, n_read, n_loaded, n_repaired, n_rejected FROM land.batch WHERE id = :b",
        b=batch,
    )
    assert {"TOPO_OVERLAP", "TOPO_EDGE_MISMATCH", "GEOM_NOT_POLYGON", "GEOM_EMPTY"} <= set(per_rule)
    assert report.counts == per_rule
    assert report.severities == {s: per_severity.get(s, 0) for s in ("reject", "block", "warn")}
    assert (report.status, report.read, report.loaded, report.repaired, report.rejected) == tuple(
        numbers
    )

    page = report.html.read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in page
    shown = dict(re.findall(r'data-rule="([A-Z_]+)">(\d+)<', page))
    assert {code: int(n) for code, n in shown.items()} == per_rule
    # Every finding is a row of the table, with its message.
    assert page.count("<tr data-f=") == sum(per_rule.values())
    messages = [m for (m,) in scalar_rows(register, "SELECT message FROM land.finding")]
    assert all(html.escape(message) in page for message in messages)
    # Vietnamese text of the catalogue and of the delivery arrives intact.
    vietnamese = dict(scalar_rows(register, "SELECT code, description_vi FROM land.rule"))
    for code in per_rule:
        assert html.escape(vietnamese[code]) in page
    assert "Thửa đất không có hình học hoặc hình học rỗng." in page
    assert "22924 Phường Phú Thủy" in page
    assert page.count("<svg") == 1

    summary = report.markdown()
    assert report.html.resolve().as_uri() in summary and report.gpkg.resolve().as_uri() in summary
    for code, n in per_rule.items():
        assert f"| `{code}` |" in summary and f"| {n} |" in summary
    assert vietnamese["GEOM_EMPTY"] in summary

    # Regenerating replaces the files.
    before = report.html.stat().st_mtime_ns
    again = write_report(register, batch, report.html.parent)
    assert again.html == report.html and again.html.stat().st_mtime_ns >= before
    assert sorted(p.name for p in report.html.parent.iterdir()) == sorted(
        [report.html.name, report.gpkg.name]
    )


def family_counts(engine: sa.Engine, table: str, column: str, batch: int) -> dict[str, int]:
    """Rows of ``table`` per GeoPackage layer family, by the PostGIS geometry type."""
    rows = scalar_rows(
        engine,
        f"SELECT CASE WHEN {column} IS NULL THEN 'none'"
        f" WHEN ST_Dimension({column}) = 0 THEN 'point'"
        f" WHEN ST_Dimension({column}) = 1 THEN 'line' ELSE 'polygon' END, count(*)"
        f" FROM land.{table} WHERE batch_id = :b GROUP BY 1",
        b=batch,
    )
    return dict(rows)


def test_geopackage_has_a_layer_per_geometry_type(register, batch, tmp_path):
    report = write_report(register, batch, tmp_path)
    findings = family_counts(register, "finding", "location", batch)
    rejected = family_counts(register, "rejected_record", "geom", batch)
    assert set(findings) == {"point", "line", "polygon", "none"}
    assert set(rejected) == {"point", "line", "polygon", "none"}
    expected = {"batch": 1}
    for prefix, counts, empty in (
        ("findings", findings, "no_location"),
        ("rejected", rejected, "no_geometry"),
    ):
        for family, n in counts.items():
            expected[f"{prefix}_{empty if family == 'none' else family}"] = n

    layers = dict(pyogrio.list_layers(report.gpkg))
    assert set(layers) == set(expected)
    assert report.layers == expected
    geometry_types = {
        "point": {"Point", "MultiPoint"},
        "line": {"LineString", "MultiLineString"},
        "polygon": {"Polygon", "MultiPolygon"},
    }
    for layer, n in expected.items():
        info = pyogrio.read_info(report.gpkg, layer=layer)
        assert info["features"] == n, layer
        family = layer.rsplit("_", 1)[-1]
        if family in geometry_types:
            assert layers[layer] in geometry_types[family], layer
            assert info["crs"] == "EPSG:9218", layer
        else:
            assert layers[layer] is None, layer

    vietnamese = dict(scalar_rows(register, "SELECT code, description_vi FROM land.rule"))
    columns = {
        "rule_code",
        "severity",
        "message_vi",
        "message",
        "commune_code",
        "sheet_no",
        "parcel_no",
        "source_row",
        "batch_id",
    }
    overlaps = pyogrio.read_dataframe(report.gpkg, layer="findings_polygon")
    assert columns <= set(overlaps.columns)
    assert set(overlaps["batch_id"]) == {batch}
    for row in overlaps.itertuples():
        assert row.message_vi == vietnamese[row.rule_code]
    assert set(overlaps["rule_code"]) == {"TOPO_OVERLAP"}
    points = pyogrio.read_dataframe(report.gpkg, layer="findings_point")
    in_db = dict(
        scalar_rows(
            register,
            "SELECT id, message FROM land.finding WHERE batch_id = :b"
            " AND GeometryType(location) = 'POINT'",
            b=batch,
        )
    )
    assert dict(zip(points["finding_id"], points["message"], strict=True)) == in_db
    assert points.crs.to_epsg() == 9218

    line = pyogrio.read_dataframe(report.gpkg, layer="rejected_line")
    assert {"rule_codes", "severity", "message_vi", "attributes"} <= set(line.columns)
    ((codes, owner, attributes),) = scalar_rows(
        register,
        "SELECT rule_codes, attributes->>'TenChu', attributes::text FROM land.rejected_record"
        " WHERE batch_id = :b AND GeometryType(geom) = 'LINESTRING'",
        b=batch,
    )
    assert line["rule_codes"].tolist() == [",".join(codes)]
    assert line["message_vi"].tolist() == [vietnamese["GEOM_NOT_POLYGON"]]
    assert line["src_TenChu"].tolist() == [owner] and owner
    assert json.loads(line["attributes"][0]) == json.loads(attributes)
    no_geometry = pyogrio.read_dataframe(report.gpkg, layer="rejected_no_geometry")
    assert no_geometry["rule_codes"].tolist() == ["GEOM_EMPTY"]


def test_a_redelivery_report_lists_the_earlier_findings_it_closed(register, tmp_path):
    from shapely.geometry import box

    from tests.parcels import X0, Y0

    first = [record(i) for i in range(4)]
    first[1]["geometry"] = box(X0 + 10, Y0, X0 + 20.5, Y0 + 10)  # 0.5 m into parcel 3
    first[1]["DienTich"] = 105.0
    path = tmp_path / "d1.gpkg"
    delivery(first).to_file(path)
    one = load_batch(register, path)
    fixed = tmp_path / "d2.gpkg"
    delivery([record(i) for i in range(4)]).to_file(fixed)
    two = load_batch(register, fixed)
    page = write_report(register, two, tmp_path / "out").html.read_text()
    section = re.search(r'<section id="closed">(.*?)</section>', page, re.S)
    assert section is not None
    closed = scalar_rows(
        register, "SELECT count(*) FROM land.finding WHERE closed_by_batch_id = :b", b=two
    )[0][0]
    assert closed >= 1
    assert f"Findings of earlier batches closed ({closed})" in section.group(1)
    assert "<code>TOPO_OVERLAP</code>" in section.group(1)
    assert "22924/5/2" in section.group(1) and "22924/5/3" in section.group(1)
    assert f"{closed} findings of earlier batches closed" in page
    # The first batch's report has no such section.
    assert 'id="closed"' not in write_report(register, one, tmp_path / "first").html.read_text()


def test_html_makes_no_network_request(register, batch, tmp_path):
    page = write_report(register, batch, tmp_path).html.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href|action|xlink:href)\s*=\s*["']?\s*(//|[a-z]+:)""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "<iframe" not in page and "<img" not in page
    assert "default-src 'none'" in page  # the browser enforces it too


def test_delivered_text_is_escaped(register, batch, tmp_path):
    nasty = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    with register.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO land.finding (batch_id, rule_code, severity, commune_code,"
                " sheet_no, parcel_no, source_row, message, location)"
                " VALUES (:b, 'ATTR_ENCODING', 'warn', '22924', 1, 1, 0, :m,"
                " ST_SetSRID(ST_MakePoint(455500, 1209500), 9218))"
            ),
            {"b": batch, "m": nasty},
        )
    page = write_report(register, batch, tmp_path).html.read_text(encoding="utf-8")
    assert nasty not in page and "<script>alert" not in page and "<img" not in page
    assert html.escape(nasty) in page
    assert page.count("<script>") == 1


def test_refused_batch(register, tmp_path):
    batch = loader.record_refusal(
        register,
        source_path=str(tmp_path / "hỏng.shp"),
        sha256="0" * 64,
        driver="ESRI Shapefile",
        error="hỏng.shp: truncated Shapefile",
        started_at=datetime.now(UTC),
        options={},
    )
    report = write_report(register, batch, tmp_path)
    assert (report.status, report.error, report.counts) == (
        "failed",
        "hỏng.shp: truncated Shapefile",
        {},
    )
    assert report.html.name == f"hỏng.shp.batch-{batch}.report.html"
    page = report.html.read_text(encoding="utf-8")
    assert 'class="refusal" role="alert">Refused: hỏng.shp: truncated Shapefile' in page
    assert "<svg" not in page and 'id="findings"' not in page
    assert dict(pyogrio.list_layers(report.gpkg)) == {"batch": None}
    (row,) = pyogrio.read_dataframe(report.gpkg, layer="batch").itertuples()
    assert (row.batch_id, row.status, row.error) == (batch, "failed", report.error)
    assert "**Refused:** hỏng.shp: truncated Shapefile" in report.markdown()


def test_batch_with_every_record_rejected(register, tmp_path):
    path = tmp_path / "all_rejected.gpkg"
    delivery([record(i, MaXa="99999") for i in range(3)]).to_file(path)
    read = read_delivery(path)
    result = loader.load(register, read, validate(read.parcels), started_at=datetime.now(UTC))
    report = write_report(register, result.batch, tmp_path)
    assert (report.status, report.loaded, report.rejected) == ("rejected", 0, 3)
    assert report.counts == {"ATTR_COMMUNE_UNKNOWN": 3}
    page = report.html.read_text(encoding="utf-8")
    # The map is drawn around the rejected records: three filled areas, three markers.
    assert page.count('<path class="rejected area" d="m') == 1
    assert page.count('class="m"') == 3 and page.count("<tr data-f=") == 3
    assert dict(pyogrio.list_layers(report.gpkg)) == {
        "batch": None,
        "findings_point": "Point",
        "rejected_polygon": "MultiPolygon",
    }


def test_a_record_far_beyond_the_map_is_not_drawn(register, tmp_path):
    """Coordinates of 1e300 (an export gone wrong) drew a fill over the whole map, from
    -9223372036854775808: the record is listed, not drawn."""
    path = tmp_path / "far.gpkg"
    far = shapely.box(0, 0, 1e300, 1e300)
    delivery([*(record(i) for i in range(20)), record(20, geometry=far)]).to_file(path)
    read = read_delivery(path)
    result = loader.load(register, read, validate(read.parcels), started_at=datetime.now(UTC))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        report = write_report(register, result.batch, tmp_path)
    assert (report.loaded, report.rejected) == (20, 1)
    page = report.html.read_text(encoding="utf-8")
    assert "<tr data-f=" in page and "GEOM_OUT_OF_EXTENT" in page
    assert 'class="rejected area"' not in page
    assert (
        max(len(n) for n in re.findall(r"-?\d+", page.split("<svg", 1)[1].split("</svg>")[0])) < 8
    )


def absolute_paths(data: str) -> list[tuple[list[tuple[int, int]], bool]]:
    """The subpaths of relative SVG path data (``m``, implicit lines, ``z``) as absolute
    vertices, each with whether it is closed."""
    tokens = re.findall(r"[mz]|-?\d+", data)
    pen = start = (0, 0)
    paths: list[tuple[list[tuple[int, int]], bool]] = []
    i = 0
    while i < len(tokens):
        if tokens[i] == "z":
            paths[-1] = (paths[-1][0], True)
            pen, i = start, i + 1
            continue
        moveto = tokens[i] == "m"
        i += moveto
        pen = (pen[0] + int(tokens[i]), pen[1] + int(tokens[i + 1]))
        i += 2
        if moveto:
            start = pen
            paths.append(([pen], False))
        else:
            paths[-1][0].append(pen)
    return paths


def test_map_path_data_round_trips():
    frame = _MapFrame(xmin=0.0, ymax=100.0, scale=1.0, width=100, height=100)
    square_with_hole = shapely.Polygon(
        [(10, 10), (60, 10), (60, 60), (10, 60)], [[(20, 20), (30, 20), (30, 30), (20, 30)]]
    )
    line = shapely.LineString([(70, 90), (90, 90), (90.2, 70)])
    speck = shapely.box(80, 10, 80.3, 10.3)  # rounds to a point: not drawn
    two = shapely.MultiPolygon([shapely.box(0, 0, 5, 5), shapely.box(94, 94, 99, 99)])
    data = frame.path(np.array([square_with_hole, line, speck, None, two], dtype=object))
    # y is flipped (v = 100 - y); the closing vertex of a ring is left to "z"; rings come
    # before lines.
    assert absolute_paths(data) == [
        ([(10, 90), (60, 90), (60, 40), (10, 40)], True),
        ([(20, 80), (30, 80), (30, 70), (20, 70)], True),
        ([(5, 100), (5, 95), (0, 95), (0, 100)], True),  # boxes start at (xmax, ymin)
        ([(99, 6), (99, 1), (94, 1), (94, 6)], True),
        ([(70, 10), (90, 10), (90, 30)], False),
    ]
    assert frame.path(np.array([speck], dtype=object)) == ""


def test_unknown_batch_is_a_clear_error(register, tmp_path):
    from landpipe.errors import ConfigError

    with pytest.raises(ConfigError, match="batch 4242 does not exist"):
        write_report(register, 4242, tmp_path)
    assert not list(tmp_path.iterdir())


def test_default_folder(register, batch, delivery_path, settings, tmp_path):
    assert report_folder(register, batch, settings.home) == delivery_path.parent
    with register.begin() as connection:
        connection.execute(
            sa.text("UPDATE land.batch SET source_path = :p WHERE id = :b"),
            {"p": str(tmp_path / "gone" / "x.shp"), "b": batch},
        )
    assert report_folder(register, batch, settings.home) == settings.home / "reports"


def test_default_folder_of_a_delivery_the_inbox_filed_away(register, settings, tmp_path):
    """Beside the delivery was the inbox itself, where the report waited among the
    deliveries: it goes where the inbox filed the delivery."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    delivered = inbox / "thua_dat.gpkg"
    delivery([record(i) for i in range(3)]).to_file(delivered)
    batch = load_batch(register, delivered)
    assert report_folder(register, batch, settings.home) == inbox
    filed = []
    for name in (f"2026-11-27_batch{batch}_thua_dat", f"2026-11-28_batch{batch}_thua_dat"):
        (inbox / "archive" / name).mkdir(parents=True)
        filed.append(inbox / "archive" / name)
    (inbox / "archive" / f"2026-11-29_batch{batch}1_thua_dat").mkdir()  # batch 10x: not it
    delivered.rename(filed[0] / delivered.name)
    assert report_folder(register, batch, settings.home) == filed[0]
    (filed[0] / delivered.name).rename(filed[1] / delivered.name)  # filed again, later
    assert report_folder(register, batch, settings.home) == filed[1]
    (filed[1] / delivered.name).unlink()  # gone altogether: beside it no more
    assert report_folder(register, batch, settings.home) == settings.home / "reports"


# --------------------------------------------------------------------------- Chromium


def chromium(page: Path, profile: Path, *args: str, fragment: str = "") -> str:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make system-packages` installs it"
    done = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            *args,
            page.resolve().as_uri() + fragment,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def read_png(path: Path) -> np.ndarray:
    """Pixels (height, width, RGB) of an 8-bit non-interlaced PNG, as Chromium writes them."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, compressed = 8, []
    while position < len(data):
        (size,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + size]
        position += 12 + size
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, interlace) == (8, 0) and colour in (2, 6)
        elif kind == b"IDAT":
            compressed.append(body)
    step = 3 if colour == 2 else 4
    rows = np.frombuffer(zlib.decompress(b"".join(compressed)), np.uint8)
    rows = rows.reshape(height, width * step + 1)
    pixels = np.zeros((height, width * step), np.uint8)
    above = np.zeros(width * step, np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        if kind == 0:
            line = line.copy()
        elif kind == 1:
            line = np.cumsum(line.reshape(width, step), axis=0, dtype=np.uint8).reshape(-1)
        elif kind == 2:
            line = line + above
        else:  # average or Paeth: each byte depends on the one to its left
            out, up = bytearray(line.tobytes()), above.tobytes()
            for i in range(len(out)):
                a = out[i - step] if i >= step else 0
                b, c = up[i], up[i - step] if i >= step else 0
                if kind == 3:
                    out[i] = (out[i] + ((a + b) >> 1)) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    out[i] = (out[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            line = np.frombuffer(bytes(out), np.uint8)
        pixels[y] = line
        above = line
    return pixels.reshape(height, width, step)[:, :, :3].astype(int)


def rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])


def near(region: np.ndarray, colour: str, tolerance: int = 40) -> int:
    return int((np.abs(region - rgb(colour)).sum(axis=2) < tolerance).sum())


def over_white(region: np.ndarray, colour: str) -> int:
    """Pixels that are ``colour`` blended onto white (antialiased thin lines), half or more."""
    target = rgb(colour)
    alpha = (255 - region) / (255 - target)
    return int(((alpha.min(axis=2) > 0.5) & (np.ptp(alpha, axis=2) < 0.15)).sum())


def test_chromium_renders_the_map_and_sorts_the_table(register, batch, tmp_path):
    report = write_report(register, batch, tmp_path / "report")
    rows_in_db = scalar_rows(
        register,
        "SELECT id, source_row FROM land.finding WHERE batch_id = :b",
        b=batch,
    )

    # The table sorted by its script, as the address asks: source row, descending.
    dom = chromium(report.html, tmp_path / "profile", "--dump-dom", fragment="#sort=-row")
    assert re.search(r'<th data-key="row" aria-sort="descending">', dom)
    order = [int(i) for i in re.findall(r'<tr data-f="(\d+)"', dom)]
    assert len(order) == len(rows_in_db)
    source_rows = dict(rows_in_db)
    shown = [source_rows[i] for i in order]
    with_row = [r for r in shown if r is not None]
    assert with_row == sorted(with_row, reverse=True) and len(set(with_row)) > 10
    layout = json.loads(html.unescape(re.search(r'data-layout="([^"]*)"', dom).group(1)))

    # The screenshot, at the same window size: the map drew the parcels, the rejected
    # records, the blocked and warned parcels and the finding markers; the table has text.
    shot = tmp_path / "report.png"
    chromium(report.html, tmp_path / "profile", f"--screenshot={shot}")
    pixels = read_png(shot)
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    x, y, w, h = layout["map"]
    assert w > 300 and h > 200 and y + h <= WINDOW[1], layout
    map_region = pixels[y : y + h, x : x + w]
    assert over_white(map_region, COLOURS["parcel"]) > 2000
    for kind in ("rejected", "blocked", "warned"):
        assert near(map_region, COLOURS[kind]) > 200, kind
    assert near(map_region, COLOURS["finding"], 60) > 200
    x, y, w, h = layout["table"]
    table_region = pixels[y : min(y + h, WINDOW[1]), x : x + w]
    assert table_region.shape[0] > 300
    dark = (table_region.sum(axis=2) < 300).sum()
    assert dark > 2000  # text
    assert (table_region.sum(axis=2) < 3 * 250).mean() < 0.5  # not a solid block either


# --------------------------------------------------------------------------- CLI, Prefect


@pytest.mark.slow
def test_report_command(register, batch, cli_env, delivery_path, tmp_path):
    result = run_cli("report", str(batch), env=cli_env)
    assert result.returncode == 0, result.stderr
    html_path, gpkg_path = (Path(line) for line in result.stdout.splitlines())
    assert html_path.parent == delivery_path.parent == gpkg_path.parent
    assert html_path.name == f"thua_dat_22924.gpkg.batch-{batch}.report.html"
    assert html_path.is_file() and gpkg_path.is_file()

    out = tmp_path / "reports"
    result = run_cli("report", str(batch), "--out", str(out), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        str(out / f"thua_dat_22924.gpkg.batch-{batch}.report.html"),
        str(out / f"thua_dat_22924.gpkg.batch-{batch}.findings.gpkg"),
    ]

    unwritable = run_cli("report", str(batch), "--out", "/proc/landpipe-report", env=cli_env)
    assert unwritable.returncode == 3, unwritable.stderr
    assert unwritable.stderr.startswith("landpipe: cannot write the report into /proc/")
    assert unwritable.stderr.count("\n") == 1 and "Traceback" not in unwritable.stderr

    missing = run_cli("report", "9999", env=cli_env)
    assert missing.returncode == 3
    assert (
        missing.stderr == "landpipe: batch 9999 does not exist (see land.batch for the batches)\n"
    )
    assert missing.stdout == ""


@pytest.mark.slow
def test_artifact_in_a_flow_run_and_nothing_outside(register, batch, prefect_api, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.logging.handlers import APILogWorker

    report = write_report(register, batch, tmp_path)
    keys = [f"batch-{batch}-report", f"batch-{batch}-findings"]

    def artifacts(flow_run_id=None):
        # Other tests' loads publish artifacts under the same keys (batch ids restart at 1).
        runs = ArtifactFilterFlowRunId(any_=[flow_run_id]) if flow_run_id else None
        with get_client(sync_client=True) as client:
            return client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys), flow_run_id=runs)
            )

    before = len(artifacts())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        publish_artifact(report)  # outside a run: nothing, and no warning
    assert len(artifacts()) == before

    @flow(name="report-artifact-test")
    def publish() -> None:
        publish_artifact(report)

    state = publish(return_state=True)
    APILogWorker.drain_all(timeout=10)  # the run's logs reach the server while it is up
    made = {artifact.key: artifact for artifact in artifacts(state.state_details.flow_run_id)}
    assert set(made) == set(keys)
    markdown = made[keys[0]].data
    assert report.html.resolve().as_uri() in markdown and "TOPO_OVERLAP" in markdown
    table = made[keys[1]].data
    table = json.loads(table) if isinstance(table, str) else table
    assert {row["rule"]: row["count"] for row in table} == report.counts


def test_a_redelivery_report_lists_the_parcels_it_changed_and_retired(register, tmp_path):
    path = tmp_path / "d1.gpkg"
    delivery([record(i) for i in range(4)]).to_file(path)
    one = load_batch(register, path)
    again = [record(0, TenChu="Trần Thị Bích"), record(1), record(2)]  # 1 changed, 4 retired
    path = tmp_path / "d2.gpkg"
    delivery(again).to_file(path)
    two = load_batch(register, path)
    report = write_report(register, two, tmp_path / "out")
    section = re.search(r'<section id="changes">(.*?)</section>', report.html.read_text(), re.S)
    assert section is not None
    assert "Parcels changed (1) and retired (1)" in section.group(1)
    listed = re.findall(r"<tr><td>(\w+)</td><td>([\d/]+)</td>", section.group(1))
    assert listed == [("changed", "22924/5/1"), ("retired", "22924/5/4")]
    changes = pyogrio.read_dataframe(report.gpkg, layer="changes")
    assert list(zip(changes["change"], changes["parcel_no"], strict=True)) == [
        ("changed", 1),
        ("retired", 4),
    ]
    assert changes.geometry.iloc[1].equals(shapely.MultiPolygon([record(3)["geometry"]]))
    # A first delivery changes and retires nothing.
    first = write_report(register, one, tmp_path / "first")
    assert 'id="changes"' not in first.html.read_text()
    assert "changes" not in pyogrio.list_layers(first.gpkg)[:, 0]


def test_a_re_delivery_report_draws_the_whole_delivery(register, tmp_path):
    first = tmp_path / "first" / "thua_dat_22924.gpkg"
    first.parent.mkdir()
    frame = synth.generate_delivery("22924", n_parcels=300, faults=False)
    synth.write_delivery(frame, first)
    load_batch(register, first)
    again = tmp_path / "again" / "thua_dat_22924.gpkg"
    again.parent.mkdir()
    changed = frame.copy()
    changed.loc[0, "TenChu"] = "Trần Thị Bích"
    synth.write_delivery(changed, again)
    batch = load_batch(register, again)
    (current,) = scalar_rows(register, "SELECT count(*) FROM land.parcel")
    (written,) = scalar_rows(
        register, "SELECT count(*) FROM land.parcel_version WHERE batch_id = :b", b=batch
    )
    assert written[0] == 1 and current[0] == len(frame)

    page = write_report(register, batch, tmp_path / "report").html.read_text(encoding="utf-8")
    assert f"parcels of the delivery ({current[0]})" in page  # not only the one it changed
    assert "are not drawn" not in page
