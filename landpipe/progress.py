"""Progress of a load's steps, for the terminal.

The pipeline's plain functions report what they do through :func:`step`; nothing is shown
unless a front end has installed a display with :func:`showing` (``landpipe load`` does, on a
terminal and without ``--json``). With no display the calls cost a function call each, so the
functions stay usable from flows, notebooks and tests without any progress output.

    with progress.step("validate", total=len(parcels)) as advance:
        for chunk in chunks:
            ...
            advance(len(chunk))
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

Advance = Callable[[int], None]

_lock = threading.Lock()
_display: Progress | None = None


def _ignore(_: int = 1) -> None:
    return None


@contextmanager
def showing(stream: TextIO, *, enabled: bool = True) -> Iterator[None]:
    """Show a bar per step on ``stream`` while the block runs (nothing when not enabled)."""
    global _display
    if not enabled:
        yield
        return
    display = Progress(
        SpinnerColumn(finished_text="✓"),
        TextColumn("{task.description:<22}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=stream, force_terminal=True),
        transient=False,
    )
    with _lock:
        _display = display
    try:
        with display:
            yield
    finally:
        with _lock:
            _display = None


def active() -> bool:
    """Whether a display is showing (lets callers skip work done only for progress)."""
    return _display is not None


@contextmanager
def step(name: str, total: int | None = None) -> Iterator[Advance]:
    """One step of the pipeline: yields ``advance(n)``; the bar is filled when the step ends.

    A step without a total shows a spinner until it ends. A step that raises keeps its bar
    where it stopped, so the terminal shows which step failed.
    """
    display = _display
    if display is None:
        yield _ignore
        return
    task = display.add_task(name, total=total)

    def advance(n: int = 1) -> None:
        display.advance(task, n)

    yield advance
    final = total if total is not None else max(int(display.tasks[task].completed), 1)
    display.update(task, total=final, completed=final)
