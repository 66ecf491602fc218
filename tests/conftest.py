"""Test fixtures: a real PostGIS (the embedded cluster), one database per session, and a real
Prefect server. A test that cannot reach PostGIS fails; nothing here skips."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from landpipe import cluster as embedded
from landpipe.config import Settings
from landpipe.db import make_engine
from landpipe.migrate import upgrade

REPO = Path(__file__).resolve().parents[1]
#: Where the test suite keeps its own embedded cluster (apart from the demo's .landpipe).
TEST_HOME = Path(os.environ.get("LANDPIPE_TEST_HOME", REPO / ".landpipe" / "test-home"))
DATA_TABLES = (
    "land.batch",
    "land.parcel_version",
    "land.parcel_lineage",
    "land.certificate",
    "land.finding",
    "land.rejected_record",
)


@pytest.fixture(scope="session")
def test_cluster() -> Iterator[embedded.Cluster]:
    """The suite's embedded PostGIS cluster, started (and created) on demand, and stopped at
    the end when this session started it: `make test` on a fresh checkout leaves no server
    running (one already running, a developer's, stays up)."""
    cluster = embedded.cluster_for(TEST_HOME)
    started = embedded.start(cluster)
    yield cluster
    if started:
        embedded.stop(cluster)


@pytest.fixture(scope="session")
def database_url(test_cluster: embedded.Cluster) -> Iterator[str]:
    """A fresh database for this session, upgraded to the current schema."""
    name = f"landpipe_test_{os.getpid()}"
    with psycopg.connect(test_cluster.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = test_cluster.url.replace(f"/{embedded.DATABASE}?", f"/{name}?")
    engine = make_engine(Settings(database_url=url))
    upgrade(engine)
    engine.dispose()
    yield url
    with psycopg.connect(test_cluster.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(database_url=database_url, home=tmp_path_factory.mktemp("landpipe-home"))


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[sa.Engine]:
    engine = make_engine(settings)
    yield engine
    engine.dispose()


def _truncate(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE"))


@pytest.fixture
def register(engine: sa.Engine) -> Iterator[sa.Engine]:
    """The session database, emptied of deliveries before and after the test."""
    _truncate(engine)
    yield engine
    _truncate(engine)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server for the session; flows in this process and in CLI runs use it."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "false",
    }
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"Prefect server did not start; see {home / 'server.log'}")
        time.sleep(0.5)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        yield url
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture
def cli_env(settings: Settings, prefect_api: str) -> dict[str, str]:
    """Environment for running the ``landpipe`` command against the test database."""
    return {
        **os.environ,
        "LANDPIPE_DATABASE_URL": settings.database_url,
        "LANDPIPE_HOME": str(settings.home),
        "PREFECT_API_URL": prefect_api,
    }


def run_cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``landpipe ARGS`` as a user would, from the venv of this interpreter."""
    command = [str(Path(sys.executable).with_name("landpipe")), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
