"""Progress bars: shown per step on a terminal, never with ``--json`` or into a pipe."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from landpipe import progress, synth
from tests.conftest import run_cli

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_steps_report_nothing_without_a_display():
    assert not progress.active()
    with progress.step("read", total=10) as advance:
        advance(10)  # no display: a no-op, and no error


def test_a_display_draws_one_finished_bar_per_step():
    out = io.StringIO()
    with progress.showing(out):
        assert progress.active()
        with progress.step("read") as advance:
            advance(2000)
        with progress.step("validate", total=4) as advance:
            for _ in range(4):
                advance(1)
    assert not progress.active()
    text = ANSI.sub("", out.getvalue())
    final = text.splitlines()[-2:]
    assert "read" in final[0] and "2000/2000" in final[0]
    assert "validate" in final[1] and "4/4" in final[1]


def test_a_failing_step_keeps_its_bar_where_it_stopped():
    out = io.StringIO()
    with pytest.raises(ValueError), progress.showing(out), progress.step("load", total=10) as adv:
        adv(3)
        raise ValueError("connection lost")
    assert "3/10" in ANSI.sub("", out.getvalue())


def run_on_terminal(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[str, str]:
    """Run ``landpipe ARGS`` with stderr on a pseudo-terminal; return (stdout, terminal)."""
    leader, follower = pty.openpty()
    command = [str(Path(sys.executable).with_name("landpipe")), *args]
    process = subprocess.Popen(
        command, env={**env, "COLUMNS": "120"}, stdout=subprocess.PIPE, stderr=follower
    )
    os.close(follower)
    terminal = bytearray()
    while True:
        ready, _, _ = select.select([leader], [], [], timeout)
        if not ready:
            process.kill()
            raise AssertionError("landpipe did not finish")
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the follower side closed: the process is done with its terminal
            break
        if not chunk:
            break
        terminal.extend(chunk)
    stdout = process.stdout.read().decode()
    process.wait(timeout=timeout)
    os.close(leader)
    return stdout, ANSI.sub("", terminal.decode(errors="replace"))


@pytest.mark.slow
def test_load_on_a_terminal_shows_a_bar_per_step(register, cli_env, tmp_path):
    path = tmp_path / "thua_dat_22924.shp"
    synth.write_delivery(synth.generate_delivery("22924", n_parcels=600), path)

    stdout, terminal = run_on_terminal(["load", str(path)], cli_env)
    assert "batch 1: loaded" in stdout
    finished = [line for line in terminal.splitlines() if "✓" in line]
    steps = [line.split("✓", 1)[1].split()[0] for line in finished]
    for name in ("read", "map", "reproject", "compare", "validate", "load", "report"):
        assert any(s.startswith(name) for s in steps), terminal

    stdout, terminal = run_on_terminal(["load", str(path), "--json"], cli_env)
    assert stdout.startswith("{")
    assert "✓" not in terminal and "validate" not in terminal


@pytest.mark.slow
def test_load_into_a_pipe_shows_no_bar(register, cli_env, tmp_path):
    path = tmp_path / "thua_dat_22924.gpkg"
    synth.write_delivery(synth.generate_delivery("22924", n_parcels=300), path)
    result = run_cli("load", str(path), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "✓" not in result.stderr and "━" not in result.stderr
