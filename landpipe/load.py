"""Write a validated delivery into the land register, in one transaction.

The batch row, the parcel versions (merged by ``landpipe/register.py``), the findings (those
against the register's neighbouring parcels included) and the rejected records are written
together or not at all. Loads of one commune are serialised by an advisory lock per commune,
and loads whose parcels come near each other by locks on squares of the plane
(:func:`lock_area`); a delivery whose content was already loaded changes nothing.

A re-delivery is cheap when little changed: :func:`look_at_register` tells which delivered
parcels the register already holds as they are, validation skips those, and the load writes
only what changed. Should the register have changed between that look and the load (another
load of the commune in between), the load validates the delivery again, under its lock.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from psycopg.types.json import Jsonb
from sqlalchemy.engine import Engine

from landpipe import register, topology
from landpipe.db import lock_communes
from landpipe.errors import SupersededError
from landpipe.memory import collector_paused
from landpipe.schemas import parcel as canonical
from landpipe.schemas.findings import Finding
from landpipe.sources import Delivery
from landpipe.sources.fields import attribute_records
from landpipe.validate import Validation, validate


@dataclass
class LoadResult:
    """What a load did, in the shape of ``landpipe load --json``."""

    batch: int | None
    status: str
    read: int = 0
    loaded: int = 0
    repaired: int = 0
    rejected: int = 0
    issues: dict[str, int] = field(default_factory=dict)
    source: str | None = None
    commune_code: str | None = None
    crs: str | None = None
    error: str | None = None
    error_kind: str | None = None
    reading: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, int] = field(
        default_factory=lambda: {"added": 0, "changed": 0, "unchanged": 0, "retired": 0}
    )
    closed: int = 0  # findings of earlier batches this one superseded

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` contract (plus where the delivery came from)."""
        body: dict[str, Any] = {
            "batch": self.batch,
            "status": self.status,
            "parcels": {
                "read": self.read,
                "loaded": self.loaded,
                "repaired": self.repaired,
                "rejected": self.rejected,
            },
            "issues": dict(self.issues),
            "changes": dict(self.changes),
            "closed": self.closed,
            "source": self.source,
            "commune_code": self.commune_code,
            "crs": self.crs,
        }
        if self.reading:
            body["reading"] = dict(self.reading)
        if self.error:
            body["error"] = self.error
            body["error_kind"] = self.error_kind
        return body


def reading_summary(delivery: Delivery) -> dict[str, Any]:
    """How the delivery was read: CRS, text encoding, field mapping, and how each was known."""
    return {
        "format": delivery.source.driver,
        "layer": delivery.layer,
        "linework": delivery.linework,
        "crs": delivery.crs.label,
        "crs_how": delivery.crs.how,
        "encoding": delivery.text.encoding,
        "encoding_how": delivery.text.how,
        "encoding_confidence": delivery.text.confidence,
        "encoding_declared": delivery.text.declared,
        "field_mapping": dict(delivery.field_mapping),
        "field_mapping_how": delivery.mapping_how,
    }


#: Side, in metres, of the squares of the plane whose locks a load takes around its parcels.
AREA_LOCK_CELL_M = 5_000.0


def area_cells(geometry: np.ndarray, reach: float) -> list[tuple[int, int]]:
    """The squares of :data:`AREA_LOCK_CELL_M` (column, row in EPSG:9218) that the parcels
    reach into, each extended by ``reach`` metres; sorted, so that loads take them in one
    order."""
    bounds = shapely.bounds(np.asarray(geometry, dtype=object))
    bounds = bounds[~np.isnan(bounds).any(axis=1)]
    if not len(bounds):
        return []
    cells = np.floor((bounds + np.array([-reach, -reach, reach, reach])) / AREA_LOCK_CELL_M).astype(
        np.int64
    )
    x0, y0, x1, y1 = cells.T
    small = (x1 - x0 <= 1) & (y1 - y0 <= 1)  # a parcel reaches into at most 4 squares
    across = small & ((x1 != x0) | (y1 != y0))  # into more than one: few
    packed = pd.unique(
        np.concatenate(
            [(x0[small] << 32) + (y0[small] + (1 << 31))]
            + [
                (xs[across] << 32) + (ys[across] + (1 << 31))
                for xs, ys in ((x0, y1), (x1, y0), (x1, y1))
            ]
        )
    )
    found = {(int(k >> 32), int((k & 0xFFFFFFFF) - (1 << 31))) for k in packed}
    for i0, j0, i1, j1 in zip(x0[~small], y0[~small], x1[~small], y1[~small], strict=True):
        found.update((i, j) for i in range(i0, i1 + 1) for j in range(j0, j1 + 1))
    return sorted(found)


#: Squares one transaction locks at most; beyond, it locks the whole plane. Each lock takes a
#: slot of the server's lock table (max_locks_per_transaction x max_connections, 6,400 by
#: default, shared by all sessions); Bình Thuận's first load takes about 170 squares.
AREA_LOCK_MAX_CELLS = 256
#: The lock of the whole plane, in the two-key advisory-lock space where a square's lock is
#: (column, row): no square lies at these. Commune locks use the one-key space.
_WHOLE_PLANE = (-(2**31), -(2**31))


def lock_area(conn, geometry: np.ndarray, *, shared: bool = False) -> None:
    """Wait for, then hold until the transaction ends, the locks of the squares of the plane
    around ``geometry`` (:func:`area_cells`, reaching as far as the topology looks for
    neighbours). Take them after the commune locks.

    Two loads of neighbouring communes hold different commune locks, and each checks its
    parcels against the register as committed: side by side, neither would see the other's
    parcels, and an overlap across their border would be reported by neither. Loads whose
    parcels come near each other take a common square, so the second checks against the
    first, committed; loads of distant communes still run side by side. A revalidation takes
    its squares ``shared``: it waits for loads around its commune, not for other
    revalidations. Every holder takes the whole plane first, shared, unless it has more than
    :data:`AREA_LOCK_MAX_CELLS` squares: then it takes the whole plane alone instead.
    """
    reach = topology.catalogue_params()["gap_max_width_m"] + 1.0
    cells = area_cells(geometry, reach)
    mode = "_shared" if shared else ""
    if len(cells) > AREA_LOCK_MAX_CELLS:
        conn.execute(f"SELECT pg_advisory_xact_lock{mode}(%s::int4, %s::int4)", _WHOLE_PLANE)
        return
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s::int4, %s::int4)", _WHOLE_PLANE)
    with conn.cursor() as cursor:
        cursor.executemany(f"SELECT pg_advisory_xact_lock{mode}(%s::int4, %s::int4)", cells)


#: Whether the file of batch ``b`` was loaded since, read otherwise (another layer, encoding,
#: mapping, CRS or option), into parcels that changed, and what that load made is still the
#: latest delivered over its sheets: then ``b`` no longer says what the register holds of
#: the file, and loading it again as ``b`` read it (to put a wrong option right) is compared
#: with the register. A newer delivery over those sheets since (another file, or the file
#: read again) is not undone by loading an old file again: that stays a no-op.
_READ_OTHERWISE_SINCE = """EXISTS (
    SELECT FROM land.batch later
    WHERE later.source_sha256 = b.source_sha256 AND later.id > b.id
      AND later.kind = 'delivery' AND later.status = 'loaded'
      AND (later.source_layer, later.reading_context)
          IS DISTINCT FROM (b.source_layer, b.reading_context)
      AND coalesce(later.n_added, 0) + coalesce(later.n_changed, 0)
          + coalesce(later.n_retired, 0) > 0
      AND NOT EXISTS (
          SELECT FROM land.batch newer
          WHERE newer.id > later.id AND newer.kind = 'delivery' AND newer.status = 'loaded'
            AND coalesce(newer.n_added, 0) + coalesce(newer.n_changed, 0)
                + coalesce(newer.n_retired, 0) > 0
            AND (newer.covered_sheets IS NULL OR later.covered_sheets IS NULL
                 OR EXISTS (SELECT FROM jsonb_array_elements(newer.covered_sheets) s
                            WHERE later.covered_sheets @> jsonb_build_array(s)))))"""


#: The deliveries of other files loaded since the file's latest load (``%(sha)s``) that
#: changed parcels of the sheets it covers (``%(sheets)s``, jsonb; a batch whose sheets are
#: unknown counts as covering them).
_NEWER_SINCE = """
SELECT b.id FROM land.batch b
WHERE b.id > (SELECT max(id) FROM land.batch
              WHERE source_sha256 = %(sha)s AND kind = 'delivery' AND status = 'loaded')
  AND b.kind = 'delivery' AND b.status = 'loaded' AND b.source_sha256 <> %(sha)s
  AND coalesce(b.n_added, 0) + coalesce(b.n_changed, 0) + coalesce(b.n_retired, 0) > 0
  AND (b.covered_sheets IS NULL
       OR EXISTS (SELECT FROM jsonb_array_elements(b.covered_sheets) s
                  WHERE %(sheets)s::jsonb @> jsonb_build_array(s)))
ORDER BY b.id
"""


def _refuse_if_superseded(conn, delivery: Delivery, sheets: list[tuple[str, int]]) -> None:
    """Refuse a file loaded before, read otherwise now, when other deliveries changed its
    sheets since its latest load: loaded again, it would undo them (the parcels they changed
    back to the file's). Read as it was, it is a no-op (see :func:`load`); to undo a newer
    delivery on purpose, ``force``."""
    newer = [
        row[0]
        for row in conn.execute(
            _NEWER_SINCE,
            {"sha": delivery.source.sha256, "sheets": Jsonb([list(pair) for pair in sheets])},
        ).fetchall()
    ]
    if newer:
        listed = ", ".join(str(batch) for batch in newer[:5]) + (", ..." if len(newer) > 5 else "")
        raise SupersededError(
            f"{delivery.source.path}: this file was loaded before, and since then "
            f"{'batch' if len(newer) == 1 else 'batches'} {listed} delivered its sheets anew; "
            "loaded again, read otherwise, it would undo "
            f"{'that delivery' if len(newer) == 1 else 'those deliveries'} (load it with "
            "--force to do so anyway)"
        )


def _commune_codes(delivery: Delivery) -> list[str]:
    codes = pd.unique(delivery.parcels["commune_code"].to_numpy(dtype=object))
    return [str(code) for code in codes if not pd.isna(code)]


def _ewkb(geometry: shapely.Geometry | None) -> str | None:
    """Hex EWKB with the storage SRID, as PostGIS reads it in a text COPY."""
    if geometry is None or geometry.is_empty:
        return None
    return shapely.to_wkb(
        shapely.set_srid(geometry, canonical.STORAGE_EPSG), hex=True, include_srid=True
    )


def _json_text(value: Any) -> str:
    """``value`` as JSON, a number that is not finite as null (PostgreSQL's JSON has no NaN or
    Infinity)."""
    try:
        return json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _optional(value: Any) -> Any:
    return None if value is None or (not isinstance(value, list) and pd.isna(value)) else value


@collector_paused()
def look_at_register(engine: Engine, delivery: Delivery) -> tuple[register.Look, np.ndarray]:
    """What the register holds of the delivery's sheets, and which delivered parcels it holds
    as current with the same content.

    The mask goes to :func:`landpipe.validate.validate` as ``unchanged``, the look to
    :func:`load`. It is a look without locks: :func:`load` uses it only if no batch touching
    the delivery's communes committed since, and reads the register again otherwise. The
    delivery's content hashes are made while the database gathers the current ones.
    """
    sheets = register.covered_sheets(delivery)
    none = np.zeros(len(delivery.parcels), dtype=bool)
    with engine.connect() as connection:
        known = connection.exec_driver_sql(
            register.ANY_CURRENT, register.sheet_arrays(sheets)
        ).scalar()
    if not known:  # a first delivery of these sheets: nothing to compare, nothing to hash
        return _look(engine, sheets), none
    with ThreadPoolExecutor(max_workers=1) as pool:
        looked = pool.submit(_look, engine, sheets)
        records = delivery.record_hashes
        seen = looked.result()
    if not len(seen.current):
        return seen, none
    raw = engine.raw_connection()
    try:
        seen.delivered = register.compare(
            raw.driver_connection, seen.current, delivery, delivery.parcels, records
        )
    finally:
        raw.close()
    return seen, seen.delivered.same


def _look(engine: Engine, sheets: list[tuple[str, int]]) -> register.Look:
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.transaction():
            return register.look(conn, sheets)
    finally:
        raw.close()


def _summary(delivery: Delivery, validation: Validation) -> LoadResult:
    """The result of loading ``validation``, all but the findings (``issues``): those of the
    topology may still be being made, while the parcels are written."""
    result = LoadResult(
        batch=None,
        status="loaded",
        read=len(delivery.parcels),
        loaded=len(validation.parcels),
        repaired=int(
            np.isin(
                validation.parcels[canonical.SOURCE_ROW].to_numpy(),
                np.fromiter(validation.repaired, dtype=np.int64, count=len(validation.repaired)),
            ).sum()
        ),
        rejected=len(validation.rejected),
        source=str(delivery.source.path),
        commune_code=delivery.commune_code,
        crs=delivery.crs.label,
        reading=reading_summary(delivery),
    )
    if result.loaded == 0:
        result.status = "rejected"
    return result


@collector_paused()
def load(
    engine: Engine,
    delivery: Delivery,
    validation: Validation,
    *,
    started_at: datetime,
    look: register.Look | None = None,
    options: dict[str, Any] | None = None,
    force: bool = False,
) -> LoadResult:
    """Write ``delivery`` and its ``validation`` as one batch; a no-op when already loaded.

    ``options`` are those the delivery was read with (``landpipe load``'s), kept in the
    batch. A file loaded before and read otherwise now is refused
    (:class:`~landpipe.errors.SupersededError`) when other deliveries changed its sheets
    since, unless ``force``. ``look``, from :func:`look_at_register`, spares reading the
    register's current versions again when nothing changed them since. The first load into an
    empty register builds the register's indexes after copying (see
    :mod:`landpipe.register`); it holds ``land.parcel_version`` alone until it commits.
    """
    initial = len(validation.parcels) > 0 and register.register_is_empty(engine)
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.transaction():
            # Its writes are a load's, not edits (land.register_edit).
            conn.execute("SET LOCAL landpipe.loading = 'on'")
            register.no_jit(conn)
            lock_communes(conn, _commune_codes(delivery))
            # The same file read the same way: read otherwise (another encoding, mapping,
            # CRS or option), it is compared with the register as any delivery is. So it is
            # when it was loaded since read otherwise: loading it again as it was read first
            # puts right what the other reading made of it.
            earlier = conn.execute(
                "SELECT id FROM land.batch b WHERE source_sha256 = %s AND status = 'loaded'"
                " AND source_layer IS NOT DISTINCT FROM %s AND reading_context = %s"
                f" AND NOT {_READ_OTHERWISE_SINCE} ORDER BY id DESC LIMIT 1",
                [delivery.source.sha256, delivery.layer, delivery.reading_context],
            ).fetchone()
            if earlier:
                result = _summary(delivery, validation)
                result.issues = validation.counts()
                return _unchanged(result, earlier[0])
            sheets = register.covered_sheets(delivery)
            if not force:
                _refuse_if_superseded(conn, delivery, sheets)
            dropped = register.take_empty_register(conn) if initial else None
            if dropped is not None:  # the register is empty
                current = register.Registered.none(sheets)
            else:
                current = look and register.still_current(conn, look, sheets)
                if current is None:
                    current = register.registered(conn, sheets)
            # The look compared the delivery with these very versions: its comparison holds.
            delivered = look.delivered if look is not None and current is look.current else None
            plan = register.plan(conn, current, delivery, validation, delivered=delivered)
            if validation.unchanged is not None and np.any(validation.unchanged & ~plan.same):
                # The register changed since validation looked: validate against it as it is.
                unchanged = register.compare(
                    conn, current, delivery, delivery.parcels, delivery.record_hashes
                ).same
                validation = validate(delivery.parcels, delivery.findings, unchanged=unchanged)
                plan = register.plan(conn, current, delivery, validation)
            # The squares around what this load writes, and around the versions it closes (an
            # unchanged parcel is in the register already, for every load around it to see).
            # A load into the empty register holds the whole table alone: no other load or
            # revalidation reads it before this one commits, so it needs no square.
            if dropped is None:
                closed = np.concatenate([plan.previous[plan.changed], plan.retired])
                written = validation.parcels.geometry.values[~plan.same]
                lock_area(
                    conn,
                    np.concatenate(
                        [np.asarray(written, dtype=object), register.envelopes(conn, closed)]
                    ),
                )
            result = _summary(delivery, validation)
            result.batch = _insert_batch(conn, delivery, result, started_at, options or {}, sheets)
            changes = register.merge(
                conn, delivery, validation, plan, result.batch, freeze=dropped is not None
            )
            if dropped is not None:
                register.rebuild(conn, dropped)
            # In a register that was empty, the delivery has no neighbour outside itself.
            register_findings = (
                []
                if dropped is not None
                else _against_register(
                    conn,
                    validation.parcels,
                    sheets,
                    changed=~plan.same,
                    valid=True,
                    untouched=plan.untouched,
                )
            )
            # The caller's validation stays as it was (a retried load adds them once).
            validation = Validation(
                validation.parcels,
                validation.rejected,
                [*_of_this_batch(validation, plan), *register_findings],
                validation.repaired,
                validation.unchanged,
            )
            closed = (
                _close_superseded(conn, result.batch, plan.previous[plan.changed], plan.retired)
                if dropped is None and (changes.added or changes.changed or changes.retired)
                else 0  # nothing replaced, or no earlier parcel at all
            )
            if dropped is None:
                closed += _close_rejected_again(conn, result.batch, delivery, sheets)
            result.issues = validation.counts()
            result.changes = changes.as_json()
            result.closed = closed
            if changes.certificates_flagged:
                result.issues["CERT_CHANGED"] = changes.certificates_flagged
                result.issues = dict(sorted(result.issues.items()))
            conn.execute(
                "UPDATE land.batch SET n_added = %s, n_changed = %s, n_unchanged = %s,"
                " n_retired = %s, n_closed = %s, finished_at = clock_timestamp() WHERE id = %s",
                [
                    changes.added,
                    changes.changed,
                    changes.unchanged,
                    changes.retired,
                    closed,
                    result.batch,
                ],
            )
            _copy_findings(conn, result.batch, validation)
            _copy_rejected(conn, result.batch, delivery, validation)
        return result
    finally:
        raw.close()


def _of_this_batch(validation: Validation, plan: register.Plan) -> list[Finding]:
    """The findings of ``validation`` this batch makes: none on parcels the register holds
    unchanged (validated again because validation repaired their geometry, or without a look
    at the register), whose findings stay those of the batch that loaded them; so a topology
    finding only when a parcel it names is one the batch adds or changes."""
    findings = list(validation.findings)
    if not findings or not plan.same.any():
        return findings
    parcels = validation.parcels
    topological = np.array([f.rule_code in topology.RULES for f in findings])
    source = np.array([-1 if f.source_row is None else f.source_row for f in findings])
    mine = topological | ~np.isin(source, parcels[canonical.SOURCE_ROW].to_numpy()[plan.same])
    named = {i: _named_keys(findings[i]) for i in np.flatnonzero(topological)}
    if named:
        # The keys of unchanged parcels among those the topology findings name (a few).
        numbers = [number for keys in named.values() for *_, number in keys]
        same = parcels.loc[plan.same, ["commune_code", "sheet_no", "parcel_no"]]
        same = same[same["parcel_no"].isin(numbers)]
        kept = {(str(c), int(s), int(p)) for c, s, p in same.itertuples(index=False)}
        for i, keys in named.items():
            mine[i] = not all(key in kept for key in keys)
    return [f for f, made in zip(findings, mine, strict=True) if made]


def _named_keys(finding: Finding) -> list[tuple[str | None, int | None, int | None]]:
    """The keys of the parcel a finding is on and, for a pair, of the other one."""
    keys = [(finding.commune_code, finding.sheet_no, finding.parcel_no)]
    if finding.other_parcel_no is not None:
        keys.append((finding.other_commune_code, finding.other_sheet_no, finding.other_parcel_no))
    return keys


#: Open findings of earlier batches that this batch superseded: every finding on a parcel
#: whose version it replaced (changed or retired): the new version was checked afresh, and a
#: retired parcel is gone; but a gap next to a retired parcel stays (the hole is still there),
#: and a certificate's flag stays until reviewed. And the topology findings that name such a
#: parcel as the other one of a pair, and gaps that one of its new or changed parcels lines
#: (a gap finding names only two of the parcels lining it), which it made afresh where they
#: remain.
_SUPERSEDED = """
WITH replaced AS (
    SELECT v.commune_code, v.sheet_no, v.parcel_no, v.id = ANY(%(retired)s) AS retired
    FROM land.parcel_version v WHERE v.id = ANY(%(versions)s)
), superseded AS (
    SELECT f.id FROM replaced r
    JOIN land.finding f ON (f.commune_code, f.sheet_no, f.parcel_no)
                         = (r.commune_code, r.sheet_no, r.parcel_no)
    WHERE f.closed_by_batch_id IS NULL AND f.rule_code <> %(certificate)s
      AND NOT (r.retired AND f.rule_code = %(gap)s)
    UNION
    SELECT f.id FROM replaced r
    JOIN land.finding f ON (f.other_commune_code, f.other_sheet_no, f.other_parcel_no)
                         = (r.commune_code, r.sheet_no, r.parcel_no)
    WHERE f.closed_by_batch_id IS NULL AND f.other_parcel_no IS NOT NULL
      AND f.rule_code = ANY(%(rules)s) AND NOT (r.retired AND f.rule_code = %(gap)s)
    UNION
    SELECT f.id FROM land.parcel_version n
    JOIN land.finding f ON f.rule_code = %(gap)s AND ST_DWithin(f.location, n.geom, %(lining)s)
    WHERE n.batch_id = %(batch)s AND f.closed_by_batch_id IS NULL
)
UPDATE land.finding f SET closed_by_batch_id = %(batch)s
FROM superseded s
WHERE f.id = s.id AND f.batch_id < %(batch)s
"""


def _close_superseded(conn, batch_id: int, changed: np.ndarray, retired: np.ndarray) -> int:
    """Close the open findings of earlier batches that this batch superseded (see
    :data:`_SUPERSEDED`); returns how many.

    The load validated every added and changed parcel afresh, its topology against the
    delivery and the register around it included, and made every overlap, gap and sliver
    that involves one, and the edge mismatches of those parcels. So the findings of the
    versions it replaced no longer hold, and an overlap that a re-delivery fixed no longer
    blocks the unchanged neighbour it named, without waiting for a revalidation. The findings
    of a retired parcel concern a parcel that is gone. An unchanged neighbour's own edge
    mismatch (a warning) stays until a revalidation.
    """
    return conn.execute(
        _SUPERSEDED,
        {
            "versions": np.concatenate([changed, retired]).tolist(),
            "retired": retired.tolist(),
            "batch": batch_id,
            "gap": topology.GAP,
            "certificate": "CERT_CHANGED",
            "lining": topology.LINING_M,
            "rules": list(topology.RULES),
        },
    ).rowcount


#: Open findings of earlier batches on records they rejected that had a whole key, in some
#: sheets: (finding id, key).
_ON_REJECTED_RECORDS = """
SELECT f.id, f.commune_code, f.sheet_no, f.parcel_no
FROM unnest(%s::text[], %s::integer[]) AS s (commune, sheet)
JOIN land.finding f ON f.commune_code = s.commune AND f.sheet_no = s.sheet
JOIN land.rejected_record r ON r.batch_id = f.batch_id AND r.source_row = f.source_row
WHERE f.closed_by_batch_id IS NULL AND f.batch_id < %s AND f.parcel_no IS NOT NULL
"""


def _close_rejected_again(
    conn, batch_id: int, delivery: Delivery, sheets: list[tuple[str, int]]
) -> int:
    """Close the open findings of earlier batches on records they rejected whose key this
    batch delivers again, loaded or rejected once more: those records are no longer what was
    delivered for the key (a rejected one again has findings of this batch). Returns how
    many. Without this, a broken record delivered five times left five findings in force."""
    if not sheets:
        return 0
    found = conn.execute(_ON_REJECTED_RECORDS, [*register.sheet_arrays(sheets), batch_id])
    found = found.fetchall()
    if not found:
        return 0
    keys = delivery.parcels[list(canonical.KEY)]
    keys = keys[keys["parcel_no"].isin({number for *_, number in found})].dropna()
    delivered = {(str(c), int(s), int(p)) for c, s, p in keys.itertuples(index=False)}
    ids = [i for i, c, s, p in found if (c, s, p) in delivered]
    if not ids:
        return 0
    return conn.execute(
        "UPDATE land.finding SET closed_by_batch_id = %s WHERE id = ANY(%s)", [batch_id, ids]
    ).rowcount


def _against_register(
    conn,
    parcels: gpd.GeoDataFrame,
    sheets: list[tuple[str, int]],
    *,
    changed: np.ndarray | None = None,
    valid: bool = False,
    untouched: np.ndarray | None = None,
) -> list[Finding]:
    """Overlaps and gaps between the delivery and the current parcels around it.

    The current parcels of the sheets the delivery covers are replaced by it (kept, changed
    or retired), so they are no neighbours, but for those it leaves ``untouched`` (ids: their
    record was rejected, or their sheet had no accepted record). With ``changed`` (a boolean
    mask over ``parcels``), only the findings that involve a changed parcel: an unchanged one was
    checked against its neighbours when it was loaded, and each neighbour loaded since was
    checked against it. ``valid``: the geometries of ``parcels`` are known to be valid.
    """
    if len(parcels) == 0 or (changed is not None and not np.any(changed)):
        return []
    params = topology.catalogue_params()
    gap_width = params["gap_max_width_m"]
    xmin, ymin, xmax, ymax = parcels.total_bounds
    kept = [] if untouched is None else untouched.tolist()
    rows = conn.execute(
        # NOT IN a subquery is a hashed lookup whatever the statistics say.
        "SELECT p.commune_code, p.sheet_no, p.parcel_no, ST_AsBinary(p.geom) FROM land.parcel p"
        " WHERE ((p.commune_code, p.sheet_no)"
        "         NOT IN (SELECT * FROM unnest(%s::text[], %s::integer[]))"
        + (" OR p.id = ANY(%s::bigint[]))" if kept else " OR false)")
        + "   AND p.geom && ST_Expand(ST_MakeEnvelope(%s, %s, %s, %s, 9218), %s)",
        [
            [commune for commune, _ in sheets],
            [sheet for _, sheet in sheets],
            *([kept] if kept else []),
            float(xmin),
            float(ymin),
            float(xmax),
            float(ymax),
            gap_width,
        ],
    ).fetchall()
    if not rows:
        return []
    neighbours = gpd.GeoDataFrame(
        {
            "commune_code": [r[0] for r in rows],
            "sheet_no": pd.array([r[1] for r in rows], dtype="Int64"),
            "parcel_no": pd.array([r[2] for r in rows], dtype="Int64"),
        },
        geometry=shapely.from_wkb([bytes(r[3]) for r in rows]),
        crs=parcels.crs,
    )
    return topology.against_register(
        parcels,
        neighbours,
        overlap_min_area_m2=params["overlap_min_area_m2"],
        gap_max_width_m=gap_width,
        gap_min_area_m2=params["gap_min_area_m2"],
        focus=changed,
        valid=valid,
    )


def _unchanged(result: LoadResult, batch_id: int) -> LoadResult:
    """A delivery loaded before as batch ``batch_id``: nothing written, each parcel it would
    load unchanged in the register."""
    result.batch = batch_id
    result.status = "unchanged"
    result.changes = {"added": 0, "changed": 0, "unchanged": result.loaded, "retired": 0}
    result.loaded = 0
    return result


def _insert_batch(
    conn,
    delivery: Delivery,
    result: LoadResult,
    started_at: datetime,
    options: dict[str, Any],
    sheets: list[tuple[str, int]],
) -> int:
    row = conn.execute(
        """
        INSERT INTO land.batch (source_path, source_sha256, source_format, options, source_layer,
            commune_code, crs_read, crs_how, field_mapping, field_mapping_how, text_encoding,
            text_encoding_how, text_encoding_confidence, text_encoding_declared, linework,
            covered_sheets, reading_context, started_at, finished_at, status, n_read, n_loaded,
            n_repaired, n_rejected)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
            clock_timestamp(), %s, %s, %s, %s, %s)
        RETURNING id
        """,
        [
            str(delivery.source.path.resolve()),
            delivery.source.sha256,
            delivery.source.driver,
            Jsonb(options),
            delivery.layer,
            delivery.commune_code,
            delivery.crs.label,
            delivery.crs.how,
            Jsonb(delivery.field_mapping),
            delivery.mapping_how,
            delivery.text.encoding,
            delivery.text.how,
            delivery.text.confidence,
            delivery.text.declared,
            delivery.linework,
            Jsonb([list(pair) for pair in sheets]),
            delivery.reading_context,
            started_at,
            result.status,
            result.read,
            result.loaded,
            result.repaired,
            result.rejected,
        ],
    ).fetchone()
    return int(row[0])


def _copy_findings(conn, batch_id: int, validation: Validation) -> None:
    with conn.cursor().copy(
        "COPY land.finding (batch_id, rule_code, severity, commune_code, sheet_no, parcel_no,"
        " source_row, message, detail, location, other_commune_code, other_sheet_no,"
        " other_parcel_no, area_m2) FROM STDIN"
    ) as copy:
        copy.set_types(
            [
                "int8",
                "text",
                "text",
                "text",
                "int4",
                "int4",
                "int4",
                "text",
                "jsonb",
                "text",
                "text",
                "int4",
                "int4",
                "float8",
            ]
        )
        for finding in validation.findings:
            copy.write_row(
                [
                    batch_id,
                    finding.rule_code,
                    finding.severity,
                    finding.commune_code,
                    finding.sheet_no,
                    finding.parcel_no,
                    finding.source_row,
                    finding.message,
                    Jsonb(finding.detail, dumps=_json_text),
                    _ewkb(finding.location),
                    finding.other_commune_code,
                    finding.other_sheet_no,
                    finding.other_parcel_no,
                    None if finding.area_m2 is None else round(float(finding.area_m2), 2),
                ]
            )


def _copy_rejected(conn, batch_id: int, delivery: Delivery, validation: Validation) -> None:
    frame = validation.rejected
    if frame.empty:  # taking no row of a large delivery's attributes still costs 0.2 s
        return
    delivered = attribute_records(delivery.attributes, frame[canonical.SOURCE_ROW].tolist())
    with conn.cursor().copy(
        "COPY land.rejected_record (batch_id, source_row, rule_codes, commune_code, sheet_no,"
        " parcel_no, attributes, geom) FROM STDIN"
    ) as copy:
        copy.set_types(["int8", "int4", "text[]", "text", "int4", "int4", "jsonb", "text"])
        rows = zip(frame.itertuples(index=False), frame.geometry.values, delivered, strict=True)
        for row, geometry, attributes in rows:
            copy.write_row(
                [
                    batch_id,
                    int(getattr(row, canonical.SOURCE_ROW)),
                    list(row.rule_codes),
                    _optional(row.commune_code),
                    _optional(row.sheet_no),
                    _optional(row.parcel_no),
                    Jsonb(attributes),
                    _ewkb(geometry),
                ]
            )


def record_refusal(
    engine: Engine,
    *,
    source_path: str,
    sha256: str,
    driver: str | None,
    error: str,
    started_at: datetime,
    options: dict[str, Any],
) -> int:
    """Record a delivery that could not be used as a whole as a ``failed`` batch."""
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO land.batch (source_path, source_sha256, source_format, options,"
                " started_at, finished_at, status, error)"
                " VALUES (%s, %s, %s, %s, %s, %s, 'failed', %s) RETURNING id",
                [source_path, sha256, driver, Jsonb(options), started_at, datetime.now(UTC), error],
            ).fetchone()
        return int(row[0])
    finally:
        raw.close()
