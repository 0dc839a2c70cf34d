"""What the cluster tests send along with a shard (`ShardOrder.on_cycle`): importable by
the Dask workers, which the test process spawns with its own sys.path."""

from __future__ import annotations

import os
import time
from pathlib import Path

#: a held shard that nobody kills gives up after this long (the test then fails)
HOLD_AT_MOST_S = 120.0


def _first_to_hold(path: str, channel: int, completed: int, cycles: int) -> bool:
    """Whether this call, the first to see `cycles` cycles completed, holds: it then wrote
    "PID CHANNEL" of its worker process to `path` (whole when seen; one shard wins)."""
    if completed < cycles or os.path.exists(path):
        return False
    part = Path(f"{path}.{os.getpid()}")
    part.write_text(f"{os.getpid()} {channel}", encoding="utf-8")
    try:
        os.link(part, path)
    except FileExistsError:
        return False
    finally:
        part.unlink()
    return True


class HoldAfter:
    """The first channel (of any shard) to complete `cycles` cycles writes
    "PID CHANNEL" of its worker process to `path` and holds its shard there until the
    process is killed. Once the file exists, every later call (the shard run again on
    another worker) goes on."""

    def __init__(self, path: str, cycles: int):
        self.path, self.cycles = path, cycles

    def __call__(self, channel: int, completed: int) -> None:
        if _first_to_hold(self.path, channel, completed, self.cycles):
            time.sleep(HOLD_AT_MOST_S)
            raise RuntimeError(f"the worker holding at cycle {self.cycles} was never killed")


class HoldUntilGo:
    """The first channel (of any shard) to complete `cycles` cycles writes "PID CHANNEL"
    of its worker process to `held` and holds its shard there until the file `go` exists
    (the shard's attempt goes on, alive all along). Once `held` exists, every later call
    goes on."""

    def __init__(self, held: str, go: str, cycles: int):
        self.held, self.go, self.cycles = held, go, cycles

    def __call__(self, channel: int, completed: int) -> None:
        if not _first_to_hold(self.held, channel, completed, self.cycles):
            return
        deadline = time.monotonic() + HOLD_AT_MOST_S
        while not os.path.exists(self.go):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the shard holding at cycle {self.cycles} was never let go")
            time.sleep(0.02)
