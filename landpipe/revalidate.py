"""Re-run the rule catalogue over the current parcels of a commune, without reloading them.

A rule parameter was tuned, the reference data changed, or a parcel was corrected in the
database: a revalidation checks the register as it stands. Per commune, in one transaction
under the commune's advisory lock (the lock a load of that commune takes, so the two wait for
each other), it

1. reads the commune's current parcels (with the map scale their delivery gave, for the area
   tolerance);
2. runs :func:`landpipe.validate.validate` over them (geometry, keys, extent, land use, area,
   topology within the commune) and the overlap and gap checks against the current parcels of
   the other communes around it, as a load does;
3. records itself as a batch of kind ``revalidation`` (status ``revalidated``);
4. closes every earlier finding of the commune of a rule it re-ran (``closed_by_batch_id``);
5. writes its own findings.

Findings it cannot re-derive from the register stay in force: those made while reading a
delivery (text encoding, drawing labels), the record of a geometry repair, and
``CERT_CHANGED``, which waits for a person's review (:data:`KEPT_RULES`). A finding belongs to
the commune of its first parcel: an overlap between parcels of two communes is closed and found
again by the revalidation of the first one's commune (each commune's revalidation reports it
from its own side).

No Prefect here: ``flows/revalidate.py`` runs :func:`revalidate_commune` once per commune.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from psycopg.types.json import Jsonb
from sqlalchemy.engine import Engine

from landpipe import schemas
from landpipe.db import lock_communes
from landpipe.load import _against_register, _copy_findings, lock_area
from landpipe.schemas import parcel as canonical
from landpipe.schemas.findings import Finding
from landpipe.sources.fields import series_to_map_scale
from landpipe.validate import Validation, validate

#: Rules a revalidation re-runs over the register: it closes the earlier findings of these.
RECHECKED_RULES = frozenset(
    {
        "GEOM_EMPTY",
        "GEOM_NOT_POLYGON",
        "GEOM_INVALID",
        "GEOM_OUT_OF_EXTENT",
        "TOPO_OVERLAP",
        "TOPO_GAP",
        "TOPO_SLIVER",
        "TOPO_EDGE_MISMATCH",
        "ATTR_MISSING",
        "ATTR_KEY_DUPLICATE",
        "ATTR_COMMUNE_UNKNOWN",
        "ATTR_LAND_USE_UNKNOWN",
        "ATTR_LAND_USE_LEGACY",
        "ATTR_AREA_MISMATCH",
    }
)
#: Rules whose findings a revalidation leaves in force: it cannot re-derive them from the
#: register (they come from reading a delivery, record a repair made then, or wait for review).
KEPT_RULES = frozenset(
    {
        "GEOM_REPAIRED",
        "CERT_CHANGED",
        "ATTR_ENCODING",
        "ATTR_UNREADABLE",
        "LINE_UNLABELLED",
        "LINE_LABEL_OUTSIDE",
        "LINE_LABEL_CONFLICT",
        "LINE_DANGLING",
    }
)

_CURRENT_PARCELS = """
SELECT v.id, v.sheet_no, v.parcel_no, v.land_use_codes, v.declared_area_m2::float8,
       v.legal_area_m2::float8, v.owner_name, v.address,
       v.attributes ->> (b.field_mapping ->> 'map_scale'), ST_AsBinary(v.geom),
       (b.options ->> 'scale')::integer
FROM land.parcel_version v
JOIN land.batch b ON b.id = v.batch_id
WHERE v.valid_to IS NULL AND v.commune_code = %s
ORDER BY v.sheet_no, v.parcel_no
"""

_CLOSE_SUPERSEDED = """
UPDATE land.finding SET closed_by_batch_id = %(batch)s
WHERE commune_code = %(commune)s AND closed_by_batch_id IS NULL AND batch_id < %(batch)s
  AND rule_code = ANY(%(rules)s)
"""

# A finding of a revalidation names the parcel by its key: the delivered record number that
# validation puts beside it means nothing here.
_RECORD_NAMES = (
    (re.compile(r"\brecord \d+ \(parcel ([^)\s]+)\)"), r"parcel \1"),
    (re.compile(r"\bparcel ([^\s]+) \(record \d+\)"), r"parcel \1"),
)


@dataclass
class RevalidationResult:
    """What the revalidation of one commune did."""

    commune_code: str
    status: str  # "revalidated", or "empty" (no current parcel: nothing recorded)
    batch: int | None = None
    parcels: int = 0
    closed: int = 0
    blocked: int = 0
    ready: int = 0
    issues: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "commune_code": self.commune_code,
            "status": self.status,
            "batch": self.batch,
            "parcels": self.parcels,
            "findings": dict(self.issues),
            "closed": self.closed,
            "blocked": self.blocked,
            "ready": self.ready,
        }


def communes_in_register(engine: Engine) -> list[str]:
    """Communes with current parcels, the largest first (so that a pool finishes evenly)."""
    raw = engine.raw_connection()
    try:
        rows = raw.driver_connection.execute(
            "SELECT commune_code FROM land.parcel_version WHERE valid_to IS NULL"
            " GROUP BY commune_code ORDER BY count(*) DESC, commune_code"
        ).fetchall()
    finally:
        raw.close()
    return [row[0] for row in rows]


def current_parcels(conn, commune_code: str) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """The commune's current parcels as canonical parcels, and their version ids.

    ``source_row`` numbers the parcels 0..n-1 (validation needs a row identity); ``map_scale``
    is read from the delivered field that the parcel's delivery mapped to it, else the scale
    that load was given (``--scale``), as the load read it.
    """
    rows = conn.execute(_CURRENT_PARCELS, [commune_code]).fetchall()
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(11)]
    version_ids = np.asarray(columns[0], dtype=np.int64)
    n = len(rows)
    frame = gpd.GeoDataFrame(
        {
            canonical.SOURCE_ROW: np.arange(n, dtype=np.int64),
            "commune_code": np.full(n, commune_code, dtype=object),
            "sheet_no": pd.array(columns[1], dtype="Int64"),
            "parcel_no": pd.array(columns[2], dtype="Int64"),
            "land_use_codes": [list(codes or []) for codes in columns[3]],
            "declared_area_m2": np.asarray(columns[4], dtype="float64"),
            "legal_area_m2": np.asarray(columns[5], dtype="float64"),
            "owner_name": pd.Series(columns[6], dtype=object),
            "address": pd.Series(columns[7], dtype=object),
            "map_scale": series_to_map_scale(pd.Series(columns[8], dtype=object)).fillna(
                pd.Series(pd.array(columns[10], dtype="Int64"))
            ),
        },
        geometry=shapely.from_wkb([bytes(g) for g in columns[9]]),
        crs=f"EPSG:{canonical.STORAGE_EPSG}",
    )
    return frame, version_ids


def check(conn, parcels: gpd.GeoDataFrame, version_ids: np.ndarray) -> Validation:
    """The rule catalogue over ``parcels`` and against the other communes' parcels around.

    The findings name parcels by key and carry the parcel version in ``detail`` instead of a
    source row.
    """
    validation = validate(parcels)
    sheets = sorted(
        {(str(c), int(s)) for c, s in parcels[["commune_code", "sheet_no"]].itertuples(index=False)}
    )
    validation.findings.extend(_against_register(conn, validation.parcels, sheets))
    for finding in validation.findings:
        _as_register_finding(finding, version_ids)
    return validation


def _as_register_finding(finding: Finding, version_ids: np.ndarray) -> None:
    if finding.source_row is not None:
        finding.detail = {
            **finding.detail,
            "parcel_version_id": int(version_ids[finding.source_row]),
        }
        finding.source_row = None
    for pattern, replacement in _RECORD_NAMES:
        finding.message = pattern.sub(replacement, finding.message)


def revalidate_commune(
    engine: Engine, commune_code: str, *, started_at: datetime | None = None
) -> RevalidationResult:
    """Revalidate the current parcels of one commune, in one transaction (see the module)."""
    started_at = started_at or datetime.now(UTC)
    result = RevalidationResult(commune_code=commune_code, status="revalidated")
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.transaction():
            # Per-commune index lookups that the planner overestimates: JIT costs more here.
            conn.execute("SET LOCAL jit = off")
            lock_communes(conn, [commune_code])  # the lock a load of the commune takes
            parcels, version_ids = current_parcels(conn, commune_code)
            if len(parcels) == 0:
                result.status = "empty"
                return result
            # Loads of neighbouring communes wait meanwhile, and this waits for theirs: the
            # parcels around are checked as committed, and the findings this closes are not
            # closed by a load at the same time.
            lock_area(conn, parcels.geometry.values, shared=True)
            validation = check(conn, parcels, version_ids)
            result.parcels = len(parcels)
            result.issues = validation.counts()
            result.batch = _insert_batch(conn, commune_code, len(parcels), started_at)
            result.closed = conn.execute(
                _CLOSE_SUPERSEDED,
                {"batch": result.batch, "commune": commune_code, "rules": sorted(RECHECKED_RULES)},
            ).rowcount
            _copy_findings(conn, result.batch, validation)
            conn.execute(
                "UPDATE land.batch SET n_closed = %s, finished_at = clock_timestamp()"
                " WHERE id = %s",
                [result.closed, result.batch],
            )
            result.blocked, result.ready = conn.execute(
                "SELECT (SELECT count(*) FROM land.parcel_detail"
                "        WHERE commune_code = %(c)s AND blocked),"
                "       (SELECT count(*) FROM land.parcel_ready WHERE commune_code = %(c)s)",
                {"c": commune_code},
            ).fetchone()
        return result
    finally:
        raw.close()


def _insert_batch(conn, commune_code: str, n_parcels: int, started_at: datetime) -> int:
    rules = schemas.rules()
    options = {
        "rules": sorted(RECHECKED_RULES),
        "params": {code: rules[code].params for code in sorted(RECHECKED_RULES) if code in rules},
    }
    row = conn.execute(
        "INSERT INTO land.batch (kind, status, commune_code, started_at, n_read, options)"
        " VALUES ('revalidation', 'revalidated', %s, %s, %s, %s) RETURNING id",
        [commune_code, started_at, n_parcels, Jsonb(options)],
    ).fetchone()
    return int(row[0])
