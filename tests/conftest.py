"""Shared fixtures: a hand-driven clock, a seeded World, links to emulators."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest

from lipon_hw.links import Link
from lipon_hw.ports import SimPort
from lipon_hw.sim.serve import serve_lab
from lipon_hw.sim.world import World
from lipon_hw.station import load_station

HOST = "127.0.0.1"
#: the browser tests' fixtures (`browser`, `served`)
pytest_plugins = ["web_fixtures"]


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one test process more than the machine's cores. About a third of the
    suite's test time is spent waiting (on subprocesses, sockets, runs paced in real
    time); a spare process keeps the cores busy meanwhile (2 cores: 8 min → under 6)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return cores + 1


class ManualClock:
    """A clock tests move by hand: `clock.advance(60)` is one virtual minute."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def world(clock) -> World:
    return World(clock, seed=1)


@pytest.fixture(scope="module")
def lab():
    """The default station served on real time, as `lipon-hw sim serve` serves it, for a
    module of tests that reach it as a client written from a manual would (a module that
    defines its own `lab` uses that)."""
    served = serve_lab(load_station(None), HOST, speed=1.0)
    yield served
    served.stop()


class CannedReplies:
    """An endpoint answering every write with the next canned reply (b"" once they are
    spent): a wire scripted byte for byte, for a Link (`SimPort(CannedReplies([...]))`)."""

    def __init__(self, replies):
        self.replies = list(replies)

    def handle(self, data):
        return self.replies.pop(0) if self.replies else b""

    def reset_connection(self):
        pass


def sim_link(emulator, timeout_s: float = 0.2) -> Link:
    """A Link straight to an in-process emulator, as `sim://NAME` gives the drivers."""
    return Link(f"sim://{emulator.name}", SimPort(emulator), timeout_s=timeout_s)


@contextlib.contextmanager
def visa_socket(port: int, timeout_ms: int = 1000):
    """An independent raw-byte client: pyvisa's TCPIP SOCKET, no terminators."""
    import pyvisa

    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(f"TCPIP::127.0.0.1::{port}::SOCKET")
    inst.read_termination = None
    inst.write_termination = None
    inst.timeout = timeout_ms
    try:
        yield inst
    finally:
        inst.close()


# --- the store's two back ends ---------------------------------------------------------
#: a PostgreSQL server's address for the store tests (.ci/run starts one and sets it)
TEST_PG_ENV = "LIPON_HW_TEST_PG"


@pytest.fixture(scope="session")
def pg_server():
    """The address of a real PostgreSQL server: LIPON_HW_TEST_PG, else a throwaway cluster
    this session starts (initdb found) and tears down. Never skipped in CI: no server there
    fails the PostgreSQL tests."""
    import os

    import pgcluster

    url = os.environ.get(TEST_PG_ENV)
    if url:
        yield url
        return
    if pgcluster.bin_dir() is None:
        message = f"no PostgreSQL server: set {TEST_PG_ENV} or install postgresql (initdb)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # not under pytest's own temporary directory, which only this user may enter: run as
    # root, the server runs as `postgres`
    root = Path(tempfile.mkdtemp(prefix="lipon-hw-pg-"))
    try:
        url = pgcluster.start(root)
    except Exception as exc:  # noqa: BLE001 - said in one line, then failed or skipped
        pgcluster.stop(root)
        if os.environ.get("CI"):
            pytest.fail(f"the test PostgreSQL server did not start: {exc}")
        pytest.skip(f"the test PostgreSQL server did not start: {exc}")
    watcher = pgcluster.watch(root)  # stops it should this process be killed
    try:
        yield url
    finally:
        pgcluster.stop(root)
        watcher.stdin.close()
        watcher.wait()


@pytest.fixture
def pg_url(pg_server):
    """A store address of its own for one test: a fresh schema of the server's database
    (dropped after the test), chosen by the address's search_path."""
    import uuid

    import pgcluster

    schema = f"t_{uuid.uuid4().hex[:16]}"
    pgcluster.sql(pg_server, f"CREATE SCHEMA {schema}")
    yield pgcluster.in_schema(pg_server, schema)
    pgcluster.sql(pg_server, f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, monkeypatch) -> str | None:
    """Run the test on each store back end: on PostgreSQL, LIPON_HW_STORE names a fresh
    schema, so every Store the test opens (and every lipon-hw process it starts) is there.
    Returns the address (None for SQLite)."""
    from lipon_hw.store_location import STORE_ENV

    if request.param == "sqlite":
        monkeypatch.delenv(STORE_ENV, raising=False)
        return None
    url = request.getfixturevalue("pg_url")
    monkeypatch.setenv(STORE_ENV, url)
    return url
