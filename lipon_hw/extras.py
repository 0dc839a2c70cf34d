"""The optional stacks of an install (pyproject's extras) as the code reaches them.

`pip install lipon-hw` brings what a run on real instruments needs — and the simulated lab,
which needs nothing more. Code that reaches an optional stack imports it where it is used,
inside `needs(extra, what)`: a module of that extra found missing becomes one sentence
naming the extra to install (`MissingExtra`), never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lipon_hw.errors import MissingExtra

#: the top-level modules each extra brings that the code imports
MODULES = {"plots": ("matplotlib",), "bluesky": ("bluesky", "ophyd_async", "ophyd"),
           "web": ("fastapi", "starlette", "uvicorn", "websockets"),
           "cluster": ("dask", "distributed"),
           "postgres": ("psycopg", "psycopg_binary")}


@contextmanager
def needs(extra: str, what: str) -> Iterator[None]:
    """Run the block; a module of `extra` it cannot import says that `what` needs the extra
    (any other missing module is not ours to explain and goes on as it was)."""
    try:
        yield
    except ModuleNotFoundError as exc:
        module = (exc.name or "").partition(".")[0]
        if module not in MODULES[extra]:
            raise
        raise MissingExtra(f"{module} is not installed: {what} needs "
                           f"`pip install 'lipon-hw[{extra}]'`") from None
