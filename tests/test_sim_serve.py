"""`sim serve` over real loopback sockets: the project's drivers and independent clients."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import pyvisa
import serial

from lipon_hw.errors import InputError
from lipon_hw.links import LinkPool
from lipon_hw.sim.serve import run_serve, serve_lab
from lipon_hw.station import driver_class, load_station

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def station():
    return load_station()


@pytest.fixture(scope="module")
def served(station):
    """The default station at 2000× real time: a rough pump-down takes ~0.15 s wall."""
    lab = serve_lab(station, HOST, speed=2000)
    yield lab
    lab.stop()


def port_of(served, station, instrument: str, channel: int = 1) -> int:
    address = station.instrument(instrument).addresses[channel - 1]
    return served.ports[address.removeprefix("sim://")]


def test_every_instrument_is_listed_with_its_endpoint_port(served, station):
    listed = served.instruments()
    assert set(listed) == set(station.spec.instruments)
    for name, info in listed.items():
        port = port_of(served, station, name)
        assert info["tcp"] == f"{HOST}:{port}"
        assert info["visa"] == f"TCPIP::{HOST}::{port}::SOCKET"
        assert ":" in info["driver"]
    # one controller, two gauge channels: one port
    assert listed["chamber_gauge"]["tcp"] == listed["process_gauge"]["tcp"]
    assert len(set(served.ports.values())) == len(served.ports)
    # a MultiEmStat4: one port per channel, each listed in channel order
    channels = listed["mes4"]["channels"]
    assert [c["tcp"] for c in channels] == [f"{HOST}:{port_of(served, station, 'mes4', ch)}"
                                            for ch in range(1, 17)]
    assert "channels" not in listed["smu"]


def test_project_drivers_work_over_tcp_and_the_world_is_shared(served, station):
    pool = LinkPool()
    drivers = {}
    try:
        for name, info in served.instruments().items():
            spec = station.instrument(name)
            links = [pool.open(f"socket://{c['tcp']}") for c in info.get("channels", [info])]
            link = links if len(links) > 1 else links[0]
            drivers[name] = driver_class(spec.driver)(name, link, **spec.settings)
            assert drivers[name].identify()
        assert drivers["mes4"].channels == 16
        drivers["valves"].pump()  # the relay box's coil drives the tool the gauge reads
        deadline = time.monotonic() + 10
        pressure = drivers["chamber_gauge"].pressure_torr()
        while pressure >= 1.0 and time.monotonic() < deadline:
            time.sleep(0.05)
            pressure = drivers["chamber_gauge"].pressure_torr()
        assert pressure < 1.0
    finally:
        pool.close()


def test_pyvisa_client_reads_mks937b_bytes_from_the_manual(served, station):
    port = port_of(served, station, "chamber_gauge")
    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(f"TCPIP::{HOST}::{port}::SOCKET", read_termination=None,
                            write_termination=None, timeout=2000)
    try:
        inst.write_raw(b"@253PR1?;FF")
        reply = b""
        while not reply.endswith(b";FF") and len(reply) < 64:
            reply += inst.read_bytes(1)
    finally:
        inst.close()
        rm.close()
    assert reply.startswith(b"@253ACK") and reply.endswith(b";FF")
    float(reply[len(b"@253ACK"):-len(b";FF")])


def test_pyserial_client_sends_ae_bus_rf_off(served, station):
    port = port_of(served, station, "rf")
    with serial.serial_for_url(f"socket://{HOST}:{port}", timeout=2) as ser:
        ser.write(bytes([0x08, 0x01, 0x09]))  # unit 1, no data; command 1 RF off; XOR checksum
        assert ser.read(1) == b"\x06"  # ACK
        reply = ser.read(4)  # header (unit 1, 1 data byte), command, CSR, checksum
    assert reply[:2] == b"\x09\x01"


def test_run_serve_prints_one_json_line_and_stops_on_the_event(station):
    out, stop = io.StringIO(), threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "rc", run_serve(station, HOST, 0, 100.0, None, True, out=out, stop_event=stop)))
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while "\n" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        first = out.getvalue().splitlines()[0]
        listed = json.loads(first)["instruments"]
        assert set(listed) == set(station.spec.instruments)
        port = int(listed["rf"]["tcp"].rsplit(":", 1)[1])
        socket.create_connection((HOST, port), timeout=2).close()
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert result["rc"] == 0
    assert out.getvalue().count("\n") == 1
    with pytest.raises(OSError):  # the servers are gone
        socket.create_connection((HOST, port), timeout=2).close()


SERVE_SCRIPT = """
import sys
from lipon_hw.sim.serve import run_serve
from lipon_hw.station import load_station
sys.exit(run_serve(load_station(), "127.0.0.1", 0, 1.0, None, True))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_served_lab_cleanly(signum, tmp_path):
    # away from the source tree, which would shadow the installed package on `python -c`
    proc = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        first = proc.stdout.readline()  # printed once the handlers are in place
        assert "instruments" in json.loads(first)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_readable_table_names_every_instrument(station):
    out, stop = io.StringIO(), threading.Event()
    stop.set()  # serve, print, stop at once
    assert run_serve(station, HOST, 0, 1.0, 7, False, out=out, stop_event=stop) == 0
    text = out.getvalue()
    assert "seed 7" in text
    for name in station.spec.instruments:
        assert name in text
    assert "mes4 ch16" in text  # one row per channel port


def test_a_port_in_use_is_one_clear_input_error(station):
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match=f"port {port} on {HOST} is in use"):
            serve_lab(station, HOST, port_base=port)


def test_a_station_without_sim_has_nothing_to_serve(tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text("name: bench\ninstruments:\n"
                    "  rf: {driver: ae_bus, address: 'socket://127.0.0.1:1'}\n")
    with pytest.raises(InputError, match="nothing to serve"):
        serve_lab(load_station(path))


def test_genesys_answers_manual_bytes_over_sim_serve(served, station):
    """TDK-Lambda Genesys manual: `ADR n` selects the supply and answers OK; IDN? names it."""
    import serial

    port = port_of(served, station, "evap_supply")
    with serial.serial_for_url(f"socket://{HOST}:{port}", timeout=2) as link:
        link.write(b"ADR 6\r")
        assert link.read_until(b"\r") == b"OK\r"
        link.write(b"IDN?\r")
        assert link.read_until(b"\r") == b"LAMBDA,GEN6-200\r"


def test_sqc310_answers_manual_bytes_over_sim_serve(served, station):
    """SQC-310 manual: `!#J(79)(56)` asks for the channel count; the answer is CRC-framed."""
    import pyvisa

    port = port_of(served, station, "evap_controller")
    inst = pyvisa.ResourceManager("@py").open_resource(f"TCPIP::{HOST}::{port}::SOCKET")
    try:
        inst.read_termination = None
        inst.timeout = 2000
        inst.write_raw(bytes([0x21, 0x23, 0x4A, 79, 56]))
        head = inst.read_bytes(2)
        assert head[0:1] == b"!"
        body = inst.read_bytes(head[1] - 35 + 2)
        assert body[0:1] == b"A" and body[1:-2].decode().strip().isdigit()
    finally:
        inst.close()


# --- potentiostats: independent clients from the vendor manuals (raw sockets) ------------
#: MethodSCRIPT manual: SI prefix of a package value
SI = {"a": 1e-18, "f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, " ": 1.0,
      "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def read_lines_until(sock: socket.socket, done, timeout_s: float = 5.0) -> list[str]:
    """Lines (without LF) received until `done(lines)` holds."""
    data, deadline = b"", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = data.decode("ascii").split("\n")[:-1]
        if done(lines):
            return lines
        try:
            data += sock.recv(4096)
        except TimeoutError:
            continue
    raise AssertionError(f"no complete reply in {timeout_s} s; got {data!r}")


def decode_package(line: str) -> dict[str, float]:
    """`Pda83D0900u;ba803B3BAn,10,215` → {'da': 4.0, 'ba': 1.9e-7}: per variable a type
    (2 letters), 7 hex digits holding value + 2^27, an SI prefix, then metadata."""
    assert line.startswith("P")
    out = {}
    for variable in line[1:].split(";"):
        field = variable.split(",")[0]
        out[field[:2]] = (int(field[2:9], 16) - 2**27) * SI[field[9]]
    return out


@pytest.fixture(scope="module")
def cli_served(tmp_path_factory):
    """`lipon-hw sim serve --json` in its own process at 1000× real time: instrument →
    {tcp, visa[, channels]} as it printed them."""
    proc = subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", "sim", "serve", "--json",
                             "--port-base", "0", "--speed", "1000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path_factory.mktemp("serve"))
    try:
        yield json.loads(proc.stdout.readline())["instruments"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def connect(listed: dict, instrument: str, channel: int = 1) -> socket.socket:
    info = listed[instrument].get("channels", [listed[instrument]])[channel - 1]
    host, port = info["tcp"].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=1)


def script(*lines: str) -> bytes:
    """Manual: `e`, the script's lines, then an empty line."""
    return ("e\n" + "".join(f"{line}\n" for line in lines) + "\n").encode("ascii")


def test_methodscript_firmware_and_unknown_command(cli_served):
    with connect(cli_served, "mes4", 7) as s:
        s.sendall(b"t\n")
        first, second = read_lines_until(s, lambda lines: len(lines) >= 2)
        assert first.startswith("tmes4lr") and "#" in first  # device type, version, build
        assert second == "R*"
        s.sendall(b"x\n")
        assert read_lines_until(s, lambda lines: len(lines) >= 1) == ["x!0003"]


def test_methodscript_chronoamperometry_script_on_one_channel(cli_served):
    with connect(cli_served, "mes4", 2) as s:
        s.sendall(script("var e", "var i", "set_pgstat_chan 0", "set_pgstat_mode 2",
                         "set_max_bandwidth 40", "set_range ba 10u",
                         "set_autoranging ba 1n 10m", "set_e 4", "cell_on",
                         "meas_loop_ca e i 4 100m 1", "  pck_start", "  pck_add e",
                         "  pck_add i", "  pck_end", "endloop", "on_finished:", "  cell_off"))
        lines = read_lines_until(s, lambda ls: len(ls) > 2 and ls[-1] == "" and ls[-2] == "*")
    assert lines[:2] == ["e", "M0007"]  # echo, then chronoamperometry's loop start
    packages = [decode_package(line) for line in lines[2:-2]]
    assert len(packages) == 10  # 1 s at 100 ms
    assert all(p["da"] == pytest.approx(4.0) for p in packages)
    currents = [p["ba"] for p in packages]
    assert all(0 < i < 1e-3 for i in currents)  # 4 V charges the LNMO cell
    assert currents[-1] < currents[0]  # and the current decays


def test_methodscript_channels_are_independent_sessions(cli_served):
    ocp = script("var e", "set_pgstat_chan 0", "set_pgstat_mode 2", "cell_off",
                 "meas_loop_ocp e 100m 500m", "pck_start", "pck_add e", "pck_end", "endloop")
    with connect(cli_served, "mes4", 4) as a, connect(cli_served, "mes4", 5) as b:
        a.sendall(ocp)
        b.sendall(b"t\n")  # channel 5 answers its own command, not channel 4's script
        assert read_lines_until(b, lambda ls: len(ls) >= 2)[1] == "R*"
        lines = read_lines_until(a, lambda ls: len(ls) > 2 and ls[-1] == "")
        b.sendall(b"Z\n")  # nothing runs on channel 5
        assert read_lines_until(b, lambda ls: len(ls) >= 1) == ["Z!0006"]
    assert lines[:2] == ["e", "M000B"]
    potentials = [decode_package(line)["ab"] for line in lines if line.startswith("P")]
    assert len(potentials) == 5
    assert all(2.0 < e < 5.0 for e in potentials)


def test_keithley_scpi_over_a_raw_socket(cli_served):
    with connect(cli_served, "smu") as s:
        s.sendall(b"*IDN?\n")
        idn = read_lines_until(s, lambda ls: len(ls) >= 1)[0]
        assert idn.startswith("KEITHLEY INSTRUMENTS INC.,MODEL 2450,")
        s.sendall(b':OUTP:SMOD HIMP\n:SOUR:FUNC CURR\n:SOUR:CURR:VLIM 2\n:SOUR:CURR 1e-6\n'
                  b':SENS:FUNC "VOLT"\n:OUTP ON\n:READ?\n:SYST:ERR?\n')
        reading, error = read_lines_until(s, lambda ls: len(ls) >= 2)
        assert 0.0 <= float(reading) <= 2.0  # the blocking cell charges, clamped at 2 V
        assert error == '0,"No error;0;0 0"'
        s.sendall(b":SOUR:CURR 5\n:SYST:ERR?\n:OUTP OFF\n:OUTP?\n")
        error, state = read_lines_until(s, lambda ls: len(ls) >= 2)
        assert error.startswith('-222,"Data out of range;')
        assert state == "0"
