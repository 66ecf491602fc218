"""The collector pause (``landpipe/memory.py``): nested and concurrent blocks."""

from __future__ import annotations

import gc
import threading

from landpipe.memory import collector_paused


def test_the_collector_runs_again_after_the_last_block_only():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still holds it
    assert gc.isenabled()


def test_concurrent_blocks_leave_the_collector_paused_until_both_end():
    inside, leave = threading.Event(), threading.Event()

    def other():
        with collector_paused():
            inside.set()
            leave.wait(timeout=10)

    thread = threading.Thread(target=other)
    with collector_paused():
        thread.start()
        assert inside.wait(timeout=10)
    assert not gc.isenabled()  # the other thread's block has not ended
    leave.set()
    thread.join(timeout=10)
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_failing_block_lets_the_collector_run_again():
    try:
        with collector_paused():
            raise ValueError("bad delivery")
    except ValueError:
        pass
    assert gc.isenabled()
