"""Merge a delivery's parcels into the register, keeping every version (``land.parcel_version``).

Runs inside the load's transaction. Parcels are streamed with binary ``COPY`` into a temporary
staging table and merged with set-based SQL against the current versions of the sheets the
delivery covers:

- a key new to the register is **added**;
- a key whose geometry, land-use codes, areas, owner or address differ is **changed**: its
  current version is closed and a new one opened, linked by ``previous_version_id``;
- a key with the same content is **unchanged** (no new version);
- a current parcel of a covered sheet whose key the delivery no longer has is **retired**.
  A key the delivery carries but whose record was rejected is neither changed nor retired.

Retired parcels are linked to the added parcels that cover their area (``land.parcel_lineage``):
splits and merges. A changed or retired parcel that holds a certificate gets a ``CERT_CHANGED``
finding, which blocks it until reviewed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from landpipe import schemas
from landpipe.schemas import parcel as canonical
from landpipe.sources import Delivery
from landpipe.sources.fields import attribute_json
from landpipe.validate import Validation

#: A retired parcel is an ancestor of an added one when they share more than this many m²
#: and more than this share of the smaller of the two.
LINEAGE_MIN_AREA_M2 = 1.0
LINEAGE_MIN_SHARE = 0.01

_STAGING = """
CREATE TEMP TABLE parcel_in (
    commune_code text, sheet_no integer, parcel_no integer, land_use_codes text[],
    declared_area_m2 float8, legal_area_m2 float8, owner_name text, address text,
    attributes text, geom geometry(MultiPolygon, 9218)
) ON COMMIT DROP;
CREATE TEMP TABLE delivered_key (
    commune_code text, sheet_no integer, parcel_no integer
) ON COMMIT DROP;
CREATE TEMP TABLE merge_changed (old_id bigint PRIMARY KEY) ON COMMIT DROP;
CREATE TEMP TABLE merge_retired (old_id bigint PRIMARY KEY) ON COMMIT DROP;
"""

#: Content that makes a parcel changed when it differs.
_SAME_CONTENT = """
    c.geom = s.geom
    AND c.land_use_codes = s.land_use_codes
    AND c.declared_area_m2 IS NOT DISTINCT FROM s.declared_area_m2::numeric(14, 1)
    AND c.legal_area_m2 IS NOT DISTINCT FROM s.legal_area_m2::numeric(14, 1)
    AND c.owner_name IS NOT DISTINCT FROM s.owner_name
    AND c.address IS NOT DISTINCT FROM s.address
"""

_COLUMNS = (
    "commune_code, sheet_no, parcel_no, land_use_codes, declared_area_m2, legal_area_m2,"
    " owner_name, address, attributes, geom"
)


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
    keys = delivery.parcels[["commune_code", "sheet_no", "parcel_no"]].dropna()
    pairs = keys[["commune_code", "sheet_no"]].drop_duplicates()
    return sorted((str(c), int(s)) for c, s in pairs.itertuples(index=False))


def stage(conn, delivery: Delivery, validation: Validation) -> None:
    """Create the staging tables and stream the parcels and the delivered keys into them."""
    conn.execute(_STAGING)
    frame = validation.parcels
    geometries = shapely.to_wkb(
        shapely.set_srid(frame.geometry.values, canonical.STORAGE_EPSG), include_srid=True
    )
    rows = zip(
        frame["commune_code"].tolist(),
        frame["sheet_no"].astype("int64").tolist(),
        frame["parcel_no"].astype("int64").tolist(),
        frame["land_use_codes"].tolist(),
        _areas(frame["declared_area_m2"]),
        _areas(frame["legal_area_m2"]),
        _texts(frame["owner_name"]),
        _texts(frame["address"]),
        attribute_json(
            delivery.attributes, delivery.extra_fields, frame[canonical.SOURCE_ROW].to_numpy()
        ),
        geometries.tolist(),
        strict=True,
    )
    with conn.cursor().copy(f"COPY parcel_in ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(
            ["text", "int4", "int4", "text[]", "float8", "float8", "text", "text", "text", "bytea"]
        )
        for row in rows:
            copy.write_row(row)
    keys = delivery.parcels[["commune_code", "sheet_no", "parcel_no"]].dropna()
    with conn.cursor().copy(
        "COPY delivered_key (commune_code, sheet_no, parcel_no) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["text", "int4", "int4"])
        for code, sheet, number in keys.itertuples(index=False):
            copy.write_row((str(code), int(sheet), int(number)))
    conn.execute("ANALYZE parcel_in; ANALYZE delivered_key")


def merge(conn, batch_id: int) -> Changes:
    """Merge the staged parcels into the register as batch ``batch_id`` (see the module)."""
    changes = Changes()
    conn.execute(
        f"""
        INSERT INTO merge_changed (old_id)
        SELECT c.id
        FROM parcel_in s
        JOIN land.parcel_version c
          ON (c.commune_code, c.sheet_no, c.parcel_no) = (s.commune_code, s.sheet_no, s.parcel_no)
         AND c.valid_to IS NULL
        WHERE NOT ({_SAME_CONTENT})
        """
    )
    matched = conn.execute(
        """
        SELECT count(*) FROM parcel_in s JOIN land.parcel_version c
          ON (c.commune_code, c.sheet_no, c.parcel_no) = (s.commune_code, s.sheet_no, s.parcel_no)
         AND c.valid_to IS NULL
        """
    ).fetchone()[0]
    changes.changed = conn.execute("SELECT count(*) FROM merge_changed").fetchone()[0]
    changes.unchanged = matched - changes.changed
    changes.added = conn.execute(
        f"""
        INSERT INTO land.parcel_version ({_COLUMNS}, batch_id, valid_from, change)
        SELECT s.commune_code, s.sheet_no, s.parcel_no, s.land_use_codes, s.declared_area_m2,
               s.legal_area_m2, s.owner_name, s.address, s.attributes::jsonb,
               s.geom, %s, now(), 'added'
        FROM parcel_in s
        WHERE NOT EXISTS (
            SELECT 1 FROM land.parcel_version c
            WHERE (c.commune_code, c.sheet_no, c.parcel_no)
                = (s.commune_code, s.sheet_no, s.parcel_no) AND c.valid_to IS NULL)
        """,
        [batch_id],
    ).rowcount
    conn.execute(
        "UPDATE land.parcel_version v SET valid_to = now(), retired_batch_id = %s"
        " FROM merge_changed m WHERE v.id = m.old_id",
        [batch_id],
    )
    conn.execute(
        f"""
        INSERT INTO land.parcel_version
            ({_COLUMNS}, batch_id, valid_from, change, previous_version_id)
        SELECT s.commune_code, s.sheet_no, s.parcel_no, s.land_use_codes, s.declared_area_m2,
               s.legal_area_m2, s.owner_name, s.address, s.attributes::jsonb,
               s.geom, %s, now(), 'changed', c.id
        FROM merge_changed m
        JOIN land.parcel_version c ON c.id = m.old_id
        JOIN parcel_in s
          ON (c.commune_code, c.sheet_no, c.parcel_no) = (s.commune_code, s.sheet_no, s.parcel_no)
        """,
        [batch_id],
    )
    changes.retired = conn.execute(
        """
        WITH retired AS (
            UPDATE land.parcel_version v SET valid_to = now(), retired_batch_id = %s
            WHERE v.valid_to IS NULL
              AND (v.commune_code, v.sheet_no) IN
                  (SELECT DISTINCT commune_code, sheet_no FROM delivered_key)
              AND NOT EXISTS (
                  SELECT 1 FROM delivered_key k
                  WHERE (k.commune_code, k.sheet_no, k.parcel_no)
                      = (v.commune_code, v.sheet_no, v.parcel_no))
            RETURNING v.id
        )
        INSERT INTO merge_retired (old_id) SELECT id FROM retired
        """,
        [batch_id],
    ).rowcount
    if changes.retired and changes.added:
        conn.execute("ANALYZE merge_retired")
        _record_lineage(conn, batch_id)
    changes.certificates_flagged = _flag_certificates(conn, batch_id)
    return changes


def _record_lineage(conn, batch_id: int) -> None:
    """Link each retired parcel to the added parcels that cover part of its area."""
    conn.execute(
        """
        INSERT INTO land.parcel_lineage (parent_version_id, child_version_id, batch_id,
                                         shared_area_m2)
        SELECT r.id, n.id, %s, round(shared.area::numeric, 1)
        FROM merge_retired m
        JOIN land.parcel_version r ON r.id = m.old_id
        JOIN land.parcel_version n
          ON n.batch_id = %s AND n.change = 'added' AND n.geom && r.geom
        CROSS JOIN LATERAL (SELECT ST_Area(ST_Intersection(r.geom, n.geom)) AS area) shared
        WHERE shared.area > %s
          AND shared.area > %s * least(ST_Area(r.geom), ST_Area(n.geom))
        """,
        [batch_id, batch_id, LINEAGE_MIN_AREA_M2, LINEAGE_MIN_SHARE],
    )


def _flag_certificates(conn, batch_id: int) -> int:
    """A ``CERT_CHANGED`` finding for each certified parcel this batch changed or retired."""
    severity = schemas.rules()["CERT_CHANGED"].severity
    return conn.execute(
        """
        INSERT INTO land.finding (batch_id, rule_code, severity, commune_code, sheet_no,
                                  parcel_no, message, detail, location)
        SELECT %s, 'CERT_CHANGED', %s, v.commune_code, v.sheet_no, v.parcel_no,
               format('parcel %%s/%%s/%%s holds certificate %%s (issued %%s to %%s) and was %%s'
                      ' by this delivery: review before certifying again',
                      v.commune_code, v.sheet_no, v.parcel_no, cert.serial, cert.issued_on,
                      cert.holder, how.what),
               jsonb_build_object('certificate', cert.serial, 'change', how.what,
                                  'certified_version_id', cert.parcel_version_id),
               ST_PointOnSurface(v.geom)
        FROM (SELECT old_id, 'changed' AS what FROM merge_changed
              UNION ALL SELECT old_id, 'retired' FROM merge_retired) how
        JOIN land.parcel_version v ON v.id = how.old_id
        JOIN land.certificate cert
          ON (cert.commune_code, cert.sheet_no, cert.parcel_no)
           = (v.commune_code, v.sheet_no, v.parcel_no)
        """,
        [batch_id, severity],
    ).rowcount


def _areas(values: pd.Series) -> list[float | None]:
    rounded = values.astype("float64").round(1).to_numpy()
    return [None if np.isnan(v) else v for v in rounded.tolist()]


def _texts(values: pd.Series) -> list[str | None]:
    return [v if isinstance(v, str) else None for v in values.tolist()]
