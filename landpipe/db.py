"""The one engine factory: a SQLAlchemy engine on the configured PostGIS or the embedded one."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from landpipe import cluster as embedded
from landpipe.config import Settings
from landpipe.errors import ConfigError, DatabaseError

#: Session settings every connection gets on checkout: UTC timestamps, exact floats.
SESSION_SETTINGS = ("SET TIME ZONE 'UTC'", "SET extra_float_digits = 3")


def database_url(settings: Settings, *, start: bool = True) -> str:
    """The SQLAlchemy URL in use: the configured one, else the embedded cluster's.

    With ``start`` the embedded cluster is created and started when it is not running.
    """
    if settings.database_url:
        return settings.database_url
    cluster = embedded.cluster_for(settings.home, settings.pg_bindir)
    if start:
        embedded.start(cluster)
    return cluster.url


def make_engine(settings: Settings, *, url: str | None = None) -> Engine:
    """Create the engine landpipe uses everywhere, starting the embedded cluster if needed."""
    target = url or database_url(settings)
    try:
        engine = sa.create_engine(target, pool_pre_ping=True, future=True)
    except (sa.exc.ArgumentError, ValueError) as err:  # not a URL, or an unknown driver
        raise ConfigError(f"not a database URL: {target!r} ({err})") from err

    @sa.event.listens_for(engine, "connect")
    def _session_settings(dbapi_connection, _record) -> None:
        with dbapi_connection.cursor() as cursor:
            for statement in SESSION_SETTINGS:
                cursor.execute(statement)
        dbapi_connection.commit()

    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as err:
        raise DatabaseError.of(f"cannot connect to {engine.url.render_as_string()}", err) from err
    return engine


def lock_communes(
    conn, commune_codes: list[str], *, waiting: Callable[[str], None] | None = None
) -> None:
    """Wait for, then hold until the transaction ends, the locks of some communes' parcels,
    in the order of their codes, in one statement.

    Loads, revalidations, reviews and the recording of a certificate on one commune take it,
    so they run one after the other; work on different communes runs side by side. Every
    load takes its locks in the same order, so two loads never deadlock over them. One
    statement makes one round trip, however many the communes, which a load waits for no
    longer than it must while its background checks hold the interpreter. ``conn`` is a
    psycopg connection in a transaction.

    ``waiting(code)``, if given, is called before waiting for the lock of a commune that
    another transaction holds (a person's command says so instead of seeming to hang behind
    a long load); the locks are then tried one by one first.
    """
    codes = sorted(commune_codes)
    if waiting is not None:
        for i, code in enumerate(codes):
            if not conn.execute(_TRY_LOCK, [code]).fetchone()[0]:
                waiting(code)
                codes = codes[i:]
                break
        else:
            return
    conn.execute(
        "SELECT count(pg_advisory_xact_lock(hashtext('landpipe:commune:' || c)))"
        " FROM unnest(%s::text[]) AS c",  # one after the other, in the array's order
        [codes],
    )


_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('landpipe:commune:' || %s))"
