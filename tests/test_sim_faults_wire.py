"""Wire faults of the simulated lab, seen through each project driver over its framing:
a port that drops and comes back, a silent instrument, garbled replies, replies with a
wrong checksum/CRC, and each protocol's own error reply; each at its virtual time, each
gone when its `for_s` ends."""

from __future__ import annotations

import pytest
from faulty import at, connect

from lipon_hw.errors import InstrumentError, LinkLost
from lipon_hw.links import Health
from lipon_hw.techniques import OCV

#: instrument → a read through its driver (one transaction or a few)
READS = {
    "rf": lambda d: d.forward_power_W(),
    "qcm": lambda d: d.frequency_Hz(),
    "chamber_gauge": lambda d: d.pressure_torr(),
    "n2_mfc": lambda d: d.flow_sccm(),
    "shutter": lambda d: d.is_open(),
    "substrate_tc": lambda d: d.temperature_C(),
    "evap_supply": lambda d: d.current_A(),
    "evap_controller": lambda d: d.frequency_Hz(),
    "smu": lambda d: d.identify(),
    "mes4": lambda d: d.start(1, OCV(60.0, 10.0)) and d.stop(1),
}


def _read(lab, name):
    return READS[name](lab.instruments[name])


def _fails(lab, name, error=LinkLost) -> str:
    with pytest.raises(error) as info:
        _read(lab, name)
    return str(info.value)


@pytest.mark.parametrize("name", sorted(READS))
def test_link_drop_refuses_the_port_then_it_answers_again(name):
    lab, clock = connect([{"fault": "link_drop", "instrument": name, "at_s": 100,
                           "for_s": 50}])
    at(clock, 99.9)
    _read(lab, name)
    at(clock, 100.0)
    assert "unplugged" in _fails(lab, name)
    at(clock, 130.0)  # the back-off has run out: the re-open itself is refused
    assert "could not be opened" in _fails(lab, name)
    at(clock, 150.0 + 2.0)  # cleared; the next re-open is due within 2 s of back-off
    _read(lab, name)
    address = lab.station.instrument(name).addresses[0]
    assert lab.pool.link(address).health is Health.OK


@pytest.mark.parametrize("name", sorted(READS))
def test_silent_instrument_reads_and_never_answers(name):
    lab, clock = connect([{"fault": "silent", "instrument": name, "after_s": 3600,
                           "for_s": 60}])
    at(clock, 3599.0)
    _read(lab, name)
    at(clock, 3600.0)
    message = _fails(lab, name)
    assert "timing out" in message or "no reply" in message
    at(clock, 3700.0)
    _read(lab, name)


@pytest.mark.parametrize("name", ["rf", "qcm", "chamber_gauge", "n2_mfc", "shutter", "smu"])
def test_garbled_replies_are_refused_by_the_framing(name):
    lab, clock = connect([{"fault": "garble", "instrument": name, "at_s": 10, "for_s": 5}])
    _read(lab, name)
    at(clock, 12.0)
    _fails(lab, name)
    at(clock, 20.0)
    _read(lab, name)


@pytest.mark.parametrize(("name", "words"), [
    ("rf", "checksum"), ("qcm", "crc"), ("evap_controller", "crc"), ("shutter", "crc"),
    ("substrate_tc", "crc")])
def test_bad_checksum_is_what_the_driver_names(name, words):
    lab, clock = connect([{"fault": "bad_checksum", "instrument": name, "at_s": 10,
                           "for_s": 5}])
    _read(lab, name)
    at(clock, 10.0)
    assert words in _fails(lab, name).lower()
    at(clock, 15.0)
    _read(lab, name)


@pytest.mark.parametrize(("name", "code", "shown"), [
    ("rf", 7, "CSR 7 (active faults)"),
    ("chamber_gauge", 172, "172"),
    ("n2_mfc", None, "?"),
    ("shutter", 4, "4"),
    ("substrate_tc", 4, "4"),
    ("smu", -240, '-240 "Hardware error"'),
    ("mes4", 0x0032, "!0032"),
])
def test_each_protocol_refuses_with_its_own_error_reply(name, code, shown):
    entry = {"fault": "error_reply", "instrument": name, "at_s": 50, "for_s": 10}
    if code is not None:
        entry["code"] = code
    lab, clock = connect([entry])
    _read(lab, name)
    at(clock, 50.0)
    message = _fails(lab, name, InstrumentError)
    assert shown in message
    at(clock, 60.0)
    _read(lab, name)


def test_a_potentiostat_wire_fault_hits_only_its_channel():
    lab, clock = connect([{"fault": "silent", "instrument": "mes4", "channel": 2, "at_s": 5}])
    mes4 = lab.instruments["mes4"]
    at(clock, 6.0)
    mes4.start(1, OCV(60.0, 10.0))
    with pytest.raises(LinkLost):
        mes4.start(2, OCV(60.0, 10.0))
