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


def port_of(served, station, instrument: str) -> int:
    return served.ports[station.instrument(instrument).address.removeprefix("sim://")]


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


def test_project_drivers_work_over_tcp_and_the_world_is_shared(served, station):
    pool = LinkPool()
    drivers = {}
    try:
        for name, info in served.instruments().items():
            spec = station.instrument(name)
            link = pool.open(f"socket://{info['tcp']}")
            drivers[name] = driver_class(spec.driver)(name, link, **spec.settings)
            assert drivers[name].identify()
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
