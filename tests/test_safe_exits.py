"""Every way a deposition run can end leaves the hardware safe and its stored status true.

Each exit path — an exception in the run, a store another process holds locked, a lost
link, SIGTERM, SIGINT, kill -9 — is walked on the in-process simulated lab and on a
station of `socket://` addresses served by `sim serve`. Afterwards the instruments are
read back with raw bytes written from their manuals (not through the project's drivers
or engine): RF output off, shutter closed, N2 flow 0, source supply output off, SMU
output off (its cell disconnected); and the store must say what really happened.

Moments are chosen by hooks (the engine's `on_sample` at the first sample of the
presputter step) or by what the store shows, never by sleeping.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from lipon_hw.deposition import runner
from lipon_hw.deposition.session import start_run
from lipon_hw.errors import LinkError, StoreError
from lipon_hw.sim.serve import serve_lab
from lipon_hw.station import default_station_text, load_station

#: real-time factor of the served lab and of the engine driving it: ~2.3 s of wall time
#: from the start to the presputter step (675 s of process)
SPEED = 300.0

RECIPE = """\
name: exits
tool: sputter
sample: {id: X-1, substrate: glass}
record_every_s: 5
checkpoint_every_s: 30
steps:
  - pump_down: {below_torr: 1.0e-4, timeout_min: 60}
  - gas: {n2_sccm: 20, pressure_mtorr: 15, settle_s: 10}
  - rf: {power_W: 50, ramp_W_per_s: 5, regulation: load}
  - presputter: {for_min: 10}
  - deposit: {film: LiPON, until_thickness_nm: 20, max_h: 8}
  - rf: {power_W: 0, ramp_W_per_s: 10}
  - gas: {n2_sccm: 0}
  - vent: {}
interlocks:  # trips 20 s into the presputter: shows interlocks are evaluated sample by sample
  - {when: "forward_power_W > 10 for 20 s", then: alarm, during: [presputter]}
"""
PRESPUTTER = 3


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "exits.yaml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


# --- the two stations ---------------------------------------------------------------------
class Wire:
    """Raw bytes to one instrument: an in-process emulator's byte handler, or one TCP
    connection kept for every question (a host's ACK and its next packet stay in order)."""

    def __init__(self, emulator=None, port: int | None = None):
        self.emulator, self.port = emulator, port
        self.sock: socket.socket | None = None

    def ask(self, data: bytes, complete) -> bytes:
        if self.emulator is not None:
            self.emulator.reset_connection()
            reply = self.emulator.handle(data)
            assert complete(reply), f"{data!r} answered {reply!r}"
            return reply
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.2)
        self.sock.sendall(data)
        reply, deadline = b"", time.monotonic() + 10
        while not complete(reply):
            assert time.monotonic() < deadline, f"{data!r} answered only {reply!r}"
            with contextlib.suppress(TimeoutError):
                reply += self.sock.recv(256)
        if data[1:2] in (b"\xa2", b"\xa5"):  # AE Bus: the host ACKs the unit's packet
            self.sock.sendall(b"\x06")
        return reply

    def __del__(self):
        if self.sock is not None:
            self.sock.close()


class SimStation:
    """The default station: the simulated lab lives inside the engine's process."""

    name = "sim"
    path = None
    speed = None

    def __init__(self):
        self.lab = None

    def hook(self, ctx) -> None:
        self.lab = ctx.lab.sim

    def wire(self, endpoint: str) -> Wire:
        return Wire(emulator=self.lab.emulators[endpoint])

    def lose(self, endpoint: str) -> None:
        self.lab.emulators[endpoint].faults.link_down = True


class SocketStation:
    """Every instrument of the deposition tools (and the SMU) on its own TCP port of a
    `sim serve` lab; the engine sees only `socket://` addresses and a real-time clock."""

    name = "socket"
    speed = SPEED

    def __init__(self, tmp_path: Path):
        self.served = serve_lab(load_station(), speed=SPEED)
        spec = yaml.safe_load(default_station_text())
        del spec["sim"]
        for name in ("mes4", "probe_pstat"):  # a port per channel: not on this station
            del spec["instruments"][name]
        del spec["tools"]["cycler"], spec["tools"]["prober"]
        for inst in spec["instruments"].values():
            endpoint = inst["address"].removeprefix("sim://")
            inst["address"] = f"socket://127.0.0.1:{self.served.ports[endpoint]}"
            inst.pop("sim", None)
        self.path = tmp_path / "socket_station.yaml"
        self.path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")

    def hook(self, ctx) -> None:
        pass

    def wire(self, endpoint: str) -> Wire:
        return Wire(port=self.served.ports[endpoint])

    def lose(self, endpoint: str) -> None:
        self.served.servers.pop(endpoint).stop()  # its port closes: connections refused

    def stop(self) -> None:
        """Every server at once: each waits up to its poll interval to stop."""
        stoppers = [threading.Thread(target=server.stop)
                    for server in self.served.servers.values()]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        self.served.servers = {}


@pytest.fixture(params=["sim", "socket"])
def station(request, tmp_path):
    if request.param == "sim":
        yield SimStation()
        return
    served = SocketStation(tmp_path)
    yield served
    served.stop()


# --- reading the instruments back, from their manuals ----------------------------------------
def xor(data: bytes) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


def ae_bus_query(wire: Wire, command: int, size: int) -> bytes:
    """AE Bus (Apex manual Table 4-6): header = unit 1 << 3 | 0 data bytes, command, XOR;
    the unit answers ACK, then header (unit 1 << 3 | size), command, data, XOR."""
    packet = bytes([0x08, command])
    reply = wire.ask(packet + bytes([xor(packet)]), lambda r: len(r) >= 4 + size)
    assert reply[0] == 0x06 and reply[1] == 0x08 | size and reply[2] == command
    assert xor(reply[1:4 + size]) == 0
    return reply[3:3 + size]


def rf_output_on(wire: Wire) -> bool:
    """Command 162, process status: byte 0 bit 5 is 'RF output on'."""
    return bool(ae_bus_query(wire, 162, 4)[0] & 0x20)


def rf_forward_W(wire: Wire) -> int:
    return int.from_bytes(ae_bus_query(wire, 165, 2), "little")


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def coil_on(wire: Wire, coil: int) -> bool:
    """Modbus RTU function 01 (read coils) of unit 1, one coil; the shutter opens on coil 0."""
    body = bytes([1, 1, 0, coil, 0, 1])
    request = body + crc16_modbus(body).to_bytes(2, "little")
    reply = wire.ask(request, lambda r: len(r) >= 6)
    assert reply[:3] == bytes([1, 1, 1]) and crc16_modbus(reply[:4]) == int.from_bytes(
        reply[4:6], "little")
    return bool(reply[3] & 1)


def alicat_flows(wire: Wire) -> tuple[float, float]:
    """Alicat poll `A\\r`: unit, pressure, temperature, volumetric, mass flow, setpoint, gas."""
    fields = wire.ask(b"A\r", lambda r: r.endswith(b"\r")).decode().split()
    return float(fields[4]), float(fields[5])


def genesys_output(wire: Wire) -> str:
    """TDK-Lambda Genesys: `ADR 6` selects the supply (OK), `OUT?` answers ON or OFF."""
    lines = wire.ask(b"ADR 6\rOUT?\r", lambda r: r.count(b"\r") >= 2).decode().split("\r")
    assert lines[0] == "OK"
    return lines[1]


def smu_output(wire: Wire) -> str:
    return wire.ask(b":OUTP?\n", lambda r: r.endswith(b"\n")).decode().strip()


def assert_hardware_safe(station) -> None:
    rf = station.wire("rf")
    assert not rf_output_on(rf), "RF output is still on"
    assert rf_forward_W(rf) <= 1
    assert not coil_on(station.wire("io"), 0), "the shutter is open"
    mass_flow, setpoint = alicat_flows(station.wire("mfc"))
    assert setpoint == 0.0 and mass_flow < 0.5, f"N2 still flows ({mass_flow} sccm)"
    assert genesys_output(station.wire("evap_supply")) == "OFF"
    assert smu_output(station.wire("smu")) == "0"


def assert_rf_was_on(station) -> None:
    """The moment chosen is a live process: RF on, N2 flowing (so 'off' later means
    something)."""
    assert rf_output_on(station.wire("rf"))
    assert alicat_flows(station.wire("mfc"))[1] > 0


# --- the store, read by a connection of the test's own ----------------------------------
def stored(data: Path) -> tuple[str, str, list[str]]:
    con = sqlite3.connect(data / "lipon.db")
    try:
        status, message = con.execute("SELECT status, message FROM runs").fetchone()
        safe = [m for (m,) in con.execute(
            "SELECT message FROM alarms WHERE message LIKE 'safe state%' ORDER BY rowid")]
    finally:
        con.close()
    return status, message, safe


def rf_was_on_in_presputter(data: Path) -> bool:
    """From the engine's own stored readings: RF at power when presputter began (the
    presputter step's row is committed with every reading taken before it). Read from
    the store, not the generator: while the engine runs it is the generator's only host."""
    con = sqlite3.connect(data / "lipon.db")
    try:
        peak, = con.execute(
            "SELECT MAX(r.value) FROM readings r JOIN quantities q ON q.id = r.quantity_id"
            " JOIN steps s ON s.run_id = r.run_id AND s.idx = ? WHERE q.name ="
            " 'rf.forward_power_W' AND r.t_s <= s.t_start_s", (PRESPUTTER,)).fetchone()
    finally:
        con.close()
    return peak is not None and peak > 40


def at_presputter(station, action):
    """An on_sample hook: `action(ctx)` once, at the first sample of the presputter step."""
    done = []

    def hook(ctx):
        station.hook(ctx)
        if ctx.step_idx == PRESPUTTER and not done:
            done.append(ctx.now)
            assert_rf_was_on(station)
            action(ctx)

    return hook


def run_in_process(recipe, data, station, on_sample, notify=None):
    return start_run(recipe, data, station.path, speed=station.speed,
                     notify=notify, on_sample=on_sample)


# --- the exit paths --------------------------------------------------------------------------
def test_an_exception_in_the_run_leaves_the_tool_safe(recipe, tmp_path, station):
    def fail(_ctx):
        raise RuntimeError("a bug in a step")

    with pytest.raises(RuntimeError) as caught:
        run_in_process(recipe, tmp_path / "d", station, at_presputter(station, fail))
    assert caught.value.safe_state.ok  # what the CLI may then say about the hardware
    assert_hardware_safe(station)
    status, message, safe = stored(tmp_path / "d")
    assert status == "failed" and "a bug in a step" in message
    assert safe and "FAILED" not in safe[-1] and "rf" in safe[-1]


def locker(data: Path, holder: list):
    """A hook that takes the database's write lock (BEGIN EXCLUSIVE), as another process
    would, and keeps the connection in `holder` for the test to let go."""
    def lock(_ctx):
        con = sqlite3.connect(data / "lipon.db", isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        holder.append(con)

    return lock


def test_a_locked_store_stops_the_run_safe_and_says_so(recipe, tmp_path, station):
    """Issue 8, severe 1: another process holds the database (BEGIN EXCLUSIVE) from the
    presputter on. The run goes on sampling without waiting on the lock, stops itself once
    the store has refused its writes for STORE_PATIENCE_S, makes the tool safe before any
    store write, and tells the truth; the lock is let go once the safe state is reached,
    so the status can then be stored."""
    data = tmp_path / "d"
    holder: list[sqlite3.Connection] = []
    lock = locker(data, holder)

    def notify(message):
        if "engine: safe state" in message and holder:  # the safe state's alarm, heard
            holder.pop().execute("COMMIT")

    wall = time.monotonic()
    with pytest.raises(StoreError) as caught:
        run_in_process(recipe, data, station, at_presputter(station, lock), notify)
    wall = time.monotonic() - wall
    text = str(caught.value)
    assert f"the store {data / 'lipon.db'} is locked by another process" in text
    assert "of readings it could not store" in text
    assert caught.value.safe_state.ok
    assert wall < 30  # no 30 s wait on the lock, let alone one per write
    assert_hardware_safe(station)
    status, message, safe = stored(data)
    assert status == "failed" and "is locked by another process" in message
    assert safe and "FAILED" not in safe[-1]
    # sampling went on under the lock: the readings taken then were kept and stored after
    con = sqlite3.connect(data / "lipon.db")
    t_presputter, t_end, step_status = con.execute(
        "SELECT t_start_s, t_end_s, status FROM steps WHERE idx=?", (PRESPUTTER,)).fetchone()
    n_after, = con.execute("SELECT COUNT(DISTINCT t_s) FROM readings WHERE t_s > ?",
                           (t_presputter,)).fetchone()
    checked, = con.execute("SELECT COUNT(*) FROM alarms WHERE source = 'interlock' AND"
                           " t_s > ?", (t_presputter + 10,)).fetchone()
    con.close()
    assert n_after >= runner.STORE_PATIENCE_S / 5
    # the rule's 20 s ran out, and it tripped, while the store was locked: interlocks went on
    # being evaluated at every sample (an alarm rule alarms once as it trips)
    assert checked == 1
    # stopped once the store had refused writes for STORE_PATIENCE_S of run time, not at
    # the end of the 10 min presputter: the first refusal comes with the first write tried
    # under the lock (the next checkpoint, 30 s, or flush), the stop at the sample after
    assert step_status == "failed"
    elapsed = t_end - t_presputter
    assert runner.STORE_PATIENCE_S <= elapsed <= runner.STORE_PATIENCE_S + 30 + 3 * 5


def test_a_store_locked_to_the_end_is_reported_truthfully(recipe, tmp_path, monkeypatch):
    """The lock is never let go: the hardware is safe all the same, and the error says
    that the status could not be stored."""
    station = SimStation()
    monkeypatch.setattr(runner, "END_WRITE_WAIT_S", 0.2)
    data = tmp_path / "d"
    holder: list[sqlite3.Connection] = []
    lock = locker(data, holder)

    try:
        with pytest.raises(StoreError) as caught:
            run_in_process(recipe, data, station, at_presputter(station, lock))
    finally:
        for con in holder:
            con.execute("COMMIT")
    text = str(caught.value)
    assert "the hardware was made safe (rf, " in text
    assert "but its status could not be stored: the store" in text
    assert_hardware_safe(station)


def test_a_lost_link_stops_the_run_safe(recipe, tmp_path, station):
    """The gauge controller's link goes: the run cannot watch the pressure, so it stops;
    everything still reachable is made safe (a gauge drives nothing)."""
    with pytest.raises(LinkError) as caught:
        run_in_process(recipe, tmp_path / "d", station,
                       at_presputter(station, lambda _ctx: station.lose("gauges")))
    assert "lost" in str(caught.value)
    assert caught.value.safe_state.ok
    assert_hardware_safe(station)
    status, message, safe = stored(tmp_path / "d")
    assert status == "failed" and message == str(caught.value)
    assert safe and "FAILED" not in safe[-1]


def test_a_lost_rf_link_is_reported_as_not_made_safe(recipe, tmp_path):
    """The RF generator's own link goes: nothing can switch it off from here, and the
    run's message and alarm must say so rather than claim a safe tool."""
    station = SimStation()
    with pytest.raises(LinkError) as caught:
        run_in_process(recipe, tmp_path / "d", station,
                       at_presputter(station, lambda _ctx: station.lose("rf")))
    assert not caught.value.safe_state.ok
    status, message, safe = stored(tmp_path / "d")
    assert status == "failed" and "NOT all made safe: FAILED for rf" in message
    assert "FAILED for rf" in safe[-1]
    assert not coil_on(station.wire("io"), 0)  # the rest was made safe all the same
    assert alicat_flows(station.wire("mfc"))[1] == 0.0


def wait_for_step(db: Path, idx: int, proc, timeout_s: float = 30) -> None:
    """Until the store shows step `idx` running (polling the store, not guessing a time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        if db.exists():
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                row = con.execute("SELECT status FROM steps WHERE idx=?", (idx,)).fetchone()
            except sqlite3.OperationalError:
                row = None
            finally:
                con.close()
            if row and row[0] == "running":
                return
        time.sleep(0.02)
    raise AssertionError(f"step {idx} did not start within {timeout_s} s")


@pytest.fixture
def socket_station(tmp_path):
    served = SocketStation(tmp_path)
    yield served
    served.stop()


def spawn_run(recipe, data, station, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lipon_hw.cli", "run", str(recipe), "--station",
         str(station.path), "--speed", str(SPEED), "--data", str(data)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_safe(signum, recipe, tmp_path, socket_station):
    data = tmp_path / "d"
    proc = spawn_run(recipe, data, socket_station, tmp_path)
    try:
        wait_for_step(data / "lipon.db", PRESPUTTER, proc)
        os.kill(proc.pid, signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (err, stored(data))
    assert "Traceback" not in err
    assert_hardware_safe(socket_station)
    assert rf_was_on_in_presputter(data)
    status, message, safe = stored(data)
    assert status == "interrupted" and "stopped by the operator" in message
    assert safe and "FAILED" not in safe[-1]


def test_kill_9_of_the_engine_the_guard_switches_rf_off(recipe, tmp_path, socket_station):
    """No code of the engine's own runs after kill -9, and no instrument of the station
    has a host watchdog (see lipon_hw/engine/guard.py): the guard process the engine
    started sees its pipe close and makes the tool safe. Polled from the RF generator
    with raw AE Bus bytes until its output reads off."""
    data = tmp_path / "d"
    proc = spawn_run(recipe, data, socket_station, tmp_path)
    try:
        wait_for_step(data / "lipon.db", PRESPUTTER, proc)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        # the guard inherited the engine's stderr: its end means the guard is done (the
        # RF generator is not polled meanwhile: the emulator serves one host at a time)
        _, err = proc.communicate(timeout=15)
        assert time.monotonic() - killed < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert_hardware_safe(socket_station)
    assert "the guard process made the hardware safe" in err
    assert rf_was_on_in_presputter(data)
    status, message, safe = stored(data)
    assert status == "failed" and "the engine's process died" in message
    assert safe and "FAILED" not in safe[-1] and "by the guard process" in safe[-1]


def test_the_cli_claims_a_safe_tool_only_when_the_engine_says_so(capsys):
    """`reports_errors` used to tell every internal error that 'any run was stopped with
    its hardware made safe', true or not; now only what the engine reported is said."""
    from lipon_hw.cli import reports_errors
    from lipon_hw.deposition.safety import SafeState

    def failing(safe_state=None):
        @reports_errors
        def command():
            exc = RuntimeError("a bug")
            if safe_state is not None:
                exc.safe_state = safe_state
            raise exc

        with pytest.raises(SystemExit) as exited:
            command()
        assert exited.value.code == 1
        return capsys.readouterr().err

    assert "safe" not in failing()  # no engine, no hardware driven: nothing said
    assert "the hardware was made safe (rf, shutter)" in failing(SafeState(["rf", "shutter"]))
    said = failing(SafeState(["shutter"], ["rf (link lost)"]))
    assert "NOT all made safe: FAILED for rf (link lost)" in said
    assert "was made safe" not in said


def test_a_deposition_leaves_other_tools_instruments_alone(recipe, tmp_path):
    """The safe state is the run's own tools': an SMU sourcing for another run (a cell test
    on the bench) keeps its output when a deposition on the same station fails."""
    station = SocketStation(tmp_path)
    try:
        smu = station.wire("smu")
        smu.ask(b":SOUR:FUNC CURR\n:SOUR:CURR 1e-6\n:OUTP ON\n:OUTP?\n",
                lambda r: r.endswith(b"\n"))
        assert smu_output(smu) == "1"

        def fail(_ctx):
            raise RuntimeError("a bug in a step")

        with pytest.raises(RuntimeError):
            run_in_process(recipe, tmp_path / "d", station, at_presputter(station, fail))
        assert not rf_output_on(station.wire("rf")), "RF output is still on"
        assert smu_output(station.wire("smu")) == "1", "the deposition switched the SMU off"
        _, _, safe = stored(tmp_path / "d")
        assert "smu" not in safe[-1] and "rf" in safe[-1]
    finally:
        station.stop()
