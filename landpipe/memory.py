"""Python's cyclic garbage collector, paused while a load makes millions of objects.

A load holds a delivery's million geometries, strings and rows while it makes millions more
(geometries from WKB, text, hashes). Each of the collector's full passes walks every live
container object again, and the passes come the more often the more is made: measured on the
1M-parcel benchmark, they cost about 1.5 s of a first load and of a re-delivery. The objects a
load makes form no reference cycles worth collecting mid-way; they are freed by reference
counting as always, and the collector runs again once the load is done.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic collector inside the block (nested and concurrent blocks: from the
    first in to the last out), then leave it as it was."""
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
