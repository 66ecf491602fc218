"""Merge a delivery's parcels into the register, keeping every version (``land.parcel_version``).

Runs inside the load's transaction, under the advisory locks of the delivery's communes, so
nothing else changes the current parcels of those communes meanwhile. The current versions of
the map sheets the delivery covers are read as (key, version id, record hash) and compared
with the delivery's accepted parcels (:func:`compare`): a parcel whose delivered record has
its current version's record hash is the same (:mod:`landpipe.sources.records`); the others
are compared by content hash (:func:`content_hashes`, the same bytes as
``land.parcel_content_hash`` hashes in SQL, which stands in for a version stored without one):

- a key new to the register is **added**;
- a key whose geometry, land-use codes, areas, owner or address differ is **changed**: its
  current version is closed and a new one opened, linked by ``previous_version_id``;
- a key with the same content is **unchanged**: nothing is written;
- a current parcel of a covered sheet whose key the delivery no longer has is **retired**.
  A key the delivery carries but whose record was rejected is neither changed nor retired,
  and a sheet none of whose records was accepted retires nothing: a delivery that could not
  be used changes nothing.

Only what changes is written. The versions to close are closed by one ``UPDATE`` by id, and
the new versions are streamed straight into ``land.parcel_version`` with one binary ``COPY``,
encoded column by column with Arrow (geometries as extended WKB bytes), never row by row.

Retired parcels, and changed ones whose geometry changed, are linked to the new parcels that
cover their area (``land.parcel_lineage``): splits and merges, also those that keep a parcel's
number. A changed or retired parcel that holds a certificate, and a key added again that held
one, gets a ``CERT_CHANGED`` finding, which blocks it until reviewed.

The first load into an empty register (a province's initial load) takes the table whole
(:func:`take_empty_register`): it drops the secondary indexes of ``land.parcel_version`` and the
foreign keys from and to it, empties it anew (``TRUNCATE``, so that the copy may be frozen and,
on a server without replicas, write no WAL), copies, then builds them again and validates the
keys in one pass each, as ``pg_restore`` does. Building an index from sorted data is several
times cheaper than inserting into it row by row. The table is locked meanwhile (it is empty to
everyone else anyway); everything happens in the load's transaction, so a failure leaves it
as it was.

The current versions a load compares with can come from a look taken before its transaction
(:class:`Look`, while validation runs): the load uses them when no batch touching its communes
committed after that look's snapshot (:func:`still_current`), and reads them again otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from psycopg.copy import QueuedLibpqWriter

from landpipe import schemas
from landpipe.schemas import parcel as canonical
from landpipe.sources import Delivery
from landpipe.sources.crs import finite_coordinates
from landpipe.sources.fields import (
    area_tenths,
    attribute_json,
    content_hashes,
    fixed_width,
    land_use_arrow,
    length_prefixed,
    multipolygon_wkb,
    text_arrow,
    values_bytes,
)
from landpipe.sources.records import RECORD_HASH_BYTES
from landpipe.validate import Validation

#: A retired parcel is an ancestor of an added one when they share more than this many m²
#: and more than this share of the smaller of the two.
LINEAGE_MIN_AREA_M2 = 1.0
LINEAGE_MIN_SHARE = 0.01

#: Parcels encoded per ``COPY`` chunk: PostgreSQL takes in one chunk while the next is encoded.
COPY_CHUNK = 50_000

#: The current versions of some sheets, one row per sheet (its place in the list given), as
#: 28-byte records: parcel number, version id, record hash (zeros where none is stored). The
#: rows are narrow on purpose: the aggregate takes a million of them in well under a second.
_CURRENT = """
SELECT s.i, string_agg(int4send(v.parcel_no) || int8send(v.id)
                       || coalesce(v.record_hash, decode(repeat('00', 16), 'hex')), ''::bytea)
FROM unnest(%s::text[], %s::integer[]) WITH ORDINALITY AS s (commune, sheet, i)
JOIN land.parcel_version v
  ON v.commune_code = s.commune AND v.sheet_no = s.sheet AND v.valid_to IS NULL
GROUP BY s.i
"""
#: Whether some sheets have a current parcel at all.
ANY_CURRENT = """
SELECT EXISTS (SELECT FROM land.parcel_version v
               JOIN unnest(%s::text[], %s::integer[]) AS s (commune, sheet)
                 ON v.commune_code = s.commune AND v.sheet_no = s.sheet
               WHERE v.valid_to IS NULL)
"""
#: The content hash of some versions: as stored, or made by ``land.parcel_content_hash``.
_CONTENT_HASHES = """
SELECT v.id, coalesce(v.content_hash,
                      land.parcel_content_hash(v.geom, v.land_use_codes, v.declared_area_m2,
                                               v.legal_area_m2, v.owner_name, v.address))
FROM land.parcel_version v WHERE v.id = ANY(%s)
"""
_CURRENT_RECORD = np.dtype(
    [("parcel_no", ">i4"), ("version_id", ">i8"), ("record_hash", "u1", RECORD_HASH_BYTES)]
)

#: Columns of a new version, in the order of the binary ``COPY``: the fixed-width ones first.
_VERSION_COLUMNS = (
    "batch_id, sheet_no, parcel_no, valid_from, commune_code, change, previous_version_id,"
    " land_use_codes, declared_area_m2, legal_area_m2, area_m2, owner_name, address, attributes,"
    " content_hash, record_hash, geom"
)
_VERSION_FIELDS = 17
#: The trigger computing ``area_m2`` for writes other than a load's (sql/030_parcel.sql).
_AREA_TRIGGER = "parcel_version_area"

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension
_COPY_TRAILER = b"\xff\xff"
_NULL_FIELD = pa.scalar(b"\xff\xff\xff\xff", pa.binary())
_TEXT_OID = 25
_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class Changes:
    """How a delivery changed the register."""

    added: int = 0
    changed: int = 0
    unchanged: int = 0
    retired: int = 0
    certificates_flagged: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "added": self.added,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "retired": self.retired,
        }


def covered_sheets(delivery: Delivery) -> list[tuple[str, int]]:
    """(commune, sheet) pairs the delivery covers: those of every record with a whole key."""
    if "covered_sheets" not in delivery.cache:
        keys = delivery.parcels[["commune_code", "sheet_no", "parcel_no"]].dropna()
        pairs = keys[["commune_code", "sheet_no"]].drop_duplicates()
        delivery.cache["covered_sheets"] = sorted(
            (str(c), int(s)) for c, s in pairs.itertuples(index=False)
        )
    return list(delivery.cache["covered_sheets"])


# --------------------------------------------------------------------------- what is current


@dataclass
class Registered:
    """The current versions of some map sheets: key, version id and record hash.

    Sorted by key; a key is the sheet's place in ``sheets`` and the parcel number.
    """

    sheets: list[tuple[str, int]]
    key: np.ndarray  # int64: sheet index << 32 | parcel_no
    version_id: np.ndarray  # int64
    record_hash: np.ndarray  # (n, 16) uint8; zeros where none is stored
    #: Content hashes of versions, by id, as :func:`stored_content` read them.
    content: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def none(cls, sheets: list[tuple[str, int]]) -> Registered:
        """No current version in ``sheets``."""
        empty = np.empty(0, dtype=np.int64)
        return cls(sheets, empty, empty.copy(), np.empty((0, RECORD_HASH_BYTES), np.uint8))

    def __len__(self) -> int:
        return len(self.key)

    def locate(self, parcels: pd.DataFrame, delivery: Delivery) -> np.ndarray:
        """Position of each parcel's key among the current versions; -1 where there is none.

        ``parcels`` of ``delivery`` (all, or some of them): their keys are packed once per
        delivery (:func:`_delivery_keys`)."""
        found = np.full(len(parcels), -1, dtype=np.int64)
        if not len(self) or not len(parcels):
            return found
        keys = _delivery_keys(delivery, parcels, self.sheets)
        at = np.searchsorted(self.key, keys).clip(max=len(self) - 1)
        hit = (keys >= 0) & (self.key[at] == keys)
        found[hit] = at[hit]
        return found


@dataclass
class Comparison:
    """How some parcels compare with the current versions of their keys.

    ``at``: each parcel's place among the current versions (-1: none); ``same``: whether it
    has its current version's content; ``stale``: whether it does, though not by record hash
    (that version's record hash is missing or was made in another reading context).
    """

    at: np.ndarray
    same: np.ndarray
    stale: np.ndarray


def compare(
    conn,
    current: Registered,
    delivery: Delivery,
    parcels: gpd.GeoDataFrame,
    records: np.ndarray | None,
    repaired: set[int] | frozenset[int] = frozenset(),
) -> Comparison:
    """Compare ``parcels`` (of ``delivery``: all of them, or those validation accepted, with
    the geometries it ``repaired``) with the current versions of their keys: by record hash
    first (``records``, one row per parcel, zeros where none counts, or None), then, for the
    others with a current version, by content hash (theirs :func:`delivered_content`, the
    versions' as stored or made in SQL)."""
    at = current.locate(parcels, delivery)
    known = at >= 0
    same = np.zeros(len(parcels), dtype=bool)
    if records is not None and known.any():
        stored = current.record_hash[at[known]]
        same[known] = (stored == records[known]).all(axis=1) & stored.any(axis=1)
    need = np.flatnonzero(known & ~same)
    if len(need):
        delivered = delivered_content(delivery, parcels, need, repaired)
        stored = stored_content(conn, current, current.version_id[at[need]])
        same[need] = [d == h for d, h in zip(delivered, stored, strict=True)]
    stale = np.zeros(len(parcels), dtype=bool)
    if records is not None:
        stale[need] = same[need] & records[need].any(axis=1)
    again = need[~same[need]]
    if len(again):
        same[again] = _same_otherwise(
            conn, current, parcels.iloc[again], current.version_id[at[again]]
        )
    return Comparison(at, same, stale)


#: How far (m) a vertex may lie from the registered one for the parcel to be the same: a
#: round trip through another CRS (VN-2000 to WGS 84 and back) moves vertices by up to about
#: 0.15 mm; surveyed coordinates are kept to the millimetre, so a vertex moved by one is moved.
REPROJECTED_TOLERANCE_M = 0.0005


def _same_otherwise(
    conn, current: Registered, parcels: gpd.GeoDataFrame, version_ids: np.ndarray
) -> np.ndarray:
    """Whether each of ``parcels``, whose content hash is not that of its version
    ``version_ids``, is the same all the same:

    - its geometry that of the version but for how it was written down or carried through
      another CRS: the same vertices, each within :data:`REPROJECTED_TOLERANCE_M`, in the same
      order, or once both are normalized (rings turning the same way, from the same vertex,
      parts in the same order: a Shapefile writes outer rings clockwise, a GeoPackage or
      GeoJSON often the other way round);
    - with an area on a half tenth, which versions loaded before landpipe rounded as
      PostgreSQL does hold rounded to even (:func:`area_tenths`' ``legacy``).

    Either way compared by content hash, as any parcel: with the version's geometry where the
    delivered one is the same so, and its areas rounded the old way where that rounds
    otherwise.
    """
    same = np.zeros(len(parcels), dtype=bool)
    legacy = _rounded_otherwise(parcels)
    geometry = version_geometries(conn, version_ids)
    delivered = np.asarray(parcels.geometry.values, dtype=object).copy()
    polygon = shapely.get_type_id(delivered) == 3
    if polygon.any():
        delivered[polygon] = shapely.multipolygons(delivered[polygon].reshape(-1, 1).tolist())
    # A NaN coordinate compares as equal to any: such a parcel is changed, and validation
    # rejects it.
    finite = finite_coordinates(delivered)
    with np.errstate(invalid="ignore"):
        close = shapely.equals_exact(delivered, geometry, tolerance=REPROJECTED_TOLERANCE_M)
    close &= finite
    other = np.flatnonzero(~close & finite)
    # Written otherwise, it has as many vertices, each within the tolerance of the other's
    # outline: a cheap test that leaves out the parcels that moved or were redrawn.
    with np.errstate(over="ignore", invalid="ignore"):  # coordinates of 1e300: far apart
        near = shapely.hausdorff_distance(delivered[other], geometry[other])
    other = other[
        (
            shapely.get_num_coordinates(delivered[other])
            == shapely.get_num_coordinates(geometry[other])
        )
        & (near <= REPROJECTED_TOLERANCE_M)
    ]
    normal = [shapely.normalize(delivered[other]), shapely.normalize(geometry[other])]
    close[other] = shapely.equals_exact(*normal, tolerance=REPROJECTED_TOLERANCE_M)
    # Normalizing starts each ring at its lowest vertex: two within the tolerance of being
    # as low (the corners of a box) may start the rings at different vertices.
    tied = np.flatnonzero(~close[other])
    close[other[tied]] = [
        _same_rings(a, b) for a, b in zip(normal[0][tied], normal[1][tied], strict=True)
    ]
    # The very same geometry: its content hash already differed for another reason.
    close[close] = ~shapely.equals_exact(delivered[close], geometry[close], tolerance=0)
    rows = np.flatnonzero(close | legacy)
    if not len(rows):
        return same
    candidates = parcels.iloc[rows].copy()
    candidates[candidates.geometry.name] = np.where(
        close[rows], geometry[rows], np.asarray(candidates.geometry.values, dtype=object)
    )
    stored_hashes = stored_content(conn, current, version_ids[rows])
    for legacy_rounding in (False, True):
        hashes = content_hashes(candidates, legacy_rounding=legacy_rounding)
        same[rows] |= np.array(
            [bytes(h) == stored for h, stored in zip(hashes, stored_hashes, strict=True)],
            dtype=bool,
        )
        # Then only those whose areas round otherwise the old way.
        keep = legacy[rows] & ~same[rows]
        rows, candidates = rows[keep], candidates[keep]
        stored_hashes = [h for h, k in zip(stored_hashes, keep, strict=True) if k]
        if not len(rows):
            break
    return same


def _same_rings(a: shapely.Geometry, b: shapely.Geometry) -> bool:
    """Whether two normalized geometries have the same rings, each vertex within
    :data:`REPROJECTED_TOLERANCE_M`, whichever vertex each ring starts at."""
    rings_a, rings_b = (shapely.get_rings(shapely.get_parts(g)) for g in (a, b))
    if len(rings_a) != len(rings_b):
        return False
    for ring_a, ring_b in zip(rings_a, rings_b, strict=True):
        xy_a, xy_b = shapely.get_coordinates(ring_a)[:-1], shapely.get_coordinates(ring_b)[:-1]
        if len(xy_a) != len(xy_b) or not len(xy_a):
            return False
        start = int(np.argmin(np.abs(xy_a - xy_b[0]).max(axis=1)))
        if np.abs(np.roll(xy_a, -start, axis=0) - xy_b).max() > REPROJECTED_TOLERANCE_M:
            return False
    return True


def _rounded_otherwise(parcels: pd.DataFrame) -> np.ndarray:
    """Whether a declared or legal area of each parcel is rounded otherwise by
    :func:`area_tenths`' ``legacy`` rounding."""
    differs = np.zeros(len(parcels), dtype=bool)
    for column in ("declared_area_m2", "legal_area_m2"):
        now, then = area_tenths(parcels[column]), area_tenths(parcels[column], legacy=True)
        differs |= (now != then) & ~np.isnan(now)
    return differs


def delivered_content(
    delivery: Delivery,
    parcels: gpd.GeoDataFrame,
    rows: np.ndarray,
    repaired: set[int] | frozenset[int] = frozenset(),
) -> list[bytes]:
    """The content hash of ``parcels`` at ``rows`` (positions), as the register compares them.

    Those of delivered geometries are kept in ``delivery.cache`` by ``source_row``: the
    compare step, the load's plan and its copy ask for the same ones. A geometry validation
    ``repaired`` is hashed as repaired.
    """
    kept: dict[int, bytes] = delivery.cache.setdefault("content", {})
    source = parcels[canonical.SOURCE_ROW].to_numpy()[rows].tolist()
    todo = [i for i, row in enumerate(source) if row in repaired or row not in kept]
    made = content_hashes(parcels.iloc[rows[todo]]) if todo else np.empty((0, 32), np.uint8)
    fresh = dict(zip(todo, (bytes(h) for h in made), strict=True))
    for i in todo:
        if source[i] not in repaired:
            kept[source[i]] = fresh[i]
    return [fresh[i] if i in fresh else kept[row] for i, row in enumerate(source)]


def envelopes(conn, version_ids: np.ndarray) -> np.ndarray:
    """The bounding boxes of some versions, as shapely polygons."""
    if not len(version_ids):
        return np.empty(0, dtype=object)
    bounds = conn.execute(
        "SELECT ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom)"
        " FROM land.parcel_version WHERE id = ANY(%s)",
        [version_ids.tolist()],
    ).fetchall()
    return shapely.box(*np.array(bounds, dtype=np.float64).T)


def version_geometries(conn, version_ids: np.ndarray) -> np.ndarray:
    """The geometries of some versions, in the order of ``version_ids``."""
    stored = dict(
        conn.execute(
            "SELECT id, ST_AsBinary(geom) FROM land.parcel_version WHERE id = ANY(%s)",
            [version_ids.tolist()],
        ).fetchall()
    )
    return shapely.from_wkb([bytes(stored[int(i)]) for i in version_ids])


def stored_content(conn, current: Registered, version_ids: np.ndarray) -> list[bytes]:
    """The content hash of each of ``current``'s versions ``version_ids``: as stored, or made
    by ``land.parcel_content_hash`` where none is. Kept in ``current``: a load that uses the
    compare step's look asks for the same ones again."""
    wanted = [int(i) for i in version_ids]
    missing = [i for i in wanted if i not in current.content]
    if missing:
        current.content.update(
            (i, bytes(h)) for i, h in conn.execute(_CONTENT_HASHES, [missing]).fetchall()
        )
    return [current.content[i] for i in wanted]


def sheet_arrays(sheets: list[tuple[str, int]]) -> tuple[list[str], list[int]]:
    """``sheets`` as the two arrays the queries here take."""
    return [commune for commune, _ in sheets], [sheet for _, sheet in sheets]


def registered(conn, sheets: list[tuple[str, int]]) -> Registered:
    """The current versions of ``sheets``."""
    # Parallel workers would hand a million rows through a gather: slower, on two cores.
    # (Loads and looks compile no plan: see no_jit.)
    conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
    rows = conn.execute(_CURRENT, sheet_arrays(sheets), binary=True).fetchall()  # bytea as is
    conn.execute("RESET max_parallel_workers_per_gather")
    records = [np.frombuffer(blob, dtype=_CURRENT_RECORD) for _, blob in rows]
    sheet = np.repeat(np.array([i - 1 for i, _ in rows], dtype=np.int64), [len(r) for r in records])
    current = np.concatenate(records) if records else np.empty(0, dtype=_CURRENT_RECORD)
    key = (sheet << 32) | current["parcel_no"].astype(np.int64)
    order = np.argsort(key, kind="stable")
    version_id = current["version_id"].astype(np.int64)[order]
    record_hash = np.ascontiguousarray(current["record_hash"][order])
    return Registered(sheets, key[order], version_id, record_hash)


#: Whether a batch that may have changed parcels of some communes, or an edit of the register
#: outside a load (``land.register_edit``, of any commune), committed after a snapshot.
#: (Revalidations and reviews write findings only.)
_CHANGED_SINCE = """
SELECT EXISTS (
    SELECT FROM land.batch b
    WHERE b.kind NOT IN ('revalidation', 'review')
      AND NOT pg_visible_in_snapshot(b.xact, %(snapshot)s::pg_snapshot)
      AND (b.covered_sheets IS NULL
           OR EXISTS (SELECT FROM jsonb_array_elements(b.covered_sheets) s
                      WHERE s ->> 0 = ANY(%(communes)s::text[]))))
    OR EXISTS (SELECT FROM land.register_edit e  -- by its key: edits since the snapshot
               WHERE e.xact >= pg_snapshot_xmin(%(snapshot)s::pg_snapshot)
                 AND NOT pg_visible_in_snapshot(e.xact, %(snapshot)s::pg_snapshot))
"""


@dataclass
class Look:
    """The current versions of some map sheets as one snapshot of the register saw them.

    A load that holds its communes' locks uses them instead of reading them again when no
    batch touching those communes committed after that snapshot (:func:`still_current`).
    """

    sheets: list[tuple[str, int]]
    current: Registered
    snapshot: str  # pg_snapshot, as text
    #: How the delivery's parcels (all of them, as read) compare with ``current``: made by
    #: :func:`landpipe.load.look_at_register`, and reused by :func:`plan`.
    delivered: Comparison | None = None


def no_jit(conn) -> None:
    """No compiled plans (JIT) for the rest of ``conn``'s transaction: a load's and a look's
    statements run once each, and compiling the large ones (the lineage of 10,000 changed
    parcels: 0.34 s of 0.47 s) costs far more than it saves."""
    conn.execute("SET LOCAL jit = off")


def look(conn, sheets: list[tuple[str, int]]) -> Look:
    """The current versions of ``sheets`` and the snapshot they were read in.

    ``conn`` is a psycopg connection at the start of a transaction, which this makes
    ``REPEATABLE READ`` so that both come from one snapshot.
    """
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    no_jit(conn)
    snapshot = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
    if conn.execute(ANY_CURRENT, sheet_arrays(sheets)).fetchone()[0]:
        current = registered(conn, sheets)
    else:  # a first delivery of these sheets: nothing to compare with
        current = Registered.none(sheets)
    return Look(sheets, current, snapshot)


def still_current(conn, seen: Look, sheets: list[tuple[str, int]]) -> Registered | None:
    """``seen.current`` when it still is what the register holds of ``sheets``; else None.

    Call it holding the locks of the sheets' communes: no load of them commits meanwhile.
    """
    if seen.sheets != sheets:
        return None
    communes = sorted({commune for commune, _ in sheets})
    changed = conn.execute(
        _CHANGED_SINCE, {"snapshot": seen.snapshot, "communes": communes}
    ).fetchone()[0]
    return None if changed else seen.current


def _delivery_keys(
    delivery: Delivery, parcels: pd.DataFrame, sheets: list[tuple[str, int]]
) -> np.ndarray:
    """:func:`_parcel_keys` of ``parcels``, some or all of ``delivery``'s (validation changes
    no key): those of the whole delivery are packed once and kept in ``delivery.cache``."""
    cached = delivery.cache.get("register_keys")
    if cached is None or cached[0] != sheets:
        cached = (sheets, _parcel_keys(delivery.parcels, sheets))
        delivery.cache["register_keys"] = cached
    return cached[1][_places(delivery, parcels)]


def _places(delivery: Delivery, parcels: pd.DataFrame) -> np.ndarray | slice:
    """Where ``parcels`` (some or all of ``delivery``'s) stand among the delivery's."""
    if parcels is delivery.parcels:
        return slice(None)
    rows = parcels[canonical.SOURCE_ROW].to_numpy()
    every = delivery.parcels[canonical.SOURCE_ROW].to_numpy()
    if np.array_equal(rows, every):  # every parcel accepted, in the delivery's order
        return slice(None)
    if len(every) > 1 and len(rows) and (every[1:] > every[:-1]).all():
        # Rows in file order, as read: found by bisection, not through a hash table (0.3 s
        # for a million parcels).
        places = np.searchsorted(every, rows).clip(max=len(every) - 1)
        return np.where(every[places] == rows, places, -1)
    return pd.Index(every).get_indexer(rows)


def _parcel_keys(parcels: pd.DataFrame, sheets: list[tuple[str, int]]) -> np.ndarray:
    """Each parcel's key as :class:`Registered` packs it; -1 when incomplete or not covered."""
    sheet_id = {
        (int(commune), sheet): i for i, (commune, sheet) in enumerate(sheets) if commune.isdigit()
    }
    codes, communes = pd.factorize(pd.Series(parcels["commune_code"]).astype(object))
    commune = np.array(
        [int(c) if isinstance(c, str) and c.isdigit() else -1 for c in communes] + [-1],
        dtype=np.int64,
    )[codes]
    sheet = pd.to_numeric(parcels["sheet_no"]).to_numpy(dtype="float64", na_value=np.nan)
    number = pd.to_numeric(parcels["parcel_no"]).to_numpy(dtype="float64", na_value=np.nan)
    whole = (commune >= 0) & ~np.isnan(sheet) & ~np.isnan(number)
    pair = np.where(whole, commune * (1 << 32) + np.nan_to_num(sheet).astype(np.int64), -1)
    wanted = pd.Index(np.array([c * (1 << 32) + s for c, s in sheet_id], dtype=np.int64))
    place = wanted.get_indexer(pair)
    index = np.array(list(sheet_id.values()), dtype=np.int64)[place] if len(wanted) else place
    keys = np.where(whole & (place >= 0), index << 32, -1)
    keys[keys >= 0] |= np.nan_to_num(number[keys >= 0]).astype(np.int64)
    return keys


# --------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """What a delivery does to the register, decided before anything is written.

    Attributes
    ----------
    records
        Record hash of each accepted parcel (``validation.parcels``), (n, 16); None for
        parcels built from linework.
    previous
        Id of the current version of each accepted parcel's key; -1 where there is none.
    same
        Whether each accepted parcel has the content of its current version.
    stale
        Whether each accepted parcel is the same as its current version by content, not by
        record hash: the version's record hash is made anew (:func:`merge`).
    retired
        Ids of the current versions of covered sheets whose key the delivery no longer has,
        in the sheets where it has an accepted parcel, and at whose place it has no rejected
        record.
    untouched
        Ids of the current versions of covered sheets that stay current without being
        delivered again: their key's record was rejected, a rejected record lies at their
        place (under another key, typed wrong), or their sheet has no accepted parcel. They
        are the delivery's neighbours in the register like any other parcel.
    """

    records: np.ndarray | None
    previous: np.ndarray
    same: np.ndarray
    stale: np.ndarray
    retired: np.ndarray
    untouched: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    @property
    def added(self) -> np.ndarray:
        return self.previous < 0

    @property
    def changed(self) -> np.ndarray:
        return (self.previous >= 0) & ~self.same


def plan(
    conn,
    current: Registered,
    delivery: Delivery,
    validation: Validation,
    *,
    delivered: Comparison | None = None,
) -> Plan:
    """Compare the accepted parcels with the current versions of the covered sheets
    (:func:`compare`; a parcel validation repaired compares with its repaired geometry).

    ``delivered``: how all the delivered parcels compare with ``current``, when known (the
    look's, :attr:`Look.delivered`): only the repaired parcels are compared again.
    """
    parcels = validation.parcels
    records = accepted_records(delivery, validation)
    if delivered is not None and len(delivered.at) == len(delivery.parcels):
        compared = _reused(conn, current, delivery, validation, records, delivered)
        delivered_at = delivered.at
    else:
        compared = compare(conn, current, delivery, parcels, records, validation.repaired)
        delivered_at = current.locate(delivery.parcels, delivery)
    at = compared.at
    previous = np.full(len(parcels), -1, dtype=np.int64)
    previous[at >= 0] = current.version_id[at[at >= 0]]
    delivered = np.zeros(len(current), dtype=bool)  # the key is in the delivery
    delivered[delivered_at[delivered_at >= 0]] = True
    replaced = np.zeros(len(current), dtype=bool)  # an accepted parcel stands for it
    replaced[at[at >= 0]] = True
    # A sheet is delivered anew where the delivery has an accepted parcel: a sheet whose
    # records were all rejected (or a delivery with none accepted) retires nothing.
    retiring = np.zeros(len(current), dtype=bool)
    if len(current):
        keys = _delivery_keys(delivery, parcels, current.sheets)
        # Sheets are places in a short list: flag them, rather than sort a million keys.
        accepted = np.zeros(len(current.sheets), dtype=bool)
        accepted[keys[keys >= 0] >> 32] = True
        retiring = ~delivered & accepted[current.key >> 32]
    if retiring.any() and len(validation.rejected):
        # A record rejected with a wrong key (a parcel number typed twice) still stands for
        # the parcel at its place: that parcel keeps its version, as under its own key.
        candidates = np.flatnonzero(retiring)
        retiring[candidates[_held(conn, current.version_id[candidates], validation)]] = False
    return Plan(
        records,
        previous,
        compared.same,
        compared.stale,
        retired=current.version_id[retiring],
        untouched=current.version_id[~replaced & ~retiring],
    )


#: How much of a version and of a rejected record must overlap for the record to be taken for
#: that parcel delivered under a wrong key (each share of its own area).
HELD_OVERLAP = 0.5


def _held(conn, version_ids: np.ndarray, validation: Validation) -> np.ndarray:
    """Whether a rejected record is each version of ``version_ids`` delivered under a wrong
    key: the two (the record's geometry made valid) overlap by more than
    :data:`HELD_OVERLAP` of each one's area. A record far larger (a sheet's frame drawn as a
    polygon) or far smaller holds no parcel."""
    rejected = np.asarray(validation.rejected.geometry.values, dtype=object)
    rejected = rejected[~shapely.is_missing(rejected)]
    rejected = rejected[~shapely.is_empty(rejected)]
    with np.errstate(over="ignore", invalid="ignore"):  # coordinates of 1e300 hold nothing
        rejected = shapely.make_valid(rejected)
    held = np.zeros(len(version_ids), dtype=bool)
    if not len(rejected):
        return held
    versions = version_geometries(conn, version_ids)
    at, of = shapely.STRtree(rejected).query(versions, predicate="intersects")
    if not len(at):
        return held
    shared = shapely.area(shapely.intersection(versions[at], rejected[of]))
    alike = (shared > HELD_OVERLAP * shapely.area(versions[at])) & (
        shared > HELD_OVERLAP * shapely.area(rejected[of])
    )
    held[np.unique(at[alike])] = True
    return held


def _reused(
    conn,
    current: Registered,
    delivery: Delivery,
    validation: Validation,
    records: np.ndarray | None,
    delivered: Comparison,
) -> Comparison:
    """:func:`compare` of the accepted parcels, taken from that of all delivered ones: the
    same keys, record hashes and content, but for a geometry validation repaired, compared
    again as repaired."""
    parcels = validation.parcels
    places = _places(delivery, parcels)
    compared = Comparison(
        delivered.at[places], delivered.same[places].copy(), delivered.stale[places].copy()
    )
    if validation.repaired:
        rows = np.flatnonzero(_repaired(validation))
        records = None if records is None else records[rows]
        again = compare(conn, current, delivery, parcels.iloc[rows], records, validation.repaired)
        compared.at[rows] = again.at
        compared.same[rows] = again.same
        compared.stale[rows] = again.stale
    return compared


def _repaired(validation: Validation) -> np.ndarray:
    """Which accepted parcels have a geometry validation repaired."""
    rows = validation.parcels[canonical.SOURCE_ROW].to_numpy()
    return np.isin(rows, list(validation.repaired))


def accepted_records(delivery: Delivery, validation: Validation) -> np.ndarray | None:
    """The record hash of each accepted parcel, (n, 16); None without record hashes.

    Zeros (none) for a parcel whose geometry validation repaired: its record does not make
    what the register holds without the repair, so a later delivery of it is compared by
    content, validated and repaired again.
    """
    if delivery.record_hashes is None:
        return None
    records = delivery.record_hashes[_places(delivery, validation.parcels)]
    if validation.repaired:
        records = records.copy()  # not the delivery's own
        records[_repaired(validation)] = 0
    return records


# --------------------------------------------------------------------------- an empty register

_SECONDARY_INDEXES = """
SELECT pg_get_indexdef(i.indexrelid), i.indexrelid::regclass::text
FROM pg_index i
WHERE i.indrelid = 'land.parcel_version'::regclass
  AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid)
ORDER BY i.indexrelid
"""
#: Whether ``land.parcel_version`` is empty, and whether it and every table with a foreign
#: key to it are ours to alter.
_EMPTY_AND_OURS = """
SELECT NOT EXISTS (SELECT FROM land.parcel_version),
       bool_and(pg_has_role(c.relowner, 'USAGE'))
FROM pg_class c
WHERE c.oid = 'land.parcel_version'::regclass
   OR c.oid IN (SELECT conrelid FROM pg_constraint
                WHERE contype = 'f' AND confrelid = 'land.parcel_version'::regclass)
"""
#: Foreign keys of ``land.parcel_version`` and those of other tables that refer to it.
_FOREIGN_KEYS = """
SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE contype = 'f'
  AND 'land.parcel_version'::regclass IN (conrelid, confrelid)
ORDER BY conrelid = 'land.parcel_version'::regclass DESC, oid
"""


@dataclass
class Rebuild:
    """What :func:`take_empty_register` dropped, to make again by :func:`rebuild`."""

    indexes: list[tuple[str, str]]  # (CREATE INDEX statement, index name)
    foreign_keys: list[tuple[str, str, str]]  # (table, constraint name, definition)


def register_is_empty(engine) -> bool:
    """Whether ``land.parcel_version`` holds no row: a hint, read outside any load."""
    with engine.connect() as connection:
        return not connection.exec_driver_sql(
            "SELECT EXISTS (SELECT FROM land.parcel_version)"
        ).scalar()


def take_empty_register(conn) -> Rebuild | None:
    """Lock ``land.parcel_version`` and, if it is empty and ours to alter, drop its
    secondary indexes and the foreign keys from and to it for :func:`rebuild` to make again,
    switch off its ``area_m2`` trigger until then (the load writes the areas), and empty it
    anew (``TRUNCATE``); else None.

    Call it before the transaction touches ``land.parcel_version``: a load that finds the
    table locked waits for this one, and none holds the table while waiting for a lock.
    """
    dropped = None
    # In a savepoint: declining rolls it back, which lets go of the table lock again.
    with conn.transaction():
        conn.execute("LOCK TABLE land.parcel_version IN ACCESS EXCLUSIVE MODE")
        empty, owner = conn.execute(_EMPTY_AND_OURS).fetchone()
        if not (empty and owner):
            raise psycopg.Rollback()
        dropped = Rebuild(
            indexes=[tuple(row) for row in conn.execute(_SECONDARY_INDEXES).fetchall()],
            foreign_keys=[tuple(row) for row in conn.execute(_FOREIGN_KEYS).fetchall()],
        )
        for table, name, _ in dropped.foreign_keys:
            conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for _, name in dropped.indexes:
            conn.execute(f"DROP INDEX {name}")
        # The COPY carries every version's area_m2: no need to ask each row whether to compute it.
        conn.execute(f"ALTER TABLE land.parcel_version DISABLE TRIGGER {_AREA_TRIGGER}")
        # Emptied in this transaction, the table gets new files: the COPY may freeze its
        # rows (no later pass rewrites them to mark them committed), and where the server
        # keeps no WAL for replicas (wal_level = minimal, as the embedded cluster) the COPY
        # and the index builds write none.
        conn.execute("TRUNCATE land.parcel_version")
    return dropped


def rebuild(conn, dropped: Rebuild) -> None:
    """Build the indexes and validate the foreign keys :func:`take_empty_register` dropped,
    then gather the table's statistics for the planner."""
    conn.execute(f"ALTER TABLE land.parcel_version ENABLE TRIGGER {_AREA_TRIGGER}")
    for statement, _ in dropped.indexes:
        conn.execute(statement)
    for table, name, definition in dropped.foreign_keys:
        conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    conn.execute("ANALYZE land.parcel_version")


# --------------------------------------------------------------------------- writing


def merge(
    conn,
    delivery: Delivery,
    validation: Validation,
    plan: Plan,
    batch_id: int,
    *,
    freeze: bool = False,
) -> Changes:
    """Write ``plan`` into the register as batch ``batch_id`` (see the module).

    ``freeze``: copy the new versions frozen (``COPY … FREEZE``), allowed when this
    transaction emptied ``land.parcel_version`` (:func:`take_empty_register`).
    """
    changed, added = plan.changed, plan.added
    changes = Changes(
        added=int(added.sum()),
        changed=int(changed.sum()),
        unchanged=int(plan.same.sum()),
        retired=len(plan.retired),
    )
    # The moment of the changes is taken now that the communes' locks are held, not when the
    # transaction began: a load that began before another one of its communes committed, and
    # waited for it, dates its changes after that one's.
    moment = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    closed = np.concatenate([plan.previous[changed], plan.retired])
    reshaped = np.empty(0, dtype=np.int64)
    if len(closed):
        shapes = conn.execute(
            "UPDATE land.parcel_version SET valid_to = %s, retired_batch_id = %s"
            " WHERE id = ANY(%s) RETURNING id, md5(ST_AsBinary(geom, 'NDR'))",
            [moment, batch_id, closed.tolist()],
        ).fetchall()
        reshaped = _reshaped(validation, plan, dict(shapes))
    written = np.flatnonzero(added | changed)
    if len(written):
        _copy_versions(conn, delivery, validation, plan, written, batch_id, moment, freeze=freeze)
    stale = np.flatnonzero(plan.stale)
    if len(stale):  # same content, other record hash: keep this reading's, and the content's
        content = delivered_content(delivery, validation.parcels, stale, validation.repaired)
        conn.execute(
            "UPDATE land.parcel_version v SET record_hash = u.record, content_hash = u.content"
            " FROM unnest(%s::bigint[], %s::bytea[], %s::bytea[]) AS u (id, record, content)"
            " WHERE v.id = u.id",
            [plan.previous[stale].tolist(), [bytes(h) for h in plan.records[stale]], content],
        )
    if (changes.retired or len(reshaped)) and (changes.added or changes.changed):
        _record_lineage(conn, batch_id, np.concatenate([plan.retired, reshaped]))
    changes.certificates_flagged = _flag_certificates(
        conn, batch_id, plan.previous[changed], plan.retired, added=changes.added > 0 and not freeze
    )
    return changes


def _copy_versions(
    conn,
    delivery: Delivery,
    validation: Validation,
    plan: Plan,
    rows: np.ndarray,
    batch_id: int,
    now: datetime,
    *,
    freeze: bool = False,
) -> None:
    """Stream the new versions of the accepted parcels at ``rows`` into
    ``land.parcel_version``."""
    parcels = validation.parcels
    valid_from = _microseconds_since_2000(now)
    cursor = conn.cursor()
    options = "FORMAT BINARY, FREEZE" if freeze else "FORMAT BINARY"
    with cursor.copy(
        f"COPY land.parcel_version ({_VERSION_COLUMNS}) FROM STDIN ({options})",
        writer=QueuedLibpqWriter(cursor),
    ) as copy:
        copy.write(_COPY_HEADER)
        for start in range(0, len(rows), COPY_CHUNK):
            chunk = rows[start : start + COPY_CHUNK]
            # Rows one after the other (a first load's) are a slice, not a copy of each column.
            whole = chunk[-1] - chunk[0] == len(chunk) - 1
            encoded = _version_rows(
                delivery,
                parcels.iloc[chunk[0] : chunk[-1] + 1] if whole else parcels.iloc[chunk],
                plan,
                chunk,
                batch_id,
                valid_from,
                repaired=validation.repaired,
                hashed=not freeze,
            )
            copy.write(values_bytes(encoded))
        copy.write(_COPY_TRAILER)


def _version_rows(
    delivery: Delivery,
    parcels: gpd.GeoDataFrame,
    plan: Plan,
    rows: np.ndarray,
    batch_id: int,
    valid_from: int,
    *,
    repaired: set[int] | frozenset[int] = frozenset(),
    hashed: bool = True,
) -> pa.BinaryArray:
    """The binary ``COPY`` tuples of new versions, one binary value per parcel; ``hashed``,
    with their content hash (a first load leaves it to ``land.parcel_content_hash``: its
    record hashes spare the next delivery most content comparisons)."""
    n = len(parcels)
    fixed = np.empty(
        n,
        dtype=[
            ("fields", ">i2"),
            ("batch_length", ">i4"),
            ("batch_id", ">i8"),
            ("sheet_length", ">i4"),
            ("sheet_no", ">i4"),
            ("parcel_length", ">i4"),
            ("parcel_no", ">i4"),
            ("from_length", ">i4"),
            ("valid_from", ">i8"),
        ],
    )
    fixed["fields"] = _VERSION_FIELDS
    fixed["batch_length"], fixed["batch_id"] = 8, batch_id
    fixed["sheet_length"] = fixed["parcel_length"] = 4
    fixed["sheet_no"] = parcels["sheet_no"].to_numpy(dtype=np.int64)
    fixed["parcel_no"] = parcels["parcel_no"].to_numpy(dtype=np.int64)
    fixed["from_length"], fixed["valid_from"] = 8, valid_from
    previous = plan.previous[rows]
    geometry = np.asarray(parcels.geometry.values)
    if hashed:
        content = delivered_content(delivery, parcels, np.arange(n), repaired)
        content_field = length_prefixed(pa.array(content, pa.binary()))
    else:
        content_field = pa.array([b"\xff\xff\xff\xff"] * n, pa.binary())
    if plan.records is not None:
        records = np.ascontiguousarray(plan.records[rows])
        records_field = length_prefixed(
            pc.if_else(
                pa.array(records.any(axis=1)),
                fixed_width(records.view(f"V{RECORD_HASH_BYTES}")[:, 0]),
                pa.scalar(None, pa.binary()),
            )
        )
    else:
        records_field = pa.array([b"\xff\xff\xff\xff"] * n, pa.binary())
    attributes = attribute_json(
        delivery.attributes, delivery.extra_fields, parcels[canonical.SOURCE_ROW].to_numpy()
    )
    fields = [
        fixed_width(fixed),
        length_prefixed(text_arrow(parcels["commune_code"])),
        length_prefixed(pa.array(np.where(previous < 0, "added", "changed"), pa.string())),
        _nullable_int8(previous, previous >= 0),
        length_prefixed(_text_array(land_use_arrow(parcels["land_use_codes"]))),
        _numeric_tenths(area_tenths(parcels["declared_area_m2"])),
        _numeric_tenths(area_tenths(parcels["legal_area_m2"])),
        # round(ST_Area(geom)::numeric, 1), as the trigger computes it for other writers.
        _numeric_tenths(area_tenths(shapely.area(geometry))),
        length_prefixed(text_arrow(parcels["owner_name"])),
        length_prefixed(text_arrow(parcels["address"])),
        length_prefixed(
            pc.binary_join_element_wise(
                b"\x01", pa.array(attributes, pa.string()).cast(pa.binary()), b""
            )
        ),
        content_field,
        records_field,
        length_prefixed(multipolygon_wkb(geometry, canonical.STORAGE_EPSG)),
    ]
    return pc.binary_join_element_wise(*fields, b"")


def _microseconds_since_2000(moment: datetime) -> int:
    """A ``timestamptz`` as binary COPY carries it."""
    delta = moment - _POSTGRES_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _nullable_int8(values: np.ndarray, present: np.ndarray) -> pa.BinaryArray:
    record = np.empty(len(values), dtype=[("length", ">i4"), ("value", ">i8")])
    record["length"], record["value"] = 8, values
    field = fixed_width(record)
    return field if present.all() else pc.if_else(pa.array(present), field, _NULL_FIELD)


def _text_array(codes: pa.ListArray) -> pa.BinaryArray:
    """``text[]`` in PostgreSQL's binary array format (one dimension, no null elements)."""
    counts = pc.list_value_length(codes).to_numpy(zero_copy_only=False)
    header = np.empty(
        len(codes),
        dtype=[
            ("ndim", ">i4"),
            ("nulls", ">i4"),
            ("oid", ">i4"),
            ("size", ">i4"),
            ("lower", ">i4"),
        ],
    )
    header["ndim"], header["nulls"], header["oid"] = 1, 0, _TEXT_OID
    header["size"], header["lower"] = counts, 1
    head = fixed_width(header)
    empty = counts == 0
    if empty.any():  # an empty array has no dimension
        no_dimension = np.array([0, 0, _TEXT_OID], dtype=">i4").tobytes()
        head = pc.if_else(pa.array(empty), pa.scalar(no_dimension, pa.binary()), head)
    elements = pa.ListArray.from_arrays(codes.offsets, length_prefixed(codes.values))
    return pc.binary_join_element_wise(head, pc.binary_join(elements, b""), b"")


def _numeric_tenths(tenths: np.ndarray) -> pa.BinaryArray:
    """Areas in tenths of m² as binary ``numeric`` with one decimal; NULL where NaN.

    A numeric is base-10000 digits with the weight of the first: five digits, weight 3,
    cover the 13 integer digits and one decimal of ``numeric(14, 1)``; PostgreSQL strips
    the zero digits on input.
    """
    known = ~np.isnan(tenths)
    value = np.abs(np.where(known, tenths, 0)).astype(np.int64)
    whole, tenth = value // 10, value % 10
    record = np.empty(
        len(tenths),
        dtype=[
            ("length", ">i4"),
            ("ndigits", ">i2"),
            ("weight", ">i2"),
            ("sign", ">u2"),
            ("dscale", ">i2"),
            ("digits", ">i2", 5),
        ],
    )
    record["length"], record["ndigits"], record["weight"], record["dscale"] = 18, 5, 3, 1
    record["sign"] = np.where(tenths < 0, 0x4000, 0)
    for place, power in enumerate((10**12, 10**8, 10**4, 1)):
        record["digits"][:, place] = whole // power % 10_000
    record["digits"][:, 4] = tenth * 1000
    field = fixed_width(record)
    return field if known.all() else pc.if_else(pa.array(known), field, _NULL_FIELD)


# --------------------------------------------------------------------------- consequences


def _reshaped(validation: Validation, plan: Plan, closed: dict[int, str]) -> np.ndarray:
    """Ids of the versions of changed parcels whose geometry changed: ``closed`` holds the MD5
    of each closed version's WKB as the register stores it."""
    rows = np.flatnonzero(plan.changed)
    if not len(rows):
        return np.empty(0, dtype=np.int64)
    ids = plan.previous[rows]
    delivered = multipolygon_wkb(np.asarray(validation.parcels.geometry.values[rows], dtype=object))
    moved = [
        closed[int(i)] != hashlib.md5(wkb).hexdigest()
        for i, wkb in zip(ids, delivered.to_pylist(), strict=True)
    ]
    return ids[np.asarray(moved, dtype=bool)]


def _record_lineage(conn, batch_id: int, parents: np.ndarray) -> None:
    """Link the parcels a split or merge replaced (``parents``: versions retired, or of changed
    parcels whose geometry changed, as a split or merge may keep a parcel's number) to the
    versions this batch added or changed that cover part of their area. A changed parcel's
    own new version is linked to it as its next version (``previous_version_id``), not here."""
    conn.execute(
        """
        WITH parent AS MATERIALIZED (  -- few or none: each looks for its children by index
            SELECT r.id, r.geom FROM land.parcel_version r WHERE r.id = ANY(%(parents)s)
        )
        INSERT INTO land.parcel_lineage (parent_version_id, child_version_id, batch_id,
                                         shared_area_m2)
        SELECT r.id, n.id, %(batch)s, round(shared.area::numeric, 1)
        FROM parent r
        CROSS JOIN LATERAL (
            -- Around each parent, by the index of the current parcels: not by the batch's
            -- (whose rows the planner, with statistics from before the batch, counts as one),
            -- which would compare every parent with every new version.
            SELECT n.id, n.geom FROM land.parcel_version n
            WHERE n.valid_to IS NULL AND n.geom && r.geom AND n.batch_id + 0 = %(batch)s
              AND n.previous_version_id IS DISTINCT FROM r.id
            OFFSET 0
        ) n
        CROSS JOIN LATERAL (SELECT ST_Area(ST_Intersection(r.geom, n.geom)) AS area) shared
        WHERE shared.area > %(min_area)s
          AND shared.area > %(min_share)s * least(ST_Area(r.geom), ST_Area(n.geom))
        """,
        {
            "batch": batch_id,
            "parents": parents.tolist(),
            "min_area": LINEAGE_MIN_AREA_M2,
            "min_share": LINEAGE_MIN_SHARE,
        },
    )


def _flag_certificates(
    conn, batch_id: int, changed: np.ndarray, retired: np.ndarray, *, added: bool
) -> int:
    """A ``CERT_CHANGED`` finding for each certified parcel this batch changed or retired,
    and, when it ``added`` parcels, for each key it added again that held a certificate."""
    if not len(changed) and not len(retired) and not added:
        return 0
    severity = schemas.rules()["CERT_CHANGED"].severity
    return conn.execute(
        """
        INSERT INTO land.finding (batch_id, rule_code, severity, commune_code, sheet_no,
                                  parcel_no, message, detail, location)
        SELECT %(batch)s, 'CERT_CHANGED', %(severity)s, v.commune_code, v.sheet_no, v.parcel_no,
               format('parcel %%s/%%s/%%s holds certificate %%s (issued %%s to %%s) and was %%s'
                      ' by this delivery: review it (landpipe review) before certifying again',
                      v.commune_code, v.sheet_no, v.parcel_no, cert.serial, cert.issued_on,
                      cert.holder, how.what),
               jsonb_build_object('certificate', cert.serial, 'change', how.what,
                                  'certified_version_id', cert.parcel_version_id),
               ST_PointOnSurface(v.geom)
        FROM (SELECT unnest(%(changed)s::bigint[]) AS version_id, 'changed' AS what
              UNION ALL SELECT unnest(%(retired)s::bigint[]), 'retired'
              UNION ALL SELECT n.id, 'added again' FROM land.parcel_version n
                        WHERE %(added)s AND n.batch_id = %(batch)s AND n.change = 'added') how
        JOIN land.parcel_version v ON v.id = how.version_id
        JOIN land.certificate cert
          ON (cert.commune_code, cert.sheet_no, cert.parcel_no)
           = (v.commune_code, v.sheet_no, v.parcel_no)
        """,
        {
            "batch": batch_id,
            "severity": severity,
            "changed": changed.tolist(),
            "retired": retired.tolist(),
            "added": added,
        },
    ).rowcount
