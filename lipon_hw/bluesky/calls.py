"""Driver calls from bluesky's event loop, one at a time, on one worker thread.

A driver call blocks (it writes a frame and waits for the reply through the station's
`Link.exchange()`), so it never runs on the event loop itself: a RunEngine keeps
answering while an instrument is slow to reply. One worker thread serves every
instrument of a station, so calls reach the drivers in the order the plan made them,
as one host talking to its instruments would, and a simulated lab is only ever touched
from that thread.

A failure keeps its type (`LinkLost`, `LinkTimeout`, `InstrumentError`, ...) and gains the
instrument and what was asked of it, so a plan that fails says in one sentence which
device could not do what.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from lipon_hw.errors import LiponError

T = TypeVar("T")


class DriverCalls:
    """The one worker thread through which a station's devices reach its drivers."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipon-hw-bluesky")
        self.closed = False

    async def run(self, instrument: str, what: str, fn: Callable[..., T], *args) -> T:
        """`fn(*args)` on the worker thread; a lipon-hw error is raised again naming
        `instrument` and `what` it was asked to do."""
        if self.closed:
            raise LiponError(f"{instrument} cannot {what}: its station's devices are closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args))
        except LiponError as exc:
            raise named(exc, f"{instrument} could not {what}") from exc

    def close(self) -> None:
        """No more calls; waits for the one under way (if any) to finish."""
        self.closed = True
        self._pool.shutdown(wait=True)


def named(exc: LiponError, doing: str) -> LiponError:
    """The same kind of error, its message prefixed by what was being done."""
    message = f"{doing} ({exc})"
    try:
        out = type(exc)(message)
    except TypeError:  # an error type built from other arguments
        out = LiponError(message)
    out.__dict__.update(exc.__dict__)  # e.g. LinkLost.maybe_took
    return out
