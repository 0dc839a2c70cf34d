"""Python's cyclic garbage collector while a simulation runs long: rarely, and never over
what was loaded before it.

A campaign makes a few tuples for every sample it measures, sends, reads and stores, and
almost none of them is ever part of a reference cycle (plain reference counting frees
them). With Python's default threshold (a collection every 700 new container objects) the
collector ran some 1,100 times in each worker of the 16 × 600 cycling campaign
(`bench/cycling.py`), ~2 ms each walking every object the worker held (modules, station,
protocol, lab): about 4.5 s of the workers' CPU. Inside `rarely()` what exists at its start
is frozen (no collection scans it again) and a collection comes after COLLECT_AFTER new
container objects; garbage cycles (a traceback, a generator's frame) are still collected,
later. The threshold and the frozen objects are given back when the last `rarely()` ends."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: new container objects between two collections of the youngest generation (Python: 700)
COLLECT_AFTER = 50_000

_lock = threading.Lock()
_inside = 0
_saved: tuple[int, ...] = ()


@contextmanager
def rarely() -> Iterator[None]:
    """Collect rarely while inside (nested or from several threads: the last to leave
    restores the collector as the first found it)."""
    global _inside, _saved
    with _lock:
        if _inside == 0:
            _saved = gc.get_threshold()
            gc.collect()
            gc.freeze()
            gc.set_threshold(COLLECT_AFTER, *_saved[1:])
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                gc.set_threshold(*_saved)
                gc.unfreeze()
