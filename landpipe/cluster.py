"""The embedded PostgreSQL + PostGIS cluster that landpipe runs when no database is configured.

The cluster lives in ``$LANDPIPE_HOME/pg``, listens only on a Unix socket, and is started on
demand and reused by later commands. PostgreSQL refuses to run as root, so when landpipe runs
as root the cluster belongs to the ``postgres`` system user (created by Debian's packages) and
every server program is run through ``runuser``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from landpipe.errors import ConfigError, DatabaseError

DATABASE = "landpipe"
SUPERUSER = "landpipe"
PORT = 5432
#: The Unix socket path must fit in ``sockaddr_un`` (107 bytes on Linux).
_MAX_SOCKET_PATH = 100

#: Server settings for a single-machine load server; the rest stay at PostgreSQL's defaults.
SERVER_SETTINGS = {
    "listen_addresses": "''",
    "port": str(PORT),
    "unix_socket_permissions": "0770",
    "shared_buffers": "256MB",
    "work_mem": "64MB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "4GB",
    # No replicas and no WAL archive: a loader's COPY into a table it created or emptied in the
    # same transaction, and the indexes it builds there, then write no WAL (the files are
    # synced at commit instead). Backups are pg_dump's. A production server keeps its own.
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "checkpoint_timeout": "15min",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "logging_collector": "off",
}


@dataclass(frozen=True)
class Cluster:
    """One embedded cluster: its folders, the programs that run it and the user it runs as."""

    root: Path
    bindir: Path
    run_as: str | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        """The socket folder: under the root, or a short path in /tmp when the root is deep."""
        own = self.root / "run"
        if len(str(own)) + len(f"/.s.PGSQL.{PORT}") <= _MAX_SOCKET_PATH:
            return own
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"landpipe-{digest}"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the cluster's ``landpipe`` database over the Unix socket."""
        return f"postgresql+psycopg://{SUPERUSER}@/{DATABASE}?host={self.socket_dir}&port={PORT}"

    def conninfo(self, dbname: str = DATABASE) -> str:
        """libpq connection string for ``dbname`` on this cluster."""
        return f"host={self.socket_dir} port={PORT} user={SUPERUSER} dbname={dbname}"


def find_bindir(configured: Path | None = None) -> Path:
    """Find PostgreSQL's server programs, preferring a version that has PostGIS installed.

    Raises
    ------
    ConfigError
        When no ``initdb`` can be found.
    """
    if configured is not None:
        if not (configured / "initdb").exists():
            raise ConfigError(f"LANDPIPE_PG_BINDIR={configured} has no initdb")
        return configured
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        reverse=True,
    )
    for initdb in candidates:
        version = initdb.parent.parent.name
        if Path(f"/usr/share/postgresql/{version}/extension/postgis.control").exists():
            return initdb.parent
    if candidates:
        return candidates[0].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise ConfigError(
        "PostgreSQL server programs not found: run `make setup` (installs postgresql-postgis), "
        "or set LANDPIPE_DATABASE_URL to an existing PostGIS"
    )


#: Where a root-run installation keeps its cluster when the ``postgres`` user cannot reach
#: LANDPIPE_HOME (e.g. a home under /root): one folder per LANDPIPE_HOME.
FALLBACK_ROOT = Path("/var/lib/landpipe/clusters")


def _searchable_by(account: pwd.struct_passwd, path: Path) -> bool:
    """Whether ``account`` can traverse every existing folder on the way to ``path``."""
    for folder in [path, *path.parents]:
        if not folder.exists():
            continue
        info = folder.stat()
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid == account.pw_gid or info.st_gid in os.getgrouplist(
            account.pw_name, account.pw_gid
        ):
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return False
    return True


def cluster_for(home: Path, bindir: Path | None = None) -> Cluster:
    """Describe the embedded cluster of the installation at ``home`` (nothing is started).

    The cluster lives in ``home/pg``. As root it runs as the ``postgres`` user; when that user
    cannot reach ``home``, the cluster lives in ``FALLBACK_ROOT/<hash of home>`` instead.
    """
    root = home / "pg"
    run_as = None
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError as err:
            raise ConfigError(
                "running as root needs the `postgres` system user for the embedded cluster "
                "(PostgreSQL refuses to run as root): install postgresql, or run as another user"
            ) from err
        run_as = account.pw_name
        if not _searchable_by(account, home):
            digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
            root = FALLBACK_ROOT / digest
    return Cluster(root=root, bindir=find_bindir(bindir), run_as=run_as)


def _run(
    cluster: Cluster, args: Sequence[str], *, check: bool = True
) -> subprocess.CompletedProcess:
    command = [str(cluster.bindir / args[0]), *args[1:]]
    if cluster.run_as:
        command = ["runuser", "-u", cluster.run_as, "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise DatabaseError(f"{args[0]} failed: {detail[-1] if detail else result.returncode}")
    return result


def _prepare_dir(cluster: Cluster, path: Path, mode: int = 0o700) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if cluster.run_as:
        account = pwd.getpwnam(cluster.run_as)
        os.chown(path, account.pw_uid, account.pw_gid)


@contextlib.contextmanager
def _locked(cluster: Cluster) -> Iterator[None]:
    """Serialise start/stop of one cluster between processes."""
    cluster.root.parent.mkdir(parents=True, exist_ok=True)
    with open(cluster.root.parent / f"{cluster.root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_initialised(cluster: Cluster) -> bool:
    return (cluster.data_dir / "PG_VERSION").exists()


def is_running(cluster: Cluster) -> bool:
    if not is_initialised(cluster):
        return False
    return (
        _run(cluster, ["pg_ctl", "status", "-D", str(cluster.data_dir)], check=False).returncode
        == 0
    )


def _initialise(cluster: Cluster) -> None:
    _prepare_dir(cluster, cluster.root, 0o755)
    _prepare_dir(cluster, cluster.data_dir)
    _run(
        cluster,
        [
            "initdb",
            "-D",
            str(cluster.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
        ],
    )


#: The file of :data:`SERVER_SETTINGS` in the data folder, written at every start, so that a
#: cluster made by an earlier landpipe gets the settings of this one.
_SETTINGS_FILE = "landpipe.conf"
_INCLUDE = f"include_if_exists = '{_SETTINGS_FILE}'"


def _write_settings(cluster: Cluster) -> None:
    """Write :data:`SERVER_SETTINGS` for the next start, and include them last in
    ``postgresql.conf``, where later lines win (``ALTER SYSTEM`` settings, in
    ``postgresql.auto.conf``, still win over them)."""
    settings = cluster.data_dir / _SETTINGS_FILE
    settings.write_text(
        "# written by landpipe at each start of its embedded cluster: edits are lost\n"
        + "".join(f"{name} = {value}\n" for name, value in SERVER_SETTINGS.items())
    )
    settings.chmod(0o644)
    if cluster.run_as:
        account = pwd.getpwnam(cluster.run_as)
        os.chown(settings, account.pw_uid, account.pw_gid)
    conf = cluster.data_dir / "postgresql.conf"
    lines = conf.read_text().splitlines()
    if not lines or lines[-1] != _INCLUDE:
        with conf.open("a") as handle:
            handle.write(f"\n# landpipe embedded cluster\n{_INCLUDE}\n")


def start(cluster: Cluster) -> bool:
    """Start the cluster, creating it and its database first if needed.

    Returns
    -------
    bool
        True when this call started the server, False when it was already running.
    """
    with _locked(cluster):
        if not is_initialised(cluster):
            _initialise(cluster)
        if is_running(cluster):
            return False
        _write_settings(cluster)
        _prepare_dir(cluster, cluster.socket_dir, 0o755)
        if not cluster.log_file.exists():
            cluster.log_file.touch()
        if cluster.run_as:
            account = pwd.getpwnam(cluster.run_as)
            os.chown(cluster.log_file, account.pw_uid, account.pw_gid)
        result = _run(
            cluster,
            [
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(cluster.data_dir),
                "-l",
                str(cluster.log_file),
                "-o",
                f"-k {cluster.socket_dir}",
            ],
            check=False,
        )
        if result.returncode != 0:
            tail = cluster.log_file.read_text(errors="replace").strip().splitlines()[-1:]
            raise DatabaseError(
                "the embedded PostgreSQL did not start "
                f"({'; '.join(tail) or result.stderr.strip()}); log: {cluster.log_file}"
            )
        _ensure_database(cluster)
        return True


def _ensure_database(cluster: Cluster) -> None:
    import psycopg

    with psycopg.connect(cluster.conninfo("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')


def stop(cluster: Cluster) -> bool:
    """Stop the cluster (fast shutdown). Returns False when it was not running."""
    with _locked(cluster):
        if not is_running(cluster):
            return False
        _run(cluster, ["pg_ctl", "stop", "-w", "-m", "fast", "-D", str(cluster.data_dir)])
        return True


def status(cluster: Cluster) -> str:
    """One word: ``running``, ``stopped`` or ``absent`` (not yet created)."""
    if not is_initialised(cluster):
        return "absent"
    return "running" if is_running(cluster) else "stopped"
