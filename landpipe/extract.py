"""What a district land office needs from the register to issue a certificate on one parcel.

A cadastral extract (*trích lục bản đồ địa chính*, TT 25/2014 Phụ lục 13) and the parcel
diagram of a certificate (TT 10/2024 Phụ lục 03) hold the parcel's key and place, area, land
use, user and address, a coordinate table of its vertices with the length of each edge, and the
numbers of its neighbours (``shared/DOMAIN.md``). :func:`parcel_extract` gathers those for the
current version of a parcel, with what decides whether a certificate can be issued on it now:
whether it is in ``land.parcel_ready``, the findings in force on it, and the certificates
already issued on it. The coordinate table and the neighbours are the SQL functions
``land.parcel_vertices`` and ``land.parcel_neighbours`` (``sql/110_parcel_diagram.sql``), which
district offices can call themselves.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from landpipe.errors import DatabaseError

_PARCEL = """
SELECT d.commune_code, d.sheet_no, d.parcel_no, d.commune_name, d.district_code,
       d.district_name, province.name AS province_name, d.area_m2, d.declared_area_m2,
       d.legal_area_m2, d.land_use_codes, d.owner_name, d.address, d.id AS version_id,
       date_trunc('second', d.loaded_at) AS current_since, d.batch_id, d.blocked,
       EXISTS (SELECT FROM land.parcel_ready r WHERE r.id = d.id) AS ready,
       ARRAY(SELECT coalesce(u.name_vi, c.code)
             FROM unnest(d.land_use_codes) WITH ORDINALITY AS c (code, n)
             LEFT JOIN land.land_use_code u ON u.code = c.code ORDER BY c.n) AS land_use_names,
       ARRAY(SELECT code FROM unnest(d.land_use_codes) AS code
             WHERE code NOT IN (SELECT u.code FROM land.land_use_code u)) AS unknown_land_use
FROM land.parcel_detail d
LEFT JOIN land.admin_unit district ON district.code = d.district_code
LEFT JOIN land.admin_unit province ON province.code = district.parent_code
WHERE (d.commune_code, d.sheet_no, d.parcel_no) = (:commune, :sheet, :parcel)
"""
#: Findings in force on the current version: made on it or later, not closed since, naming
#: the parcel as theirs or as the other parcel of a pair (as ``land.parcel_detail`` reads them).
#: ``rejected_record``: the finding is on a delivered record of the key that was not loaded
#: (the parcel's registered version stayed).
_FINDINGS = """
SELECT rule_code, severity, message, batch_id, rejected_record
FROM land.parcel_findings(:commune, :sheet, :parcel)
"""
_CERTIFICATES = """
SELECT serial, holder, issued_on, parcel_version_id = :version AS on_current_version
FROM land.certificate
WHERE (commune_code, sheet_no, parcel_no) = (:commune, :sheet, :parcel)
ORDER BY issued_on, serial
"""
_VERTICES = """
SELECT vertex_no, part, ring, x_m, y_m, to_next_m
FROM land.parcel_vertices(:commune, :sheet, :parcel)
"""
_NEIGHBOURS = """
SELECT commune_code, sheet_no, parcel_no, shared_m
FROM land.parcel_neighbours(:commune, :sheet, :parcel)
"""
_UNLOADED_NEIGHBOURS = """
SELECT batch_id, source_row, rule_codes, commune_code, sheet_no, parcel_no, shared_m
FROM land.unloaded_neighbours(:commune, :sheet, :parcel)
"""
#: Delivered records of a key that were not loaded, latest first.
_REJECTED = """
SELECT r.batch_id, r.source_row, r.rule_codes,
       EXISTS (SELECT FROM land.unloaded_record u WHERE u.id = r.id) AS standing
FROM land.rejected_record r
WHERE (r.commune_code, r.sheet_no, r.parcel_no) = (:commune, :sheet, :parcel)
ORDER BY r.batch_id DESC, r.source_row
"""
#: The latest version of a key that has none current: when and by which batch it was retired.
_RETIRED = """
SELECT valid_to, retired_batch_id FROM land.parcel_version
WHERE (commune_code, sheet_no, parcel_no) = (:commune, :sheet, :parcel)
ORDER BY valid_from DESC LIMIT 1
"""


#: The ``CERT_CHANGED`` findings in force on a parcel key: the flags a review closes.
_OPEN_FLAGS = """
SELECT id, batch_id, detail ->> 'certificate' AS certificate, detail ->> 'change' AS change
FROM land.finding
WHERE rule_code = 'CERT_CHANGED' AND closed_by_batch_id IS NULL
  AND (commune_code, sheet_no, parcel_no) = (:commune, :sheet, :parcel)
ORDER BY id
"""


def parcel_extract(engine: Engine, commune: str, sheet: int, parcel: int) -> dict[str, Any]:
    """The extract of the current parcel ``commune``/``sheet``/``parcel``, as JSON-able values
    (areas and coordinates as decimal strings, as the register holds them).

    ``"found"`` is False when the key has no current parcel; ``"retired"`` then says when and
    by which batch its last version was retired, if it ever had one, and
    ``"certificate_flags"`` lists the ``CERT_CHANGED`` findings in force on the key (id,
    batch, certificate, change) that a review closes. ``"rejected"`` lists the
    delivered records of the key that were not loaded (batch, row, rules; ``standing``: the
    record still stands for a parcel the register lacks, see ``land.unloaded_record``).
    Times are in Vietnam's time (UTC+7).
    """
    key = {"commune": commune, "sheet": sheet, "parcel": parcel}
    with engine.connect() as connection:
        # One snapshot for the parcel, its findings, certificates and diagram.
        connection.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        return _extract(connection, key)


def _extract(connection: sa.Connection, key: dict[str, Any]) -> dict[str, Any]:
    """:func:`parcel_extract` read on ``connection``, in its transaction."""
    connection.execute(sa.text("SET LOCAL TIME ZONE 'Asia/Ho_Chi_Minh'"))
    row = connection.execute(sa.text(_PARCEL), key).mappings().first()
    rejected = [dict(r) for r in connection.execute(sa.text(_REJECTED), key).mappings()]
    if row is None:
        retired = connection.execute(sa.text(_RETIRED), key).mappings().first()
        # A certified parcel retired: the flags a review closes (landpipe review).
        flags = [dict(f) for f in connection.execute(sa.text(_OPEN_FLAGS), key).mappings()]
        return _json(
            {
                "found": False,
                "key": key,
                "retired": None
                if retired is None
                else {"at": retired["valid_to"], "batch": retired["retired_batch_id"]},
                "rejected": rejected,
                "certificate_flags": flags,
            }
        )
    parcel_row = dict(row)
    findings = connection.execute(sa.text(_FINDINGS), key).mappings()
    findings = [dict(f) for f in findings]
    certificates = connection.execute(
        sa.text(_CERTIFICATES), {**key, "version": parcel_row["version_id"]}
    ).mappings()
    certificates = [dict(c) for c in certificates]
    vertices = [dict(v) for v in connection.execute(sa.text(_VERTICES), key).mappings()]
    neighbours = [dict(n) for n in connection.execute(sa.text(_NEIGHBOURS), key).mappings()]
    unloaded = [dict(n) for n in connection.execute(sa.text(_UNLOADED_NEIGHBOURS), key).mappings()]
    reasons = []
    if parcel_row["blocked"]:
        # Which rules: those of the block findings in force, and of reject findings on the
        # registered parcel itself (a revalidation's), as land.parcel_detail reads them.
        rules = sorted(
            {
                f["rule_code"]
                for f in findings
                if f["severity"] == "block"
                or (f["severity"] == "reject" and not f["rejected_record"])
            }
        )
        reasons.append("an open block finding" + (f" ({', '.join(rules)})" if rules else ""))
        flagged = [f["batch_id"] for f in findings if f["rule_code"] == "CERT_CHANGED"]
        if flagged:  # what the person who reviews the change runs afterwards
            reasons.append(
                f"its certificate to review against batch {max(flagged)}'s change (landpipe"
                f" review {key['commune']} {key['sheet']} {key['parcel']} --batch {max(flagged)})"
            )
    if not parcel_row["owner_name"]:
        reasons.append("no owner")
    elif not any(character.isalpha() for character in parcel_row["owner_name"]):
        reasons.append(f"no owner's name (the owner is {parcel_row['owner_name']!r})")
    if not parcel_row["land_use_codes"]:
        reasons.append("no land-use code")
    if parcel_row["unknown_land_use"]:
        reasons.append("unknown land-use code " + ", ".join(parcel_row["unknown_land_use"]))
    issued = [c["serial"] for c in certificates if c["on_current_version"]]
    if issued:
        reasons.append("certificate " + ", ".join(issued) + " issued on this version")
    if unloaded:
        reasons.append(
            "a neighbouring delivered record was not loaded ("
            + "; ".join(f"batch {n['batch_id']} row {n['source_row']}" for n in unloaded)
            + "): the diagram cannot name it"
        )
    return _json(
        {
            "found": True,
            "key": key,
            "parcel": {k: v for k, v in parcel_row.items() if k not in ("ready", "blocked")},
            "ready": parcel_row["ready"],
            "not_ready_because": reasons,
            "findings": findings,
            "certificates": certificates,
            "neighbours": neighbours,
            "unloaded_neighbours": unloaded,
            "rejected": rejected,
            "vertices": vertices,
        }
    )


def _certified_with(connection: sa.Connection, serial: str) -> dict[str, Any] | None:
    """The key of the parcel certificate ``serial`` is recorded on, if it is."""
    row = connection.execute(
        sa.text(
            "SELECT commune_code, sheet_no, parcel_no FROM land.certificate WHERE serial = :serial"
        ),
        {"serial": serial},
    ).first()
    return None if row is None else {"commune": row[0], "sheet": row[1], "parcel": row[2]}


_CERTIFIABLE = """
SELECT d.id, d.owner_name, EXISTS (SELECT FROM land.parcel_ready r WHERE r.id = d.id)
FROM land.parcel_detail d
WHERE (d.commune_code, d.sheet_no, d.parcel_no) = (:commune, :sheet, :parcel)
"""
#: The record, dated when it is made (after waiting for the commune's lock, not when the
#: transaction began); issued today in Vietnam unless said otherwise.
_CERTIFY = """
INSERT INTO land.certificate (serial, commune_code, sheet_no, parcel_no, parcel_version_id,
                              holder, issued_on, recorded_at)
VALUES (:serial, :commune, :sheet, :parcel, :version, :holder,
        coalesce(:issued, (clock_timestamp() AT TIME ZONE 'Asia/Ho_Chi_Minh')::date),
        clock_timestamp())
ON CONFLICT (serial) DO NOTHING
RETURNING issued_on
"""
#: Longest serial and holder taken: a serial is two letters and six digits (e.g. CS 000123).
MAX_SERIAL = 40
MAX_HOLDER = 400
_SPACES = re.compile(r"\s+")


def certificate_text(value: str, what: str, longest: int) -> str:
    """``value`` as the register keeps a certificate's text: NFC, runs of white space (line
    breaks and tabs included) as one space, trimmed; ValueError when it is blank, longer than
    ``longest``, holds another control character or is no Unicode text."""
    text = _SPACES.sub(" ", unicodedata.normalize("NFC", value)).strip()
    if not text:
        raise ValueError(f"{what} is blank")
    if len(text) > longest:
        raise ValueError(f"{what} is longer than {longest} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise ValueError(f"{what} holds a control character")
    if any(unicodedata.category(c) in ("Cs", "Co", "Cn") for c in text):
        # Bytes that were no UTF-8 reach Python as lone surrogates: a terminal in another
        # encoding (TCVN3, VNI, Windows-1258).
        raise ValueError(f"{what} is not Unicode text (a terminal in another encoding?)")
    return text


def serial_text(value: str, what: str = "the serial") -> str:
    """A certificate's serial as the register keeps it: :func:`certificate_text`, of its
    compatibility form (NFKC: full-width letters, digits and spaces, as some input methods
    type them, as their plain forms), in capitals; so one serial is not taken for two."""
    return certificate_text(unicodedata.normalize("NFKC", value), what, MAX_SERIAL).upper()


def record_certificate(
    engine: Engine,
    commune: str,
    sheet: int,
    parcel: int,
    *,
    serial: str,
    holder: str | None = None,
    issued_on: date | None = None,
    waiting: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Record that certificate ``serial`` was issued on the current version of a parcel, to
    ``holder`` (the parcel's owner by default) on ``issued_on`` (today in Vietnam by default):
    only if the parcel is ready for one (``land.parcel_ready``) and the serial is new.

    ``serial`` and ``holder`` are kept as :func:`serial_text` and :func:`certificate_text` make
    them (``cs  000123`` and ``ＣＳ　000123`` are ``CS 000123``). Holds the commune's lock
    (:func:`landpipe.db.lock_communes`) meanwhile, so no load of the commune changes the
    parcel between the check and the record. Returns ``"recorded"`` and, when it was not,
    why: ``"found"`` False (no current parcel), ``"serial_taken"`` (the key of the parcel it
    was recorded on) or ``"not_ready_because"``. Raises ValueError on unusable text.
    ``waiting`` is called if the lock is held by another transaction, before waiting for it.
    """
    from landpipe.db import lock_communes

    serial = serial_text(serial)
    if holder is not None:
        holder = certificate_text(holder, "the holder", MAX_HOLDER)
    key = {"commune": commune, "sheet": sheet, "parcel": parcel}
    result: dict[str, Any] = {"recorded": False, "serial": serial, "key": key}
    try:
        with engine.connect() as connection, connection.begin():
            lock_communes(connection.connection.driver_connection, [commune], waiting=waiting)
            row = connection.execute(sa.text(_CERTIFIABLE), key).first()
            result["found"] = row is not None
            if row is None:
                return result
            version_id, owner, ready = row
            taken = _certified_with(connection, serial)
            if taken is not None:
                result["serial_taken"] = taken
                return result
            if not ready:  # why, read in this transaction, under the lock
                result["not_ready_because"] = _extract(connection, key)["not_ready_because"]
                return result
            holder = holder or owner
            # The serial may be recorded meanwhile on a parcel of another commune, under that
            # commune's lock: the insert then waits for it, and records nothing.
            inserted = connection.execute(
                sa.text(_CERTIFY),
                {**key, "serial": serial, "version": version_id, "holder": holder,
                 "issued": issued_on},
            ).first()  # fmt: skip
            if inserted is None:
                result["serial_taken"] = _certified_with(connection, serial)
                return result
            issued = inserted[0]
    except sa.exc.SQLAlchemyError as err:
        raise DatabaseError.of(f"cannot record certificate {serial}", err) from err
    result.update(recorded=True, version_id=version_id, holder=holder, issued_on=issued)
    return _json(result)


_REVIEW = """
INSERT INTO land.batch (kind, status, commune_code, started_at, finished_at, reviewed_by, note,
                        n_closed)
VALUES ('review', 'reviewed', :commune, clock_timestamp(), clock_timestamp(), :by, :note, :n)
RETURNING id
"""
MAX_NOTE = 2000


def review_certificate_change(
    engine: Engine,
    commune: str,
    sheet: int,
    parcel: int,
    *,
    flagged_by: int,
    by: str,
    note: str,
    waiting: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Close the ``CERT_CHANGED`` findings in force on a parcel key: ``by`` compared the
    change that batch ``flagged_by`` made (or the retirement) with the certificate issued on
    the parcel, and wrote what they found in ``note``.

    ``flagged_by`` must be the latest batch that flagged the key: a change made after the
    one reviewed (a load that committed since the reviewer looked, or that the review waited
    for) was not reviewed, so nothing is closed then. The review is a batch of kind
    ``review`` (``sql/140_reviews.sql``) that closes those findings and nothing else: a
    parcel still held by another finding stays so. Holds the commune's lock
    (:func:`landpipe.db.lock_communes`), so no load of the commune flags or closes findings
    of the parcel meanwhile.

    Returns ``"reviewed"``; ``"open"``, the flags in force before (finding, batch that made
    it, certificate, change), and ``"latest"``, the latest batch among them; and when it was
    reviewed, the review's ``"batch"`` and, for a current parcel, whether it is ready for a
    certificate now and why not. ``by`` and ``note`` are kept as :func:`certificate_text`
    makes them; raises ValueError on unusable text. ``waiting`` is as for
    :func:`record_certificate`.
    """
    from landpipe.db import lock_communes

    by = certificate_text(by, "the reviewer", MAX_HOLDER)
    note = certificate_text(note, "the note", MAX_NOTE)
    key = {"commune": commune, "sheet": sheet, "parcel": parcel}
    result: dict[str, Any] = {
        "reviewed": False, "key": key, "flagged_by": flagged_by, "by": by, "note": note,
    }  # fmt: skip
    try:
        with engine.connect() as connection, connection.begin():
            lock_communes(connection.connection.driver_connection, [commune], waiting=waiting)
            found = [
                dict(row)
                for row in connection.execute(sa.text(_OPEN_FLAGS + "FOR UPDATE"), key).mappings()
            ]
            result["open"] = [
                {"finding": f["id"], "made_by_batch": f["batch_id"],
                 "certificate": f["certificate"], "change": f["change"]}
                for f in found
            ]  # fmt: skip
            result["latest"] = max((f["batch_id"] for f in found), default=None)
            if result["latest"] != flagged_by:
                return result
            batch = connection.execute(
                sa.text(_REVIEW), {"commune": commune, "by": by, "note": note, "n": len(found)}
            ).scalar_one()
            connection.execute(
                sa.text("UPDATE land.finding SET closed_by_batch_id = :batch WHERE id = ANY(:ids)"),
                {"batch": batch, "ids": [f["id"] for f in found]},
            )
            now = _extract(connection, key)  # as the review leaves it, in this transaction
    except sa.exc.SQLAlchemyError as err:
        raise DatabaseError.of(f"cannot review parcel {commune}/{sheet}/{parcel}", err) from err
    result.update(reviewed=True, batch=batch, current=now["found"])
    if now["found"]:
        result.update(ready=now["ready"], not_ready_because=now["not_ready_because"])
    return _json(result)


#: Where Vietnam lies, in WGS 84 degrees: a point outside was typed wrong.
VIETNAM_LATITUDES = (8.0, 24.0)
VIETNAM_LONGITUDES = (102.0, 118.0)


def find_parcels(
    engine: Engine,
    *,
    owner: str | None = None,
    latlon: tuple[float, float] | None = None,
    xy: tuple[float, float] | None = None,
    within_m: float = 0.0,
    commune: str | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], bool]:
    """Current parcels whose owner's name holds ``owner`` (``land.parcels_of_owner``: case,
    diacritics and Unicode normalization ignored), or at a point (``land.parcels_near``):
    ``latlon`` in WGS 84 as a phone shows it (latitude, longitude), or ``xy`` in VN-2000 as a
    certificate writes it (X northing, Y easting); the parcel holding the point, or those within
    ``within_m`` metres, nearest first. At most ``limit``, as JSON-able values, and whether
    there were more.
    """
    if owner is not None:
        sql = "SELECT * FROM land.parcels_of_owner(:owner, :commune) LIMIT :limit"
        params: dict[str, Any] = {"owner": owner, "commune": commune, "limit": limit}
    else:
        if latlon is not None:
            (y, x), srid = latlon, 4326
        elif xy is not None:
            (y, x), srid = xy, 9218
        else:
            raise ValueError("give an owner or a point")
        sql = (
            "SELECT * FROM land.parcels_near(:x, :y, :srid, :within)"
            " WHERE CAST(:commune AS text) IS NULL OR commune_code = :commune LIMIT :limit"
        )
        params = {"x": x, "y": y, "srid": srid, "within": within_m, "commune": commune}
        params["limit"] = limit
    try:
        with engine.connect() as connection:
            # A search's cost estimate sets off JIT, which took longer than the search.
            connection.execute(sa.text("SET LOCAL jit = off"))
            found = connection.execute(sa.text(sql), {**params, "limit": limit + 1}).mappings()
            parcels = [_json(dict(row)) for row in found]
            return parcels[:limit], len(parcels) > limit
    except sa.exc.DBAPIError as err:
        raise DatabaseError.of("cannot search the register", err) from err


def _json(value: Any) -> Any:
    """``value`` with decimals, dates and times as strings, as JSON carries them."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
