"""The quality report of one batch: an HTML page and a GeoPackage of its findings.

Technicians open it each morning for each loaded delivery. Everything is read back from the
register (``land.batch``, ``land.finding``, ``land.rejected_record``, the parcel versions the
batch wrote, ``land.rule``), so ``landpipe report BATCH`` regenerates it at any time.

Two files are written into the report folder, replacing earlier ones of the same name:

``<stem>.report.html``
    One self-contained page that works offline: inline CSS, JS and SVG, and a
    Content-Security-Policy that forbids every network request. A header (delivery, status,
    how it was read, counts), the findings per rule with their Vietnamese and English
    messages, a map of the delivery and a findings table sorted by clicking its headers (or by
    ``#sort=COLUMN`` / ``#sort=-COLUMN`` in the address; columns ``rule``, ``severity``,
    ``parcel``, ``row``, ``message``). Clicking a row shows its finding on the map.
``<stem>.findings.gpkg``
    The findings and the rejected records in EPSG:9218, one layer per geometry type
    (:data:`LAYERS`), only the layers that have rows, plus a one-row ``batch`` table, so that
    the file of a refused delivery is a valid GeoPackage too, and for a re-delivery the
    parcels it changed and retired (``changes``: ``change``, key, version ids, shape).

``stem`` defaults to the delivery's file name followed by the batch id,
``thua_dat_22924.shp.batch-3``: the name says which delivery it reports on, and the id keeps
the report of an earlier delivery under the same file name (a re-delivery) from being
overwritten by the next one.
"""

from __future__ import annotations

import html
import json
import os
import string
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyogrio.errors
import shapely
import sqlalchemy as sa
from pyproj import CRS
from pyproj.exceptions import CRSError as ProjCRSError
from sqlalchemy.engine import Connection, Engine

from landpipe.errors import ConfigError, DatabaseError
from landpipe.schemas import parcel as canonical
from landpipe.sources.files import REPORT_ENDINGS

#: Severities from the most to the least serious.
SEVERITY_ORDER = ("reject", "block", "warn")

#: GeoPackage layers: findings by the geometry type of their location, rejected records by
#: that of their geometry. A GeometryCollection goes to the layer of its highest dimension,
#: keeping those parts. Findings without a location and records without a geometry go to an
#: attribute-only table.
LAYERS = (
    "findings_point",
    "findings_line",
    "findings_polygon",
    "findings_no_location",
    "rejected_point",
    "rejected_line",
    "rejected_polygon",
    "rejected_no_geometry",
    "changes",  # polygons: the parcels a re-delivery changed or retired
)

#: Long side of the map's SVG viewBox. Geometries are simplified to one unit and coordinates
#: rounded to whole units: about a pixel of the map zoomed 4x in a 1400-pixel-wide window.
#: The size of the page follows the number of parcels (four or five vertices each), hardly the
#: resolution: 100,000 parcels of one commune take 1.56 / 1.77 / 1.95 / 2.05 MB at 1000 /
#: 2000 / 4000 / 8000 units.
MAP_UNITS = 4000

#: Map colours (also the legend's).
COLOURS = {
    "parcel": "#4f7cac",
    "rejected": "#d62828",
    "blocked": "#f77f00",
    "warned": "#e9c400",
    "finding": "#8e24aa",
}

_DIMENSION = {"point": 0, "line": 1, "polygon": 2}
_FAMILY = {
    "Point": "point",
    "MultiPoint": "point",
    "LineString": "line",
    "LinearRing": "line",
    "MultiLineString": "line",
    "Polygon": "polygon",
    "MultiPolygon": "polygon",
}


@dataclass(frozen=True)
class RuleText:
    """A rule of the catalogue as ``land.rule`` holds it."""

    severity: str
    vi: str
    en: str


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote, with the counts it shows.

    Attributes
    ----------
    counts
        Findings of the batch per rule code.
    severities
        Findings per severity (``reject``, ``block``, ``warn``; zeros included).
    read, loaded, repaired, rejected
        Records read, parcels loaded and repaired, records rejected (``land.batch``).
    layers
        Rows per layer of the GeoPackage (only the layers written).
    rules
        The catalogue entries of the rules in ``counts``.
    """

    batch_id: int
    status: str
    source_path: str | None
    html: Path
    gpkg: Path
    counts: dict[str, int]
    severities: dict[str, int]
    read: int
    loaded: int
    repaired: int
    rejected: int
    layers: dict[str, int] = field(default_factory=dict)
    rules: dict[str, RuleText] = field(default_factory=dict)
    commune_code: str | None = None
    error: str | None = None

    def markdown(self) -> str:
        """A markdown summary: counts per rule with severity and message, links to the files."""
        source = Path(self.source_path).name if self.source_path else "(no file)"
        lines = [
            f"## Batch {self.batch_id}: {self.status}",
            "",
            f"**Delivery** `{source}` · commune {self.commune_code or '?'} · {self.read} read, "
            f"{self.loaded} loaded, {self.repaired} repaired, {self.rejected} rejected",
            "",
        ]
        if self.error:
            lines += [f"**Refused:** {_md_cell(self.error)}", ""]
        severities = " · ".join(f"{n} {severity}" for severity, n in self.severities.items())
        lines += [f"**Findings** {severities}", ""]
        if self.counts:
            lines += [
                "| Rule | Severity | Count | Thông báo |",
                "|---|---|---:|---|",
            ]
            for code, n in self.counts.items():
                rule = self.rules.get(code, RuleText("?", "", ""))
                lines.append(f"| `{code}` | {rule.severity} | {n} | {_md_cell(rule.vi)} |")
            lines.append("")
        lines.append(
            f"[Report (HTML)]({self.html.resolve().as_uri()}) · "
            f"[Findings (GeoPackage)]({self.gpkg.resolve().as_uri()})"
        )
        return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# --------------------------------------------------------------------------- reading


@dataclass
class _Contents:
    """Everything the report shows, read from the register."""

    batch: dict[str, Any]
    rules: dict[str, RuleText]
    findings: gpd.GeoDataFrame
    rejected: gpd.GeoDataFrame
    parcels: gpd.GeoDataFrame
    crs: CRS
    closed: list[dict[str, Any]] = field(default_factory=list)
    changes: gpd.GeoDataFrame | None = None


_BATCH_SQL = sa.text(
    "SELECT b.*, c.name AS commune_name FROM land.batch b"
    " LEFT JOIN land.admin_unit c ON c.code = b.commune_code WHERE b.id = :batch"
)
_FINDINGS_SQL = sa.text(
    "SELECT id AS finding_id, rule_code, severity, commune_code, sheet_no, parcel_no,"
    " source_row, message, detail::text AS detail, other_commune_code, other_sheet_no,"
    " other_parcel_no, area_m2::float8 AS area_m2, ST_AsBinary(location) AS geometry"
    " FROM land.finding WHERE batch_id = :batch ORDER BY id"
)
_REJECTED_SQL = sa.text(
    "SELECT id AS rejected_id, source_row, rule_codes, commune_code, sheet_no, parcel_no,"
    " attributes::text AS attributes, ST_AsBinary(geom) AS geometry"
    " FROM land.rejected_record WHERE batch_id = :batch ORDER BY source_row, id"
)
# The delivery as the register held it right after the batch: the versions the batch wrote,
# and in the sheets it covered the earlier versions it left unchanged (current then).
_PARCELS_SQL = sa.text(
    "SELECT v.commune_code, v.sheet_no, v.parcel_no, ST_AsBinary(v.geom) AS geometry"
    " FROM land.parcel_version v WHERE v.batch_id = :batch"
    " OR (v.batch_id < :batch"
    "     AND (v.retired_batch_id IS NULL OR v.retired_batch_id > :batch)"
    "     AND (v.commune_code, v.sheet_no) IN ("
    "         SELECT sheet->>0, (sheet->>1)::int FROM land.batch b,"
    "             jsonb_array_elements(b.covered_sheets) AS sheet WHERE b.id = :batch))"
)
# Findings of earlier batches that this batch closed (superseded): a re-delivery's fixes.
_CLOSED_SQL = sa.text(
    "SELECT batch_id, rule_code, severity, commune_code, sheet_no, parcel_no,"
    " other_commune_code, other_sheet_no, other_parcel_no, message"
    " FROM land.finding WHERE closed_by_batch_id = :batch ORDER BY batch_id, id"
)
# The parcels the batch changed (the new version) or retired (the version it closed, which no
# later version of the key replaced in the same batch); added ones are the delivery itself.
_CHANGES_SQL = sa.text(
    "SELECT 'changed' AS change, v.commune_code, v.sheet_no, v.parcel_no, v.id AS version_id,"
    " v.previous_version_id, ST_AsBinary(v.geom) AS geometry"
    " FROM land.parcel_version v WHERE v.batch_id = :batch AND v.change = 'changed'"
    " UNION ALL"
    " SELECT 'retired', v.commune_code, v.sheet_no, v.parcel_no, v.id, v.previous_version_id,"
    " ST_AsBinary(v.geom) FROM land.parcel_version v"
    " WHERE v.retired_batch_id = :batch AND NOT EXISTS (SELECT FROM land.parcel_version n"
    "     WHERE n.previous_version_id = v.id AND n.batch_id = :batch)"
    " ORDER BY 1, 2, 3, 4"
)
_INT_COLUMNS = ("sheet_no", "parcel_no", "source_row", "other_sheet_no", "other_parcel_no")


def _frame(connection: Connection, query: sa.TextClause, batch_id: int, crs: CRS):
    result = connection.execute(query, {"batch": batch_id})
    names = list(result.keys())
    rows = result.fetchall()
    columns = dict(zip(names, zip(*rows, strict=True), strict=True)) if rows else {}
    columns = {name: columns.get(name, ()) for name in names}
    wkb = [None if value is None else bytes(value) for value in columns.pop("geometry")]
    frame = pd.DataFrame(
        {
            name: pd.array(values, dtype="Int64") if name in _INT_COLUMNS else list(values)
            for name, values in columns.items()
        }
    )
    return gpd.GeoDataFrame(frame, geometry=shapely.from_wkb(wkb), crs=crs)


def _storage_crs(connection: Connection) -> CRS:
    """EPSG:9218 from PROJ, or the definition the register inserted where PROJ lacks it."""
    try:
        return CRS.from_epsg(canonical.STORAGE_EPSG)
    except ProjCRSError:
        wkt = connection.execute(
            sa.text("SELECT srtext FROM spatial_ref_sys WHERE srid = :srid"),
            {"srid": canonical.STORAGE_EPSG},
        ).scalar_one()
        return CRS.from_wkt(wkt)


def _read(engine: Engine, batch_id: int) -> _Contents:
    try:
        with engine.connect() as connection:
            batch = _batch_row(connection, batch_id)
            crs = _storage_crs(connection)
            rules = {
                code: RuleText(severity, vi, en)
                for code, severity, en, vi in connection.execute(
                    sa.text("SELECT code, severity, description_en, description_vi FROM land.rule")
                )
            }
            findings = _frame(connection, _FINDINGS_SQL, batch_id, crs)
            rejected = _frame(connection, _REJECTED_SQL, batch_id, crs)
            parcels = _frame(connection, _PARCELS_SQL, batch_id, crs)
            closed = [
                dict(row) for row in connection.execute(_CLOSED_SQL, {"batch": batch_id}).mappings()
            ]
            changes = None
            if batch.get("n_changed") or batch.get("n_retired"):
                changes = _frame(connection, _CHANGES_SQL, batch_id, crs)
    except sa.exc.DBAPIError as err:
        raise DatabaseError.of(f"cannot read batch {batch_id} from the register", err) from err
    return _Contents(batch, rules, findings, rejected, parcels, crs, closed, changes)


def _batch_row(connection: Connection, batch_id: int) -> dict[str, Any]:
    row = connection.execute(_BATCH_SQL, {"batch": batch_id}).mappings().one_or_none()
    if row is None:
        raise ConfigError(f"batch {batch_id} does not exist (see land.batch for the batches)")
    return dict(row)


def report_folder(engine: Engine, batch_id: int, home: Path) -> Path:
    """Where ``landpipe report`` writes by default.

    Beside the delivery when it is still there and its folder is writable; for a delivery
    the inbox has filed away since, beside it in the inbox's ``archive/`` or ``failed/``
    (written into the inbox, the report would wait there among the deliveries); else
    ``home/reports`` (``$LANDPIPE_HOME/reports``).

    Raises
    ------
    ConfigError
        The batch does not exist.
    """
    with engine.connect() as connection:
        source_path = _batch_row(connection, batch_id).get("source_path")
    delivery = Path(source_path) if source_path else None
    if delivery is not None and not delivery.exists():
        from landpipe.inbox import filed_copy  # (the inbox writes its reports with this module)

        delivery = filed_copy(delivery, batch_id)
    return folder_beside(delivery, home)


def folder_beside(delivery: Path | None, home: Path) -> Path:
    """The folder of ``delivery`` when it exists and is writable, else ``home/reports``."""
    if delivery is not None:
        folder = delivery.resolve().parent
        if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
            return folder
    return home / "reports"


# --------------------------------------------------------------------------- the report


def write_report(engine: Engine, batch_id: int, out_dir: Path, stem: str | None = None) -> Report:
    """Write the HTML report and the findings GeoPackage of ``batch_id`` into ``out_dir``.

    ``out_dir`` is created if missing; files of the same name are replaced. ``stem`` defaults
    to ``<delivery file name>.batch-<id>`` (``batch-<id>`` for a batch without a file).

    Raises
    ------
    ConfigError
        The batch does not exist.
    DatabaseError
        The register cannot be read.
    OSError
        ``out_dir`` cannot be created or written.
    """
    contents = _read(engine, batch_id)
    batch = contents.batch
    if stem is None:
        source = batch.get("source_path")
        stem = f"{Path(source).name}.batch-{batch_id}" if source else f"batch-{batch_id}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_ending, gpkg_ending = REPORT_ENDINGS
    html_path = out_dir / f"{stem}{html_ending}"
    gpkg_path = out_dir / f"{stem}{gpkg_ending}"

    findings = contents.findings
    counts = dict(sorted(Counter(findings["rule_code"]).items()))
    by_severity = Counter(findings["severity"])
    layers = _write_geopackage(contents, gpkg_path)
    report = Report(
        batch_id=batch_id,
        status=batch["status"],
        source_path=batch.get("source_path"),
        html=html_path,
        gpkg=gpkg_path,
        counts={code: int(n) for code, n in counts.items()},
        severities={severity: int(by_severity.get(severity, 0)) for severity in SEVERITY_ORDER},
        read=int(batch.get("n_read") or 0),
        loaded=int(batch.get("n_loaded") or 0),
        repaired=int(batch.get("n_repaired") or 0),
        rejected=int(batch.get("n_rejected") or 0),
        layers=layers,
        rules={code: contents.rules[code] for code in counts if code in contents.rules},
        commune_code=batch.get("commune_code"),
        error=batch.get("error"),
    )
    _replace(html_path, lambda tmp: tmp.write_text(_page(contents, report), encoding="utf-8"))
    return report


def _replace(target: Path, write) -> None:
    """Write through a temporary file beside ``target``, so a reader never sees half a file."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{target.suffix}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def publish_artifact(report: Report) -> None:
    """Publish the report's counts and links as Prefect artifacts of the running flow.

    A markdown artifact ``batch-<id>-report`` (:meth:`Report.markdown`) and a table artifact
    ``batch-<id>-findings`` (one row per rule). Outside a flow or task run this does nothing.
    """
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    description = f"Quality report of batch {report.batch_id} ({report.status})"
    # _sync: an async flow would otherwise be handed a coroutine it never awaits.
    create_markdown_artifact(
        markdown=report.markdown(),
        key=f"batch-{report.batch_id}-report",
        description=description,
        _sync=True,
    )
    table = [
        {
            "rule": code,
            "severity": report.rules[code].severity if code in report.rules else "?",
            "count": n,
            "message_vi": report.rules[code].vi if code in report.rules else "",
            "message_en": report.rules[code].en if code in report.rules else "",
        }
        for code, n in report.counts.items()
    ]
    create_table_artifact(
        table=table,
        key=f"batch-{report.batch_id}-findings",
        description=description,
        _sync=True,
    )


# --------------------------------------------------------------------------- GeoPackage


def _family(geometries: np.ndarray) -> np.ndarray:
    """``point``, ``line``, ``polygon`` or ``none`` per geometry (a collection: its highest)."""
    kinds = np.full(len(geometries), "none", dtype=object)
    present = ~shapely.is_missing(geometries) & ~shapely.is_empty(geometries)
    for i in np.flatnonzero(present):
        kinds[i] = max(
            {_FAMILY.get(part.geom_type, "none") for part in _parts(geometries[i])},
            key=lambda family: _DIMENSION.get(family, -1),
        )
    return kinds


def _parts(geometry: shapely.Geometry) -> np.ndarray:
    """The single points, lines and polygons of ``geometry`` (collections flattened)."""
    parts = shapely.get_parts(geometry)
    while np.isin(shapely.get_type_id(parts), (4, 5, 6, 7)).any():  # multi-parts, collections
        parts = shapely.get_parts(parts)
    return parts


def _only(geometry: shapely.Geometry, family: str) -> shapely.Geometry:
    """The parts of a GeometryCollection of ``family``, as one multi-geometry."""
    if geometry.geom_type != "GeometryCollection":
        return geometry
    parts = [p for p in _parts(geometry) if _FAMILY.get(p.geom_type) == family]
    make = {
        "point": shapely.multipoints,
        "line": shapely.multilinestrings,
        "polygon": shapely.multipolygons,
    }
    return make[family](parts)


def _rejected_columns(rejected: gpd.GeoDataFrame, contents: _Contents) -> pd.DataFrame:
    """Rejected records with their reasons and their delivered attributes.

    The delivered fields become ``src_<field>`` columns (numbers stay numbers; a field holding
    anything else is text), and ``attributes`` keeps the record as delivered, as JSON text.
    """
    messages: dict[int, list[str]] = {}
    findings = contents.findings
    for row, message in zip(
        findings["source_row"],
        findings["message"].where(findings["severity"] == "reject"),
        strict=True,
    ):
        if not pd.isna(row) and isinstance(message, str):
            messages.setdefault(int(row), []).append(message)
    codes = [list(c) for c in rejected["rule_codes"]]
    table = pd.DataFrame(
        {
            "rejected_id": rejected["rejected_id"].astype("int64"),
            "batch_id": contents.batch["id"],
            "rule_codes": [",".join(c) for c in codes],
            "severity": "reject",
            "message_vi": [
                " | ".join(contents.rules[c].vi for c in cs if c in contents.rules) for cs in codes
            ],
            "message": ["; ".join(messages.get(int(row), [])) for row in rejected["source_row"]],
            "commune_code": rejected["commune_code"],
            "sheet_no": rejected["sheet_no"],
            "parcel_no": rejected["parcel_no"],
            "source_row": rejected["source_row"],
            "attributes": rejected["attributes"],
        },
        index=rejected.index,
    )
    delivered = [json.loads(text) for text in rejected["attributes"]]
    names = list(dict.fromkeys(name for record in delivered for name in record))
    taken = {name.lower() for name in table.columns}
    for name in names:
        column = f"src_{name}"
        while column.lower() in taken:  # GeoPackage column names ignore case
            column += "_"
        taken.add(column.lower())
        values = [record.get(name) for record in delivered]
        table[column] = _delivered_column(values)
    return table


def _delivered_column(values: list[Any]) -> pd.Series:
    """A delivered field's values as one column: integers, numbers, else text (JSON)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.Series(values, dtype="Int64")
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pd.Series([np.nan if v is None else float(v) for v in values], dtype="float64")
    return pd.Series(
        [
            None if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for v in values
        ],
        dtype=object,
    )


def _finding_columns(findings: gpd.GeoDataFrame, contents: _Contents) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "finding_id": findings["finding_id"].astype("int64"),
            "batch_id": contents.batch["id"],
            "rule_code": findings["rule_code"],
            "severity": findings["severity"],
            "message_vi": [
                contents.rules[c].vi if c in contents.rules else "" for c in findings["rule_code"]
            ],
            "message": findings["message"],
            "commune_code": findings["commune_code"],
            "sheet_no": findings["sheet_no"],
            "parcel_no": findings["parcel_no"],
            "source_row": findings["source_row"],
            "other_commune_code": findings["other_commune_code"],
            "other_sheet_no": findings["other_sheet_no"],
            "other_parcel_no": findings["other_parcel_no"],
            "area_m2": findings["area_m2"].astype("float64"),
            "detail": findings["detail"],
        },
        index=findings.index,
    )


def _batch_table(batch: dict[str, Any]) -> pd.DataFrame:
    columns = (
        "id",
        "source_path",
        "source_format",
        "source_layer",
        "commune_code",
        "crs_read",
        "crs_how",
        "text_encoding",
        "text_encoding_how",
        "status",
        "error",
        "n_read",
        "n_loaded",
        "n_repaired",
        "n_rejected",
        "n_added",
        "n_changed",
        "n_unchanged",
        "n_retired",
        "kind",
        "n_closed",
        "reviewed_by",
        "note",
    )
    row = {name: batch.get(name) for name in columns}
    for name in ("started_at", "finished_at"):
        row[name] = batch[name].isoformat() if batch.get(name) else None
    row["batch_id"] = row.pop("id")
    return pd.DataFrame([row])


def _write_geopackage(contents: _Contents, path: Path) -> dict[str, int]:
    """Write the findings and rejected records by geometry type; return rows per layer."""
    written: dict[str, int] = {}

    def write(target: Path) -> None:
        pyogrio.write_dataframe(_batch_table(contents.batch), target, layer="batch", driver="GPKG")
        written["batch"] = 1
        sources = (
            ("findings", contents.findings, _finding_columns, "no_location"),
            ("rejected", contents.rejected, _rejected_columns, "no_geometry"),
        )
        for prefix, frame, columns, empty in sources:
            if frame.empty:
                continue
            table = columns(frame, contents)
            families = _family(frame.geometry.values)
            for family in ("point", "line", "polygon", "none"):
                rows = families == family
                if not rows.any():
                    continue
                if family == "none":
                    layer = f"{prefix}_{empty}"
                    pyogrio.write_dataframe(
                        table[rows].reset_index(drop=True), target, layer=layer, driver="GPKG"
                    )
                else:
                    layer = f"{prefix}_{family}"
                    geometries = [_only(g, family) for g in frame.geometry.values[rows]]
                    pyogrio.write_dataframe(
                        gpd.GeoDataFrame(
                            table[rows].reset_index(drop=True),
                            geometry=geometries,
                            crs=contents.crs,
                        ),
                        target,
                        layer=layer,
                        driver="GPKG",
                        # Lines and areas always multi, one type per layer for QGIS; points
                        # stay single unless some are multi.
                        promote_to_multi=True if family != "point" else None,
                    )
                written[layer] = int(rows.sum())
        if contents.closed:  # no geometry: the findings of earlier batches, by key
            closed = pd.DataFrame(contents.closed)
            for name in closed.columns:  # typed as in the findings layers, even all null
                integer = name == "batch_id" or name in _INT_COLUMNS
                closed[name] = closed[name].astype("Int64" if integer else "string")
            pyogrio.write_dataframe(closed, target, layer="closed_findings", driver="GPKG")
            written["closed_findings"] = len(contents.closed)
        if contents.changes is not None and not contents.changes.empty:
            changes = contents.changes.copy()
            changes["geometry"] = [_only(g, "polygon") for g in changes.geometry.values]
            pyogrio.write_dataframe(
                changes, target, layer="changes", driver="GPKG", promote_to_multi=True
            )
            written["changes"] = len(changes)

    try:
        _replace(path, write)
    except pyogrio.errors.DataSourceError as err:  # GDAL could not create the file
        raise OSError(f"cannot write {path}: {err}") from err
    return written


# --------------------------------------------------------------------------- map


#: How many times the map's size a geometry may span and still be drawn on it.
_FAR = 1000


@dataclass(frozen=True)
class _MapFrame:
    """Metres of EPSG:9218 to SVG user units: x to the right, y down, MAP_UNITS on the long
    side, a 3 % margin around ``bounds``."""

    xmin: float
    ymax: float
    scale: float
    width: int
    height: int

    @classmethod
    def around(cls, bounds: np.ndarray) -> _MapFrame:
        xmin, ymin, xmax, ymax = (float(b) for b in bounds)
        span = max(xmax - xmin, ymax - ymin, 10.0)
        margin = 0.03 * span
        xmin, ymin, xmax, ymax = xmin - margin, ymin - margin, xmax + margin, ymax + margin
        scale = MAP_UNITS / (span + 2 * margin)
        width = max(round((xmax - xmin) * scale), 1)
        height = max(round((ymax - ymin) * scale), 1)
        return cls(xmin, ymax, scale, width, height)

    def inside(self, geometries: np.ndarray) -> np.ndarray:
        """Which geometries' bounding boxes touch the map (missing and empty ones do not);
        boxes, because a rejected geometry may be too invalid for an exact predicate."""
        box = shapely.box(
            self.xmin,
            self.ymax - self.height / self.scale,
            self.xmin + self.width / self.scale,
            self.ymax,
        )
        present = ~shapely.is_missing(geometries) & ~shapely.is_empty(geometries)
        # A record whose coordinates are out of all proportion (1e300: an export gone wrong)
        # has no drawing on this map, nor one the SVG's whole units could hold.
        with np.errstate(over="ignore", invalid="ignore"):
            bounds = shapely.bounds(geometries[present])
            size = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
            present[present] = np.isfinite(size) & (size * self.scale <= _FAR * MAP_UNITS)
        hits = np.zeros(len(geometries), dtype=bool)
        hits[present] = shapely.intersects(box, shapely.envelope(geometries[present]))
        return hits

    def points(self, geometries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whole-unit SVG coordinates of one point on each geometry."""
        xy = shapely.get_coordinates(shapely.point_on_surface(geometries))
        return (
            np.rint((xy[:, 0] - self.xmin) * self.scale).astype(np.int64),
            np.rint((self.ymax - xy[:, 1]) * self.scale).astype(np.int64),
        )

    def path(self, geometries: np.ndarray) -> str:
        """SVG path data drawing the rings and lines of ``geometries``, simplified to one unit.

        Relative commands with whole units (``m12 -4 30 0 0 21-30 0z``); vertices that round
        onto the previous one are dropped, and so are rings that round to a point.
        """
        present = ~shapely.is_missing(geometries) & ~shapely.is_empty(geometries)
        simple = geometries[present]
        # What spans less than a unit each way has nothing to simplify away that rounding
        # does not (at province scale, that is most parcels).
        x0, y0, x1, y1 = shapely.bounds(simple).T
        large = np.flatnonzero(np.maximum(x1 - x0, y1 - y0) * self.scale >= 1)
        simple[large] = shapely.simplify(simple[large], 1.0 / self.scale, preserve_topology=True)
        parts = shapely.get_parts(shapely.get_parts(simple))  # collections hold multi-parts
        kinds = shapely.get_type_id(parts)
        rings = shapely.get_rings(parts[kinds == 3])
        lines = parts[np.isin(kinds, (1, 2))]
        paths = np.concatenate([rings, lines])
        if len(paths) == 0:
            return ""
        closed = np.r_[np.ones(len(rings), bool), np.zeros(len(lines), bool)]
        xy, which = shapely.get_coordinates(paths, return_index=True)
        u = np.rint((xy[:, 0] - self.xmin) * self.scale).astype(np.int64)
        v = np.rint((self.ymax - xy[:, 1]) * self.scale).astype(np.int64)
        last = np.r_[which[1:] != which[:-1], True]
        keep = ~(last & closed[which])  # a ring's closing vertex: "z" draws that edge
        u, v, which = u[keep], v[keep], which[keep]
        start = np.r_[True, which[1:] != which[:-1]]
        du, dv = np.diff(u, prepend=0), np.diff(v, prepend=0)
        keep = start | (du != 0) | (dv != 0)
        u, v, which, start = u[keep], v[keep], which[keep], start[keep]
        # Paths of one vertex (a ring or line that rounds to a point) draw nothing.
        n_vertices = np.bincount(which, minlength=len(paths))
        keep = n_vertices[which] > 1
        u, v, which, start = u[keep], v[keep], which[keep], start[keep]
        if len(u) == 0:
            return ""
        last = np.r_[which[1:] != which[:-1], True]
        # A relative moveto starts from the current point: the start of a closed ring ("z"
        # returns there) or the end of an open line.
        first = np.maximum.accumulate(np.where(start, np.arange(len(u)), 0))
        pen_u = np.where(closed[which], u[first], u)
        pen_v = np.where(closed[which], v[first], v)
        du, dv = np.diff(u, prepend=0), np.diff(v, prepend=0)
        ends = np.flatnonzero(last)[:-1]
        starts = np.flatnonzero(start)[1:]
        du[starts] = u[starts] - pen_u[ends]
        dv[starts] = v[starts] - pen_v[ends]
        numbers = np.empty(2 * len(u), dtype=np.int64)
        numbers[0::2], numbers[1::2] = du, dv
        prefix = np.where(numbers < 0, "", " ").astype(object)
        prefix[0::2][start] = "m"
        suffix = np.full(len(numbers), "", dtype=object)
        suffix[1::2][last & closed[which]] = "z"
        # Joined piecewise: a million small Python strings at once weigh 100 MB.
        chunk, pieces = 1 << 16, []
        for i in range(0, len(numbers), chunk):
            texts = np.array([str(n) for n in numbers[i : i + chunk].tolist()], dtype=object)
            pieces.append("".join(prefix[i : i + chunk] + texts + suffix[i : i + chunk]))
        return "".join(pieces)


def _keys(frame: pd.DataFrame, columns: tuple[str, str, str]) -> list[tuple[str, int, int]]:
    return [
        (str(c), int(s), int(p))
        for c, s, p in frame[list(columns)].itertuples(index=False)
        if not (pd.isna(c) or pd.isna(s) or pd.isna(p))
    ]


def _flagged(findings: pd.DataFrame, severity: str) -> set[tuple[str, int, int]]:
    """Parcel keys a finding of ``severity`` names, as the parcel or the other of a pair."""
    rows = findings[findings["severity"] == severity]
    return set(_keys(rows, canonical.KEY)) | set(
        _keys(rows, ("other_commune_code", "other_sheet_no", "other_parcel_no"))
    )


@dataclass
class _Map:
    svg: str = ""
    legend: dict[str, int] = field(default_factory=dict)
    outside: int = 0


def _map(contents: _Contents) -> _Map:
    """The SVG map: parcels as outlines, rejected records, blocked and warned parcels filled,
    finding locations (shapes and one marker each); items far outside the parcels are left out
    and counted."""
    parcels, rejected, findings = contents.parcels, contents.rejected, contents.findings
    if len(parcels):
        bounds = parcels.total_bounds
    else:
        present = [g for g in (*rejected.geometry, *findings.geometry) if g and not g.is_empty]
        if not present:
            return _Map()
        bounds = shapely.total_bounds(np.array(present, dtype=object))
    frame = _MapFrame.around(bounds)

    blocked_keys = _flagged(findings, "block")
    warned_keys = _flagged(findings, "warn") - blocked_keys
    keys = pd.MultiIndex.from_arrays(
        [
            parcels["commune_code"].astype(str),
            parcels["sheet_no"].astype("int64"),
            parcels["parcel_no"].astype("int64"),
        ]
    )
    blocked = keys.isin(list(blocked_keys)) if blocked_keys else np.zeros(len(keys), bool)
    warned = keys.isin(list(warned_keys)) if warned_keys else np.zeros(len(keys), bool)
    geometries = parcels.geometry.values.to_numpy() if len(parcels) else np.array([], object)

    rejected_geometries = rejected.geometry.values.to_numpy()
    rejected_in = frame.inside(rejected_geometries)
    rejected_families = _family(rejected_geometries)
    finding_geometries = findings.geometry.values.to_numpy()
    finding_in = frame.inside(finding_geometries)
    finding_families = _family(finding_geometries)
    outside = int(
        (~rejected_in & (rejected_families != "none")).sum()
        + (~finding_in & (finding_families != "none")).sum()
    )

    def path(css: str, selected: np.ndarray) -> str:
        data = frame.path(selected)
        return f'<path class="{css}" d="{data}"/>' if data else ""

    layers = [
        path("parcel", geometries),
        path("rejected area", rejected_geometries[rejected_in & (rejected_families == "polygon")]),
        path("rejected", rejected_geometries[rejected_in & (rejected_families == "line")]),
    ]
    points = rejected_in & (rejected_families == "point")
    if points.any():
        xs, ys = frame.points(rejected_geometries[points])
        layers.append(
            '<g class="rejected-points">'
            + "".join(f'<circle cx="{x}" cy="{y}"/>' for x, y in zip(xs, ys, strict=True))
            + "</g>"
        )
    layers += [
        path("blocked area", geometries[blocked]),
        path("warned area", geometries[warned]),
        path("fshape area", finding_geometries[finding_in & (finding_families == "polygon")]),
        path("fshape", finding_geometries[finding_in & (finding_families == "line")]),
    ]
    marked = findings[finding_in]
    if len(marked):
        xs, ys = frame.points(finding_geometries[finding_in])
        markers = [
            f'<circle id="m{fid}" class="m" cx="{x}" cy="{y}">'
            f"<title>{html.escape(f'{rule} {_key_text(row)}')}</title></circle>"
            for fid, rule, row, x, y in zip(
                marked["finding_id"],
                marked["rule_code"],
                marked.itertuples(index=False),
                xs,
                ys,
                strict=True,
            )
        ]
        layers.append(f'<g id="markers">{"".join(markers)}</g>')
    svg = (
        f'<svg id="map" viewBox="0 0 {frame.width} {frame.height}" role="img"'
        f' aria-label="Map of batch {contents.batch["id"]}">{"".join(layers)}</svg>'
    )
    legend = {
        "parcel": len(parcels),
        "rejected": int((rejected_in & (rejected_families != "none")).sum()),
        "blocked": int(blocked.sum()),
        "warned": int(warned.sum()),
        "finding": len(marked),
    }
    return _Map(svg, legend, outside)


# --------------------------------------------------------------------------- HTML

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)

_CSS = string.Template(
    """
:root{color-scheme:light}
body{margin:0;font:14px/1.45 "Noto Sans","DejaVu Sans","Segoe UI",Arial,sans-serif;
color:#1f2933;background:#fff}
header,section{padding:12px 24px}
header{border-bottom:1px solid #d5dbe1;background:#f6f8fa}
h1{font-size:22px;margin:0 0 8px}
h2{font-size:17px;margin:8px 0}
.status{display:inline-block;padding:1px 10px;border-radius:10px;color:#fff;font-size:14px;
vertical-align:middle;background:#52606d}
.status.loaded{background:#2f8132}.status.rejected{background:#b42318}
.status.failed{background:#b42318}
.refusal{margin:12px 0;padding:12px 16px;border:2px solid #b42318;background:#fde8e8;
color:#7a1010;font-size:16px;font-weight:600;white-space:pre-wrap}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}
dl.meta dt{color:#52606d}dl.meta dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse}
th,td{padding:3px 8px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.sev{font-weight:600}.sev-reject{color:#b42318}.sev-block{color:#b85c00}
.sev-warn{color:#8a6d00}
.en{color:#52606d;font-size:12px}
.grid{display:grid;grid-template-columns:minmax(0,9fr) minmax(0,11fr);gap:16px;
padding:0 24px 24px}
.grid section{padding:12px 0}
.mapbox{position:sticky;top:0;align-self:start}
@media (max-width:1000px){.grid{grid-template-columns:1fr}.mapbox{position:static}}
#map{display:block;width:100%;height:auto;max-height:calc(100vh - 140px);
border:1px solid #c5ccd3;background:#fff;cursor:grab;touch-action:none}
#map path{fill:none;stroke-linejoin:round;vector-effect:non-scaling-stroke}
#map .parcel{stroke:$parcel;stroke-width:1}
#map .rejected{stroke:$rejected;stroke-width:2}
#map .rejected.area{fill:$rejected;fill-rule:evenodd}
#map .rejected-points circle{fill:$rejected;r:calc(var(--u,1px)*4)}
#map .blocked{fill:$blocked;stroke:$blocked;fill-rule:evenodd}
#map .warned{fill:$warned;stroke:$warned;fill-rule:evenodd}
#map .fshape{stroke:$finding;stroke-width:2.5}
#map .fshape.area{fill:$finding;fill-opacity:.35;fill-rule:evenodd}
#map .m{fill:none;stroke:$finding;stroke-width:2.5;vector-effect:non-scaling-stroke;
r:calc(var(--u,1px)*7);cursor:pointer;pointer-events:all}
#map .m.hl{stroke:#111;stroke-width:4;r:calc(var(--u,1px)*12)}
.legend{list-style:none;padding:0;margin:8px 0;display:flex;flex-wrap:wrap;gap:4px 18px}
.sw{display:inline-block;width:14px;height:14px;margin-right:6px;vertical-align:-2px;
border:1px solid #fff}
.sw.parcel{border:2px solid $parcel;width:11px;height:11px}
.sw.rejected{background:$rejected}.sw.blocked{background:$blocked}
.sw.warned{background:$warned}
.sw.finding{border:3px solid $finding;border-radius:50%;width:9px;height:9px}
.note{color:#52606d;font-size:12px}
#findings{width:100%;font-size:13px}
#findings td{overflow-wrap:anywhere}
#findings td:nth-child(-n+4){white-space:nowrap;overflow-wrap:normal}
#findings thead th{position:sticky;top:0;background:#f6f8fa;z-index:1}
#findings th button{all:unset;cursor:pointer;font-weight:600}
#findings th[aria-sort=ascending] button::after{content:" \\25B2"}
#findings th[aria-sort=descending] button::after{content:" \\25BC"}
#findings tbody tr.loc{cursor:pointer}
#findings tbody tr:hover{background:#f0f4f8}
#findings tbody tr.hl{background:#efe0f5}
"""
).substitute(COLOURS)

_JS = r"""
(function () {
  "use strict";
  var table = document.getElementById("findings");
  var svg = document.getElementById("map");
  var collator = new Intl.Collator("vi", {numeric: true});

  function cellValue(row, i) {
    var cell = row.cells[i];
    return cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent;
  }
  function sortBy(key, descending) {
    var heads = table.tHead.rows[0].cells, col = -1, i;
    for (i = 0; i < heads.length; i++) {
      if (heads[i].getAttribute("data-key") === key) { col = i; }
      heads[i].setAttribute("aria-sort", "none");
    }
    if (col < 0) { return; }
    heads[col].setAttribute("aria-sort", descending ? "descending" : "ascending");
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var order = collator.compare(cellValue(a, col), cellValue(b, col));
      return descending ? -order : order;
    });
    var sorted = document.createDocumentFragment();
    rows.forEach(function (row) { sorted.appendChild(row); });
    body.appendChild(sorted);
  }
  if (table) {
    table.tHead.addEventListener("click", function (event) {
      var head = event.target.closest("th");
      if (!head) { return; }
      var key = head.getAttribute("data-key");
      var descending = head.getAttribute("aria-sort") === "ascending";
      sortBy(key, descending);
      try { history.replaceState(null, "", "#sort=" + (descending ? "-" : "") + key); }
      catch (ignored) { /* some browsers refuse for file: pages */ }
    });
    var wanted = /^#sort=(-?)([a-z]+)$/.exec(location.hash);
    if (wanted) { sortBy(wanted[2], wanted[1] === "-"); }
  }

  var full = null, view = null;
  function unitsPerPixel() {
    var box = svg.getBoundingClientRect();
    return Math.max(view[2] / (box.width || 1), view[3] / (box.height || 1));
  }
  function show() {
    svg.setAttribute("viewBox", view.join(" "));
    svg.style.setProperty("--u", unitsPerPixel() + "px");
  }
  if (svg) {
    full = svg.getAttribute("viewBox").split(" ").map(Number);
    view = full.slice();
    show();
    window.addEventListener("resize", show);
    svg.addEventListener("wheel", function (event) {
      event.preventDefault();
      var point = svg.createSVGPoint();
      point.x = event.clientX; point.y = event.clientY;
      point = point.matrixTransform(svg.getScreenCTM().inverse());
      var f = event.deltaY < 0 ? 0.8 : 1.25;
      f = Math.max(Math.min(f, full[2] / view[2]), full[2] / 500 / view[2]);
      view = [point.x - (point.x - view[0]) * f, point.y - (point.y - view[1]) * f,
              view[2] * f, view[3] * f];
      show();
    }, {passive: false});
    var drag = null;
    svg.addEventListener("pointerdown", function (event) {
      drag = {x: event.clientX, y: event.clientY, view: view.slice(), k: unitsPerPixel()};
      svg.style.cursor = "grabbing";
    });
    window.addEventListener("pointermove", function (event) {
      if (!drag) { return; }
      view[0] = drag.view[0] - (event.clientX - drag.x) * drag.k;
      view[1] = drag.view[1] - (event.clientY - drag.y) * drag.k;
      show();
    });
    window.addEventListener("pointerup", function () { drag = null; svg.style.cursor = ""; });
    svg.addEventListener("dblclick", function () { view = full.slice(); show(); });
    svg.addEventListener("click", function (event) {
      var marker = event.target.closest(".m");
      if (marker) { select(marker.id.slice(1), true); }
    });
  }

  function select(id, fromMap) {
    var lit = document.querySelectorAll(".hl"), i;
    for (i = 0; i < lit.length; i++) { lit[i].classList.remove("hl"); }
    var row = table && table.querySelector('tr[data-f="' + id + '"]');
    var marker = document.getElementById("m" + id);
    if (row) {
      row.classList.add("hl");
      if (fromMap) { row.scrollIntoView({block: "nearest"}); }
    }
    if (marker && svg) {
      marker.classList.add("hl");
      marker.parentNode.appendChild(marker);
      if (!fromMap) {
        var w = Math.min(view[2], full[2] / 4), h = view[3] * w / view[2];
        view = [+marker.getAttribute("cx") - w / 2, +marker.getAttribute("cy") - h / 2, w, h];
        show();
      }
    }
  }
  if (table) {
    table.tBodies[0].addEventListener("click", function (event) {
      var row = event.target.closest("tr");
      if (row) { select(row.getAttribute("data-f"), false); }
    });
  }

  // Where the map and the findings table are drawn, in page pixels (for screenshot checks).
  var layout = {};
  [["map", svg], ["table", table]].forEach(function (item) {
    if (!item[1]) { return; }
    var box = item[1].getBoundingClientRect();
    layout[item[0]] = [Math.round(box.left + window.scrollX), Math.round(box.top + window.scrollY),
                       Math.round(box.width), Math.round(box.height)];
  });
  document.documentElement.setAttribute("data-layout", JSON.stringify(layout));
})();
"""


def _e(value: Any) -> str:
    """Escaped text of a value for HTML (``—`` for nothing)."""
    if value is None or (not isinstance(value, str | list | dict) and pd.isna(value)):
        return "—"
    return html.escape(str(value))


def _key_text(row: Any) -> str:
    def part(value: Any) -> str:
        return "?" if value is None or pd.isna(value) else str(value)

    key = "/".join(part(getattr(row, name)) for name in canonical.KEY)
    if all(part(getattr(row, name)) == "?" for name in canonical.KEY):
        key = ""
    if not pd.isna(getattr(row, "other_parcel_no", None)):
        other = "/".join(part(getattr(row, f"other_{name}")) for name in canonical.KEY)
        key = f"{key} ↔ {other}"
    return key


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _header(contents: _Contents, report: Report) -> str:
    batch = contents.batch
    status = batch["status"]
    commune = batch.get("commune_code")
    if commune and batch.get("commune_name"):
        commune = f"{commune} {batch['commune_name']}"
    crs = batch.get("crs_read")
    if crs and batch.get("crs_how"):
        crs = f"{crs} ({batch['crs_how']})"
    encoding = batch.get("text_encoding")
    if encoding:
        how = [batch.get("text_encoding_how")]
        if batch.get("text_encoding_confidence") is not None:
            how.append(f"confidence {batch['text_encoding_confidence']:.2f}")
        if batch.get("text_encoding_declared"):
            how.append(f".cpg said {batch['text_encoding_declared']}")
        encoding = f"{encoding} ({', '.join(h for h in how if h)})"
    source = batch.get("source_format")
    if batch.get("source_layer"):
        source = f"{source or ''}, layer {batch['source_layer']}"
    mapping = batch.get("field_mapping") or {}
    rows = [
        ("Delivery", batch.get("source_path")),
        ("Format", source),
        ("Commune", commune),
        ("Started", _when(batch.get("started_at"))),
        ("Finished", _when(batch.get("finished_at"))),
        ("CRS", crs),
        ("Text encoding", encoding),
        (
            "Fields",
            ", ".join(f"{k}={v}" for k, v in mapping.items()) + f" ({batch['field_mapping_how']})"
            if mapping and batch.get("field_mapping_how")
            else None,
        ),
        (
            "Records",
            f"{report.read} read, {report.loaded} loaded, {report.repaired} repaired, "
            f"{report.rejected} rejected",
        ),
        (
            "Register",
            f"{batch.get('n_added', 0)} added, {batch.get('n_changed', 0)} changed, "
            f"{batch.get('n_unchanged', 0)} unchanged, {batch.get('n_retired', 0)} retired"
            + (
                f"; {len(contents.closed)} findings of earlier batches closed"
                if contents.closed
                else ""
            ),
        ),
        (
            "Findings",
            ", ".join(f"{n} {severity}" for severity, n in report.severities.items()),
        ),
    ]
    review = batch.get("kind") == "review"  # a person's, on the register: no file, no parcel
    if review:
        rows = [
            ("Commune", commune),
            ("Reviewed", _when(batch.get("finished_at"))),
            ("Reviewed by", batch.get("reviewed_by")),
            ("Note", batch.get("note")),
        ]
    elif batch.get("kind") == "revalidation":  # read no file
        rows = [row for row in rows if row[1] is not None or row[0] in ("Commune", "Finished")]
    meta = "".join(f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>" for name, value in rows)
    files = (
        f'<dt>GeoPackage</dt><dd><a href="{html.escape(report.gpkg.name)}">'
        f"{_e(report.gpkg.name)}</a> ("
        + (
            "the review and the flags it closed"
            if review
            else "findings and rejected records, EPSG:9218"
        )
        + ")</dd>"
        f"<dt>Generated</dt><dd>{_when(datetime.now(UTC))}</dd>"
    )
    refusal = (
        f'<p class="refusal" role="alert">Refused: {_e(batch["error"])}</p>'
        if batch.get("error")
        else ""
    )
    return (
        f"<header><h1>{'Review' if review else 'Quality report'}:"
        f" batch {report.batch_id} "
        f'<span class="status {html.escape(status)}">{_e(status)}</span></h1>'
        f'{refusal}<dl class="meta">{meta}{files}</dl></header>'
    )


def _counts(report: Report) -> str:
    if not report.counts:
        return "<section><h2>Findings per rule</h2><p>No findings.</p></section>"
    order = sorted(
        report.counts,
        key=lambda code: (
            SEVERITY_ORDER.index(report.rules[code].severity)
            if code in report.rules and report.rules[code].severity in SEVERITY_ORDER
            else len(SEVERITY_ORDER),
            code,
        ),
    )
    rows = []
    for code in order:
        rule = report.rules.get(code, RuleText("?", "", ""))
        rows.append(
            f'<tr id="rule-{html.escape(code)}"><td><code>{_e(code)}</code></td>'
            f'<td class="sev sev-{html.escape(rule.severity)}">{_e(rule.severity)}</td>'
            f'<td><div lang="vi">{_e(rule.vi)}</div><div class="en">{_e(rule.en)}</div></td>'
            f'<td class="n" data-rule="{html.escape(code)}">{report.counts[code]}</td></tr>'
        )
    total = sum(report.counts.values())
    return (
        '<section><h2>Findings per rule</h2><table id="counts"><thead><tr><th>Rule</th>'
        "<th>Severity</th><th>Message (Tiếng Việt / English)</th><th>Count</th></tr></thead>"
        f'<tbody>{"".join(rows)}</tbody><tfoot><tr><td colspan="3">Total</td>'
        f'<td class="n">{total}</td></tr></tfoot></table></section>'
    )


def _closed(contents: _Contents) -> str:
    """The findings of earlier batches this one closed, when there are any."""
    if not contents.closed:
        return ""
    rows = "".join(
        f'<tr><td class="n">{f["batch_id"]}</td><td><code>{_e(f["rule_code"])}</code></td>'
        f'<td class="sev sev-{html.escape(f["severity"])}">{_e(f["severity"])}</td>'
        f"<td>{_e(_key_text(SimpleNamespace(**f)))}</td><td>{_e(f['message'])}</td></tr>"
        for f in contents.closed
    )
    why = _CLOSED_BECAUSE.get(contents.batch.get("kind"), _CLOSED_BECAUSE["delivery"])
    return (
        f'<section id="closed"><h2>Findings of earlier batches closed ({len(contents.closed)})</h2>'
        f"<p>{_e(why)}</p><table><thead><tr><th>Batch</th><th>Rule</th>"
        "<th>Severity</th><th>Parcels</th><th>Message</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


#: Why a batch of each kind closed findings of earlier batches.
_CLOSED_BECAUSE = {
    "delivery": "This delivery changed or retired their parcels and checked them again: what "
    "still holds is among its own findings.",
    "revalidation": "This revalidation ran their rules again over the commune's current "
    "parcels: what still holds is among its own findings.",
    "review": "A person compared the changed parcel with its certificate and closed its flags.",
}


#: Changed and retired parcels listed in the page; the GeoPackage's ``changes`` has them all.
CHANGES_SHOWN = 500


def _changes(contents: _Contents) -> str:
    """The parcels this batch changed or retired, when there are any."""
    changes = contents.changes
    if changes is None or changes.empty:
        return ""
    shown = changes.head(CHANGES_SHOWN)
    rows = "".join(
        f"<tr><td>{_e(row.change)}</td><td>{_e(_key_text(row))}</td>"
        f'<td class="n">{row.version_id}</td>'
        f'<td class="n">{"" if pd.isna(row.previous_version_id) else row.previous_version_id}</td>'
        "</tr>"
        for row in shown.itertuples(index=False)
    )
    counted = Counter(changes["change"])
    more = (
        f"<p>The first {CHANGES_SHOWN} are listed; the GeoPackage's <code>changes</code> layer "
        "holds them all.</p>"
        if len(changes) > CHANGES_SHOWN
        else ""
    )
    return (
        f'<section id="changes"><h2>Parcels changed ({counted["changed"]}) and retired '
        f"({counted['retired']})</h2><p>A changed parcel has a new version (its earlier one "
        "stays in the history); a retired one is no longer current: the delivery no longer has "
        "its key in a sheet it delivered anew. The GeoPackage's <code>changes</code> layer holds "
        "their shapes (a retired parcel's as it was).</p>"
        f"{more}<table><thead><tr><th>Change</th><th>Parcel</th><th>Version</th>"
        f"<th>Earlier version</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


_LEGEND = {
    "parcel": "parcels of the delivery",
    "rejected": "rejected records",
    "blocked": "blocked parcels (a block finding)",
    "warned": "parcels with a warning",
    "finding": "finding locations",
}


def _map_section(contents: _Contents, drawn: _Map) -> str:
    if not drawn.svg:
        return '<section class="mapbox"><h2>Map</h2><p>Nothing to draw.</p></section>'
    legend = "".join(
        f'<li><span class="sw {kind}"></span>{_e(label)} ({drawn.legend.get(kind, 0)})</li>'
        for kind, label in _LEGEND.items()
    )
    notes = []
    unchanged = contents.batch.get("n_unchanged") or 0
    if unchanged and contents.batch.get("covered_sheets") is None:
        notes.append(
            f"{unchanged} parcels unchanged since an earlier delivery keep their earlier "
            "version and are not drawn."
        )
    if drawn.outside:
        notes.append(
            f"{drawn.outside} rejected records or findings lie far outside the parcels and "
            "are not drawn; see the table."
        )
    notes.append(
        "Wheel to zoom, drag to pan, double-click for the whole map; click a finding to "
        "find it in the table. EPSG:9218, north up; outlines simplified to about a pixel at "
        "4x zoom (the GeoPackage and the register hold the exact geometries)."
    )
    return (
        f'<section class="mapbox"><h2>Map</h2>{drawn.svg}<ul class="legend">{legend}</ul>'
        + "".join(f'<p class="note">{_e(note)}</p>' for note in notes)
        + "</section>"
    )


_TABLE_COLUMNS = (
    ("rule", "Rule"),
    ("severity", "Severity"),
    ("parcel", "Commune/sheet/parcel"),
    ("row", "Source row"),
    ("message", "Message"),
)


def _findings_table(findings: gpd.GeoDataFrame) -> str:
    if findings.empty:
        return ""
    located = ~shapely.is_missing(findings.geometry.values.to_numpy())
    order = findings.assign(
        rank_=[SEVERITY_ORDER.index(s) if s in SEVERITY_ORDER else 9 for s in findings["severity"]],
        located_=located,
    ).sort_values(
        ["rank_", "rule_code", "commune_code", "sheet_no", "parcel_no", "source_row"],
        kind="stable",
        na_position="last",
    )
    rows = []
    for row in order.itertuples(index=False):
        severity = row.severity
        rank = SEVERITY_ORDER.index(severity) + 1 if severity in SEVERITY_ORDER else 9
        source_row = "" if pd.isna(row.source_row) else str(row.source_row)
        rows.append(
            f'<tr data-f="{int(row.finding_id)}"{" class=loc" if row.located_ else ""}>'
            f"<td>{_e(row.rule_code)}</td>"
            f'<td class="sev sev-{html.escape(severity)}" data-v="{rank}">{_e(severity)}</td>'
            f"<td>{html.escape(_key_text(row))}</td>"
            f'<td class="n">{source_row}</td><td>{_e(row.message)}</td></tr>'
        )
    heads = "".join(
        f'<th data-key="{key}" aria-sort="none"><button type="button">{label}</button></th>'
        for key, label in _TABLE_COLUMNS
    )
    return (
        f'<section class="tablebox"><h2>Findings ({len(findings)})</h2>'
        '<p class="note">Click a header to sort; click a row to show it on the map.</p>'
        f'<table id="findings"><thead><tr>{heads}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _page(contents: _Contents, report: Report) -> str:
    review = contents.batch.get("kind") == "review"  # a person's: no delivery, no map
    title = f"Batch {report.batch_id}: " + ("review" if review else "quality report")
    if report.source_path:
        title += f" ({Path(report.source_path).name})"
    body = [_header(contents, report)]
    body += [_closed(contents)] if review else [_counts(report), _closed(contents)]
    body.append(_changes(contents))
    if report.status != "failed" and not review:
        drawn = _map(contents)
        body.append(
            f'<div class="grid">{_map_section(contents, drawn)}'
            f"{_findings_table(contents.findings)}</div>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_JS}</script>\n</body>\n</html>\n"
    )
