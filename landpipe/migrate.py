"""Create and upgrade the land register from the numbered SQL files in ``sql/``.

Every file is idempotent, so an upgrade runs them all in order, in one transaction, under an
advisory lock, and records each file's checksum in ``land.migration``. Then it reloads the
reference tables from the data files in ``schemas/``.
"""

from __future__ import annotations

import hashlib
import json
from importlib.resources import files

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from landpipe import schemas
from landpipe.errors import DatabaseError

#: Advisory lock key held while upgrading ("landpipe" in ASCII, truncated to bigint).
_UPGRADE_LOCK = 0x6C616E6470697065


def sql_files() -> list[tuple[str, str]]:
    """``(filename, text)`` of every SQL file, in the order they apply."""
    folder = files("landpipe.sql")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name, folder.joinpath(name).read_text(encoding="utf-8")) for name in names]


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pending(engine: Engine) -> list[str]:
    """SQL files not yet applied, or changed since they were."""
    with engine.connect() as connection:
        exists = connection.execute(sa.text("SELECT to_regclass('land.migration')")).scalar()
        applied = (
            dict(connection.execute(sa.text("SELECT filename, sha256 FROM land.migration")).all())
            if exists
            else {}
        )
    return [name for name, text in sql_files() if applied.get(name) != _checksum(text)]


def upgrade(engine: Engine) -> list[str]:
    """Apply every SQL file and reload the reference data; return the files that were pending."""
    todo = pending(engine)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK}
            )
            for name, text in sql_files():
                connection.exec_driver_sql(text)
                connection.execute(
                    sa.text(
                        "INSERT INTO land.migration (filename, sha256) VALUES (:name, :sha)"
                        " ON CONFLICT (filename) DO UPDATE"
                        " SET sha256 = excluded.sha256, applied_at = now()"
                    ),
                    {"name": name, "sha": _checksum(text)},
                )
            load_reference(connection)
    except sa.exc.DBAPIError as err:
        raise DatabaseError.of("database upgrade failed", err) from err
    return todo


def ensure_current(engine: Engine, *, upgrade_if_needed: bool) -> None:
    """Make sure the register's schema is current.

    The embedded cluster is upgraded on demand; a configured production database is not
    touched: the user is told to run ``landpipe db upgrade``.
    """
    todo = pending(engine)
    if not todo:
        return
    if not upgrade_if_needed:
        raise DatabaseError(
            f"the database schema is not current ({len(todo)} SQL files pending, first "
            f"{todo[0]}): run `landpipe db upgrade`"
        )
    upgrade(engine)


def load_reference(connection: Connection) -> None:
    """Upsert the reference tables from ``schemas/``: units, boundaries, land-use codes, rules."""
    units = sorted(schemas.admin_units().values(), key=lambda u: len(u["code"]))
    connection.execute(
        sa.text(
            "INSERT INTO land.admin_unit (code, name, unit_type, level, parent_code)"
            " VALUES (:code, :name, :type, :level, nullif(:parent_code, ''))"
            " ON CONFLICT (code) DO UPDATE SET name = excluded.name,"
            " unit_type = excluded.unit_type, level = excluded.level,"
            " parent_code = excluded.parent_code"
        ),
        units,
    )
    boundaries = [
        {"code": feature["properties"]["code"], "geojson": json.dumps(feature["geometry"])}
        for feature in schemas.district_boundaries()["features"]
    ]
    connection.execute(
        sa.text(
            "UPDATE land.admin_unit SET geom = ST_Multi(ST_Transform("
            "ST_SetSRID(ST_GeomFromGeoJSON(:geojson), 4326), 9218)) WHERE code = :code"
        ),
        boundaries,
    )
    connection.execute(
        sa.text(
            "INSERT INTO land.land_use_code"
            " (code, name_vi, land_group, parent_2024, list_2014, list_2024, confidence)"
            " VALUES (:code, :name_vi, :group, nullif(:parent_2024, ''), :list_2014,"
            " :list_2024 = 'yes', coalesce(nullif(:confidence, ''), 'L'))"
            " ON CONFLICT (code) DO UPDATE SET name_vi = excluded.name_vi,"
            " land_group = excluded.land_group, parent_2024 = excluded.parent_2024,"
            " list_2014 = excluded.list_2014, list_2024 = excluded.list_2024,"
            " confidence = excluded.confidence"
        ),
        list(schemas.land_use_codes().values()),
    )
    connection.execute(
        sa.text(
            "INSERT INTO land.rule (code, severity, description_en, description_vi)"
            " VALUES (:code, :severity, :en, :vi)"
            " ON CONFLICT (code) DO UPDATE SET severity = excluded.severity,"
            " description_en = excluded.description_en, description_vi = excluded.description_vi"
        ),
        [
            {"code": r.code, "severity": r.severity, "en": r.en, "vi": r.vi}
            for r in schemas.rules().values()
        ],
    )
