"""A local Prefect server kept running between landpipe commands.

Without a Prefect API configured (``PREFECT_API_URL``, or the active Prefect profile), each
Prefect flow run would start a temporary server of its own and stop it at the end: 3 to 4 s of
every ``landpipe load``, and about as much again for a server that answers its first requests
cold. A commune's delivery took 11 s to load so, of which the load itself took under one.

So landpipe starts one local server (``prefect server start``, on 127.0.0.1 and a free port,
without Prefect's background services, which only deployments need) the first time a command
needs one, and leaves it running, like the embedded PostGIS cluster: later commands find it and
use it. Its runs, logs and artifacts stay in Prefect's database under ``PREFECT_HOME`` as
before, and its UI shows them. ``landpipe db stop`` stops it (:func:`stop`).

What the server is, is kept in ``PREFECT_HOME/landpipe-server.json`` (its process id and
address); a server that no longer answers is replaced. Starting one is serialised by a lock
on ``PREFECT_HOME/landpipe-server.lock``, so that commands started together share one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from landpipe.errors import ConfigError

#: Files in ``PREFECT_HOME``: what the running server is, the lock on starting one, its log.
STATE = "landpipe-server.json"
LOCK = "landpipe-server.lock"
LOG = "landpipe-server.log"

#: Seconds a new server may take to answer (its first start creates Prefect's database).
STARTUP_TIMEOUT_S = 180.0
#: Seconds a running server may take to answer before it is deemed hung and replaced (a
#: busy one, on a machine a large load keeps busy, answers late).
ANSWER_TIMEOUT_S = 30.0

#: The servers this process started: kept, so that they are not reaped as garbage.
_started: list[subprocess.Popen] = []


def api_url(where: Path) -> tuple[str, bool]:
    """The API of the local server of Prefect's home ``where``, started if none answers, and
    whether it was started.

    Raises
    ------
    ConfigError
        No server answered within the startup timeout (its log says why).
    """
    where = where.resolve()
    where.mkdir(parents=True, exist_ok=True)
    with _locked(where):
        state = _state(where)
        if state is not None and _ours(state["pid"], where):
            if _answers(state["url"], within=ANSWER_TIMEOUT_S):
                return state["url"], False
            _end(state["pid"], where)  # running, but hung
        return _start(where), True


def running(where: Path) -> str | None:
    """The API of the local server of ``where`` if one is running and answers, else None."""
    where = where.resolve()
    state = _state(where)
    if state is None or not _ours(state["pid"], where):
        return None
    return state["url"] if _answers(state["url"]) else None


def stop(where: Path) -> bool:
    """Stop the local server of ``where``; False if none was running."""
    where = where.resolve()
    if not (where / STATE).exists():
        return False
    with _locked(where):
        state = _state(where)
        (where / STATE).unlink(missing_ok=True)
        return state is not None and _end(state["pid"], where)


def _start(where: Path) -> str:
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 0) or 0)
    deadline = time.monotonic() + max(timeout, STARTUP_TIMEOUT_S)
    for _ in range(3):  # a port taken between choosing and binding it: another one
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        command = [sys.executable, "-m", "prefect", "server", "start", "--no-services"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        with open(where / LOG, "ab") as log:
            server = subprocess.Popen(
                command,
                cwd=where,  # also how it is told from other processes (:func:`_ours`)
                env=_environment(where),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not stopped by a Ctrl-C meant for this command
            )
        _started.append(server)
        # Known before it answers: a command stopped meanwhile leaves it for the next to end.
        (where / STATE).write_text(json.dumps({"pid": server.pid, "url": url}))
        try:
            while server.poll() is None and time.monotonic() < deadline:
                if _answers(url):
                    return url
                time.sleep(0.2)
        except BaseException:  # interrupted: no server half started
            _end(server.pid, where)
            (where / STATE).unlink(missing_ok=True)
            raise
        (where / STATE).unlink(missing_ok=True)
        if server.poll() is None:  # out of time
            _end(server.pid, where)
            break
    raise ConfigError(
        f"the local Prefect server did not start; see {where / LOG}, or set PREFECT_API_URL"
    )


def _environment(where: Path) -> dict[str, str]:
    """The server's environment: this one's, less what concerns a command, not the server
    (the database URL and its password, where Prefect's API is, how much to log)."""
    dropped = ("PREFECT_API_", "PREFECT_LOGGING_", "LANDPIPE_")
    env = {name: value for name, value in os.environ.items() if not name.startswith(dropped)}
    env["PREFECT_HOME"] = str(where)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return env


def _state(where: Path) -> dict | None:
    try:
        state = json.loads((where / STATE).read_text())
        return {"pid": int(state["pid"]), "url": str(state["url"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _answers(url: str, within: float = 0.0) -> bool:
    """Whether the server at ``url`` is healthy, asked until ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ours(pid: int, where: Path) -> bool:
    """Whether process ``pid`` is the Prefect server started for ``where``: not a process that
    took its id since, nor the server of another home."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        folder = os.readlink(f"/proc/{pid}/cwd")
    except OSError:  # gone, a zombie, or another user's
        return False
    is_server = b"prefect" in command and b"server" in command and b"start" in command
    return is_server and folder == str(where)


def _gone(pid: int, where: Path) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # a child of this process: reaped
            return True
    return not _ours(pid, where)


def _end(pid: int, where: Path) -> bool:
    """Stop the server ``pid`` of ``where``: asked first, killed after 20 s. False if it was
    not running."""
    if not _ours(pid, where):
        return False
    for sent, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sent)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if _gone(pid, where):
                return True
            time.sleep(0.1)
    return _gone(pid, where)


@contextlib.contextmanager
def _locked(where: Path) -> Iterator[None]:
    descriptor = os.open(where / LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
