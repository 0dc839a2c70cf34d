"""`lipon-hw sim serve`: every emulator of a station on its own loopback TCP port.

The in-process `sim://` link answers in virtual time; here the same emulators sit
behind real sockets on a scaled wall clock, so the real pyserial/pyvisa stack, a
vendor's utility or any third-party client can talk to the simulated lab as it
would to instruments behind a terminal server. One World is shared by all the
ports (the RF supply heats the same chamber the gauge reads), so one lock guards
it across every server, held only while a frame acts on it (`lipon_hw.sim.tcp`).
A potentiostat with one port per channel (a MultiEmStat4) gets one TCP port per
channel, each its own MethodSCRIPT session; a channel drives only its own cell, so
it takes no shared lock at all.
"""

from __future__ import annotations

import contextlib
import errno
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from lipon_hw.drivers import DRIVERS
from lipon_hw.errors import InputError
from lipon_hw.sim.lab import SimLab
from lipon_hw.sim.tcp import EmulatorServer, serve
from lipon_hw.station import Station

SIM_PREFIX = "sim://"


def scaled_clock(speed: float, t0_virtual: float = 0.0) -> Callable[[], float]:
    """Virtual seconds that run `speed` times faster than the wall clock.

    Monotonic, so a wall-clock adjustment (NTP, DST) never moves the physics backwards.
    """
    t_start = time.monotonic()
    return lambda: t0_virtual + (time.monotonic() - t_start) * speed


class LabServer:
    """A running `sim serve`: the simulated lab and one TCP server per sim:// endpoint."""

    def __init__(self, station: Station, lab: SimLab, host: str,
                 servers: dict[str, EmulatorServer], speed: float):
        self.station = station
        self.lab = lab
        self.host = host
        self.servers = servers
        self.speed = speed

    @property
    def ports(self) -> dict[str, int]:
        """Endpoint name (the NAME of sim://NAME) → TCP port."""
        return {endpoint: server.port for endpoint, server in self.servers.items()}

    def instruments(self) -> dict[str, dict]:
        """How to reach each simulated instrument; instruments sharing a box share its port.

        An instrument with one port per channel (`sim://mes4/{1-16}`) also lists
        `channels`: one {tcp, visa} per channel, in order; its `tcp` and `visa` are
        channel 1's. Instruments with real (non-sim://) addresses are not served and not
        listed.
        """
        out = {}
        for name, inst in self.station.spec.instruments.items():
            endpoints = [a[len(SIM_PREFIX):] for a in inst.addresses if a.startswith(SIM_PREFIX)]
            if not endpoints:
                continue
            reach = [self._reach(endpoint) for endpoint in endpoints]
            out[name] = {"driver": DRIVERS.get(inst.driver, inst.driver), **reach[0]}
            if len(reach) > 1:
                out[name]["channels"] = reach
        return out

    def _reach(self, endpoint: str) -> dict[str, str]:
        port = self.servers[endpoint].port
        return {"tcp": f"{self.host}:{port}", "visa": f"TCPIP::{self.host}::{port}::SOCKET"}

    def stop(self) -> None:
        """Every server stopped, all at once: each waits up to its poll interval to see
        the request, and a station has a port per potentiostat channel (hundreds)."""
        stopping = [threading.Thread(target=server.stop) for server in self.servers.values()]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
        self.servers = {}

    def __enter__(self) -> LabServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_lab(station: Station, host: str = "127.0.0.1", port_base: int = 0,
              speed: float = 1.0, seed: int | None = None) -> LabServer:
    """Build the station's simulated lab and serve each emulator, in endpoint order.

    `port_base` 0 lets each server pick a free port; otherwise the endpoints get
    port_base, port_base+1, ... so a client configuration can be written once.
    """
    if station.spec.sim is None:
        raise InputError(f"station {station.spec.name!r} has no `sim:` section, so there is "
                         "nothing to serve")
    if not speed > 0:
        raise InputError(f"speed must be above 0 (got {speed})")
    lab = SimLab(station.spec, scaled_clock(speed),
                 seed if seed is not None else station.spec.sim.seed)
    if not lab.emulators:
        raise InputError(f"station {station.spec.name!r} has no sim:// address, so there is "
                         "nothing to serve")
    if port_base and not 0 < port_base <= 65536 - len(lab.emulators):
        raise InputError(f"port base {port_base} leaves no room for {len(lab.emulators)} ports "
                         "below 65536")
    world_lock = threading.Lock()
    own_state = {id(port) for p in lab.potentiostats.values() for port in p.ports.values()}
    servers: dict[str, EmulatorServer] = {}
    try:
        for i, (endpoint, emulator) in enumerate(lab.emulators.items()):
            port = port_base + i if port_base else 0
            # a potentiostat channel drives only its own cell: it shares no lock
            lock = None if id(emulator) in own_state else world_lock
            servers[endpoint] = _serve_one(emulator, host, port, lock)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return LabServer(station, lab, host, servers, speed)


def _serve_one(emulator, host: str, port: int,
               world_lock: threading.Lock | None) -> EmulatorServer:
    try:
        return serve(emulator, host, port, world_lock)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} on {host} is in use; choose another port base, or "
                             "0 to let each instrument pick a free port") from None
        raise InputError(f"cannot serve {emulator.name} on {host} port {port}: "
                         f"{exc.strerror or exc}") from None


def run_serve(station: Station, host: str = "127.0.0.1", port_base: int = 0,
              speed: float = 1.0, seed: int | None = None, as_json: bool = False,
              out: TextIO = sys.stdout, stop_event: threading.Event | None = None) -> int:
    """Serve until SIGINT/SIGTERM (or until `stop_event` is set), then stop cleanly.

    With `as_json` exactly one line `{"instruments": {...}}` is printed and flushed,
    so a script can read it and connect while the lab keeps running. Without a
    `stop_event` the signal handlers (main thread only) are installed before that
    line is printed, so a script may signal as soon as it has read it; the
    previous handlers are put back afterwards.
    """
    with contextlib.ExitStack() as stack:
        if stop_event is None:
            stop_event = threading.Event()
            stack.enter_context(_signals_set(stop_event))
        lab = stack.enter_context(serve_lab(station, host, port_base, speed, seed))
        instruments = lab.instruments()
        if as_json:
            out.write(json.dumps({"instruments": instruments}) + "\n")
        else:
            _print_table(out, station, lab, instruments)
        out.flush()
        while not stop_event.wait(0.2):  # short waits keep signal handlers prompt
            pass
    if not as_json:
        out.write("stopped\n")
        out.flush()
    return 0


@contextlib.contextmanager
def _signals_set(event: threading.Event):
    """SIGINT and SIGTERM set `event` instead of killing the process, for a clean stop."""
    signums = [signal.SIGINT, signal.SIGTERM]
    previous = {s: signal.signal(s, lambda *_: event.set()) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _print_table(out: TextIO, station: Station, lab: LabServer,
                 instruments: dict[str, dict[str, str]]) -> None:
    seed = lab.lab.world.seed
    out.write(f"Serving {station.spec.name} at {lab.speed:g}x real time (seed {seed}); "
              "Ctrl-C stops.\n")
    rows = [("INSTRUMENT", "TCP", "VISA", "DRIVER")]
    for name, i in instruments.items():
        channels = i.get("channels", [i])
        rows += [(f"{name} ch{ch}" if len(channels) > 1 else name, c["tcp"], c["visa"],
                  i["driver"]) for ch, c in enumerate(channels, start=1)]
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)] + [row[3]]
        out.write("  ".join(cells).rstrip() + "\n")
