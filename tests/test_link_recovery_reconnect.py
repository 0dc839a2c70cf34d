"""Reconnection (issue 11, item 2): a link whose port went away is opened afresh, over
sim:// on the run's clock and over socket:// against `lipon-hw sim serve`, including a
server that stops and starts again on the same port."""

from __future__ import annotations

import time

import pytest
from faulty import at, connect
from served import serve_on_consecutive_ports, socket_station

from lipon_hw.errors import LinkLost
from lipon_hw.links import Health
from lipon_hw.sim.tcp import serve
from lipon_hw.station import load_station


def test_an_unplugged_sim_port_is_reopened_after_its_back_off():
    lab, clock = connect([])
    mfc, emulator = lab.instruments["n2_mfc"], lab.sim.emulators["mfc"]
    link = lab.pool.link("sim://mfc")
    at(clock, 10.0)
    mfc.flow_sccm()
    emulator.faults.unplugged = True
    with pytest.raises(LinkLost, match="unplugged"):
        mfc.flow_sccm()
    assert link.health is Health.LOST
    emulator.faults.unplugged = False
    with pytest.raises(LinkLost, match="next re-open in 0.5 s"):
        mfc.flow_sccm()  # back in the socket, but the back-off has not run out
    at(clock, 10.5)
    mfc.flow_sccm()
    assert link.health is Health.OK


def test_sim_back_off_grows_while_the_port_stays_away_and_resets_once_it_answers():
    lab, clock = connect([])
    mfc, emulator = lab.instruments["n2_mfc"], lab.sim.emulators["mfc"]
    emulator.faults.unplugged = True
    with pytest.raises(LinkLost):
        mfc.flow_sccm()  # lost at 0: next re-open at 0.5 s
    at(clock, 0.5)
    with pytest.raises(LinkLost, match="could not be opened"):
        mfc.flow_sccm()  # refused: next at 0.5 + 1 s
    at(clock, 1.4)
    with pytest.raises(LinkLost, match="next re-open in 0.1 s"):
        mfc.flow_sccm()
    emulator.faults.unplugged = False
    at(clock, 1.5)
    mfc.flow_sccm()
    emulator.faults.unplugged = True
    with pytest.raises(LinkLost):
        mfc.flow_sccm()
    emulator.faults.unplugged = False
    at(clock, 2.0)  # the back-off started again from 0.5 s
    mfc.flow_sccm()


@pytest.fixture
def served(tmp_path):
    lab, base = serve_on_consecutive_ports(speed=1.0)
    try:
        station = load_station(socket_station(lab, base, tmp_path / "station.yaml"))
        client = station.connect(time.monotonic)
        try:
            yield lab, client
        finally:
            client.close()
    finally:
        lab.stop()


def _restart(lab, endpoint: str) -> None:
    """Serve `endpoint`'s emulator again on the port it had."""
    old = lab.servers[endpoint]
    port, emulator = old.port, old.emulator
    old.stop()
    lab.servers[endpoint] = serve(emulator, lab.host, port, emulator.world_lock)


def _answers_within(read, seconds: float) -> float:
    """Seconds until `read()` answers (LinkLost meanwhile), failing after `seconds`."""
    t0 = time.monotonic()
    while True:
        try:
            read()
            return time.monotonic() - t0
        except LinkLost:
            if time.monotonic() - t0 > seconds:
                raise
            time.sleep(0.05)


def test_a_socket_closed_under_the_link_is_reopened_within_the_exchange(served):
    lab, client = served
    mfc = client.instruments["n2_mfc"]
    link = client.pool.link(client.station.instrument("n2_mfc").address)
    mfc.flow_sccm()
    _restart(lab, "mfc")  # the server went away and came back between two exchanges
    mfc.flow_sccm()  # the dead socket fails one attempt; the next opens a new one
    assert link.health is Health.OK


def test_a_server_that_stops_and_starts_again_on_its_port_is_reconnected(served):
    lab, client = served
    gauge = client.instruments["chamber_gauge"]
    endpoint = next(e for e, port in lab.ports.items()
                    if client.station.instrument("chamber_gauge").address.endswith(f":{port}"))
    link = client.pool.link(client.station.instrument("chamber_gauge").address)
    gauge.pressure_torr()
    old = lab.servers[endpoint]
    port, emulator = old.port, old.emulator
    old.stop()
    with pytest.raises(LinkLost):
        gauge.pressure_torr()
    assert link.health is Health.LOST
    time.sleep(0.6)
    with pytest.raises(LinkLost, match="could not be opened"):
        gauge.pressure_torr()  # the port refuses: nobody listens
    lab.servers[endpoint] = serve(emulator, lab.host, port, emulator.world_lock)
    _answers_within(gauge.pressure_torr, 5.0)  # the next re-open is due within ~1 s
    assert link.health is Health.OK


def test_a_visa_socket_session_is_reopened_after_its_server_comes_back(tmp_path):
    """pyvisa's TCPIP SOCKET: a dead session reads as silence, the link goes lost, and the
    next exchange after the back-off opens a new session."""
    import yaml

    lab, base = serve_on_consecutive_ports(speed=1.0)
    try:
        path = socket_station(lab, base, tmp_path / "station.yaml")
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        gauge = spec["instruments"]["chamber_gauge"]
        port = int(gauge["address"].rsplit(":", 1)[1])
        gauge["address"] = f"TCPIP::127.0.0.1::{port}::SOCKET"
        gauge["timeout_s"] = 0.3
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        client = load_station(path).connect(time.monotonic)
        try:
            driver = client.instruments["chamber_gauge"]
            link = client.pool.link(gauge["address"])
            driver.pressure_torr()
            endpoint = next(e for e, p in lab.ports.items() if p == port)
            old = lab.servers[endpoint]
            emulator = old.emulator
            old.stop()
            with pytest.raises(LinkLost):
                driver.pressure_torr()
            assert link.health is Health.LOST
            lab.servers[endpoint] = serve(emulator, lab.host, port, emulator.world_lock)
            _answers_within(driver.pressure_torr, 5.0)
            assert link.health is Health.OK
        finally:
            client.close()
    finally:
        lab.stop()
