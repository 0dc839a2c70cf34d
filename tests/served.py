"""The simulated lab served behind TCP sockets on consecutive ports, for tests that drive
it as hardware (`socket://` addresses, a real-time clock)."""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from lipon_hw.errors import InputError
from lipon_hw.sim.serve import LabServer, serve_lab
from lipon_hw.station import default_station_text, expand_address, load_station


def serve_on_consecutive_ports(speed: float) -> tuple[LabServer, int]:
    """The default station's lab at `speed` × real time, its endpoints on ports base,
    base + 1, … (its potentiostat's channels 1-2 first, so `{base-(base + 1)}` reaches
    them), and that base: below the kernel's range of ports for outgoing connections,
    where one of them cannot take a port a test stops serving and serves again."""
    for _ in range(20):  # a base with room for every endpoint
        base = _listening_base()
        if base + 200 > 65535:
            continue
        try:
            lab = serve_lab(load_station(None), "127.0.0.1", port_base=base, speed=speed)
        except InputError:  # a port of the range was taken meanwhile
            continue
        assert [lab.ports["mes4/1"], lab.ports["mes4/2"]] == [base, base + 1]
        return lab, base
    raise AssertionError("no free run of consecutive ports for the served lab")


def _listening_base() -> int:
    """A port to serve from: at random below the ephemeral range (Linux), else one the
    kernel hands out."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    if low > 10_000 + 400:
        return random.randrange(10_000, low - 200)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def socket_station(lab: LabServer, base: int, path: Path) -> Path:
    """A station file at `path` reaching every instrument of the served default lab over
    `socket://` (two of the potentiostat's sixteen channels: ports base and base + 1), as
    a station of real instruments would: no `sim:` section."""
    spec = yaml.safe_load(default_station_text())
    del spec["sim"]
    for inst in spec["instruments"].values():
        endpoint = inst["address"].removeprefix("sim://")
        if endpoint.startswith("mes4/"):
            inst["address"] = f"socket://127.0.0.1:{{{base}-{base + 1}}}"
        elif "{" in endpoint:  # one port per channel, served on consecutive ports
            ports = [lab.ports[a.removeprefix("sim://")] for a in expand_address(inst["address"])]
            assert ports == list(range(ports[0], ports[0] + len(ports))), endpoint
            inst["address"] = f"socket://127.0.0.1:{{{ports[0]}-{ports[-1]}}}"
        else:
            inst["address"] = f"socket://127.0.0.1:{lab.ports[endpoint]}"
        inst.pop("sim", None)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@contextlib.contextmanager
def served_hardware(speed: float, path: Path):
    """The default station's lab served on consecutive ports (its potentiostat's channels
    1-2 first), and a station file at `path` that reaches every instrument over
    `socket://` (`lab.station_path`): a run that does not know it is simulated."""
    lab, base = serve_on_consecutive_ports(speed)
    try:
        station = socket_station(lab, base, path)
        assert not load_station(station).simulated
        lab.station_path = str(station)
        yield lab
    finally:
        lab.stop()


def cli_process(*args, cwd: Path) -> subprocess.Popen:
    """`lipon-hw ARGS` in a process of its own, its output piped as text."""
    return subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_process(process: subprocess.Popen, sig=signal.SIGTERM, wait_s: float = 30) -> None:
    """Ask a process to stop with `sig` (if it still lives); killed if it has not ended
    within `wait_s`."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ThreadServer:
    """An ASGI `app` served by uvicorn in a thread of this process on 127.0.0.1:`port` (0:
    a free one; a port given is taken again at once, as after a server's restart)."""

    def __init__(self, app, port: int = 0):
        import threading
        import time

        import uvicorn

        self.app = app
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
