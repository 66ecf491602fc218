"""The embedded cluster's commands and the migrations, on a real PostgreSQL + PostGIS."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from landpipe import cluster as embedded
from landpipe import schemas
from landpipe.config import Settings
from landpipe.db import make_engine
from landpipe.migrate import pending, sql_files, upgrade
from tests.conftest import REPO, run_cli


@pytest.fixture
def second_home() -> Path:
    """A second, independent installation (its own LANDPIPE_HOME and cluster)."""
    home = REPO / ".landpipe" / f"second-home-{os.getpid()}"
    yield home
    env = {**os.environ, "LANDPIPE_HOME": str(home)}
    env.pop("LANDPIPE_DATABASE_URL", None)
    run_cli("db", "stop", env=env)
    shutil.rmtree(embedded.cluster_for(home).root, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)


def test_db_commands_manage_an_independent_cluster(second_home):
    env = {**os.environ, "LANDPIPE_HOME": str(second_home)}
    env.pop("LANDPIPE_DATABASE_URL", None)
    status = run_cli("db", "status", env=env)
    assert status.returncode == 1 and "absent" in status.stdout

    started = run_cli("db", "start", env=env)
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout
    assert run_cli("db", "start", env=env).stdout.startswith("already running")

    url = run_cli("db", "url", env=env).stdout.strip().splitlines()[-1]
    assert url.startswith("postgresql+psycopg://") and "host=" in url
    assert f"host={embedded.cluster_for(second_home).socket_dir}&" in url

    upgraded = run_cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    engine = make_engine(Settings(database_url=url))
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM land.admin_unit")).scalar() == 132
    engine.dispose()

    assert run_cli("db", "status", env=env).stdout.startswith("embedded: running")
    assert run_cli("db", "stop", env=env).stdout.strip() == "stopped"
    stopped = run_cli("db", "status", env=env)
    assert stopped.returncode == 1 and "stopped" in stopped.stdout


def test_db_url_prints_the_configured_url(cli_env):
    result = run_cli("db", "url", env=cli_env)
    assert result.stdout.strip().splitlines()[-1] == cli_env["LANDPIPE_DATABASE_URL"]


def test_unreachable_database_is_one_clear_line(tmp_path):
    env = {**os.environ, "LANDPIPE_DATABASE_URL": f"postgresql://nobody@/x?host={tmp_path}"}
    result = run_cli("db", "upgrade", env=env)
    assert result.returncode == 4
    assert result.stderr.startswith("landpipe: cannot connect to")
    assert len(result.stderr.strip().splitlines()) == 1


def test_migrations_are_idempotent_and_recorded(engine):
    assert pending(engine) == []
    upgrade(engine)  # a second time changes nothing and fails on nothing
    with engine.connect() as connection:
        applied = connection.execute(sa.text("SELECT filename FROM land.migration ORDER BY 1"))
        assert [row[0] for row in applied] == [name for name, _ in sql_files()]


def test_sql_files_are_numbered_and_commented():
    for name, text in sql_files():
        assert name[:3].isdigit() and name[3] == "_", name
        assert text.lstrip().startswith("--"), f"{name} lacks a comment"


def test_storage_srid_and_reference_data(engine):
    with engine.connect() as connection:
        scalar = lambda sql: connection.execute(sa.text(sql)).scalar()  # noqa: E731
        assert scalar("SELECT count(*) FROM spatial_ref_sys WHERE srid = 9218") == 1
        assert scalar("SELECT count(*) FROM land.admin_unit WHERE level = 'commune'") == 121
        assert scalar("SELECT count(*) FROM land.admin_unit WHERE level = 'district'") == 10
        assert (
            scalar(
                "SELECT count(*) FROM land.admin_unit WHERE level = 'district' AND geom IS NOT NULL"
            )
            == 10
        )
        assert scalar("SELECT count(*) FROM land.land_use_code") == len(schemas.land_use_codes())
        assert scalar("SELECT count(*) FROM land.rule") == len(schemas.rules())
        # The Phan Thiết district, reprojected to VN-2000 / TM-3 108-30, holds the city centre.
        assert scalar(
            "SELECT ST_Contains(geom,"
            " ST_Transform(ST_SetSRID(ST_Point(108.10, 10.93), 4326), 9218))"
            " FROM land.admin_unit WHERE code = '593'"
        )


def test_parcel_table_has_the_public_columns(engine):
    with engine.connect() as connection:
        columns = dict(
            connection.execute(
                sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = 'land' AND table_name = 'parcel'"
                )
            ).all()
        )
        geometry = connection.execute(
            sa.text("SELECT type, srid FROM geometry_columns WHERE f_table_name = 'parcel'")
        ).one()
    assert columns["commune_code"] == "text"
    assert columns["sheet_no"] == columns["parcel_no"] == "integer"
    assert columns["land_use_codes"] == "ARRAY"
    for name in ("declared_area_m2", "area_m2", "owner_name", "address", "batch_id"):
        assert name in columns
    assert tuple(geometry) == ("MULTIPOLYGON", 9218)
