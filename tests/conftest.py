"""Shared fixtures: a hand-driven clock, a seeded World, links to emulators."""

from __future__ import annotations

import contextlib

import pytest

from lipon_hw.links import Link
from lipon_hw.ports import SimPort
from lipon_hw.sim.serve import serve_lab
from lipon_hw.sim.world import World
from lipon_hw.station import load_station

HOST = "127.0.0.1"
#: the browser tests' fixtures (`browser`, `served`)
pytest_plugins = ["web_fixtures"]


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
