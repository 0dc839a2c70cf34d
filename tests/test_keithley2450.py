"""Keithley 2450 SourceMeter as a cell cycler: codec, SCPI bytes, driver ↔ emulator on a
test cell in virtual time, the 2450 as a Potentiostat on the simulated cells, and
independent clients over TCP."""

import json
import math
import re
import time

import pytest
import serial
from conftest import sim_link, visa_socket

from lipon_hw.drivers.keithley2450 import (
    NO_ERROR,
    Keithley2450,
    encode_lines,
    format_error,
    format_number,
    parse_error,
    parse_number,
)
from lipon_hw.errors import InputError, InstrumentError, LinkLost
from lipon_hw.interfaces import Potentiostat, PotentiostatRun
from lipon_hw.links import Health, LinkPool
from lipon_hw.sim.cells.factories import cell_from_spec
from lipon_hw.sim.emulators.keithley2450 import Keithley2450Emulator, current_range_A
from lipon_hw.sim.tcp import serve
from lipon_hw.techniques import (
    CCCV,
    EIS,
    OCV,
    ConstantCurrent,
    ConstantVoltage,
    CyclicSweep,
    LinearSweep,
    Recording,
)


class LinearCell:
    """A cell by the Cell contract: OCV linear in state of charge, a series resistance and
    a capacity. With the defaults OCV = 3.6 V, and 1 mA raises the voltage by 1 V/3000 s."""

    def __init__(self, t0=0.0, capacity_C=3.6, r_ohm=100.0, v_empty=3.0, v_full=4.2, soc=0.5):
        self.name = "cell"
        self.capacity_C, self.r_ohm = capacity_C, r_ohm
        self.v_empty, self.span_V = v_empty, v_full - v_empty
        self.soc, self.t = soc, t0
        self.mode, self.value = "open", 0.0

    @property
    def tau_s(self):
        return self.r_ohm * self.capacity_C / self.span_V

    def _ocv(self):
        return self.v_empty + self.span_V * self.soc

    def _advance(self, t):
        dt = t - self.t
        if dt <= 0:
            return
        if self.mode == "current":
            self.soc += self.value * dt / self.capacity_C
        elif self.mode == "voltage":
            target = (self.value - self.v_empty) / self.span_V
            self.soc = target + (self.soc - target) * math.exp(-dt / self.tau_s)
        self.t = t

    def set_control(self, t, mode, value):
        self._advance(t)
        self.mode, self.value = mode, value

    def current_A(self, t):
        self._advance(t)
        if self.mode == "current":
            return self.value
        if self.mode == "voltage":
            return (self.value - self._ocv()) / self.r_ohm
        return 0.0

    def voltage_V(self, t):
        if self.mode == "voltage":
            self._advance(t)
            return self.value
        return self._ocv() + self.current_A(t) * self.r_ohm

    def impedance_ohm(self, t, f_Hz):
        return complex(self.r_ohm)

    def next_crossing(self, t, v_min, v_max, i_min_abs):
        times = []
        if self.mode == "current" and self.value:
            slope = self.value * self.span_V / self.capacity_C
            bound = v_max if slope > 0 else v_min
            if bound is not None:
                times.append(t + max((bound - self.voltage_V(t)) / slope, 0.0))
        if self.mode == "voltage" and i_min_abs and abs(self.current_A(t)) > i_min_abs:
            times.append(t + self.tau_s * math.log(abs(self.current_A(t)) / i_min_abs))
        times = [x for x in times if x - t <= 1e7]
        return min(times) if times else None

    def snapshot(self):
        return {"soc": self.soc, "t": self.t, "mode": self.mode, "value": self.value}

    def restore(self, state):
        self.soc, self.t, self.mode, self.value = (state[k] for k in ("soc", "t", "mode", "value"))


IDN = b"KEITHLEY INSTRUMENTS INC.,MODEL 2450,01234567,1.0.0i\n"  # manual *IDN? example

# --- codec: the manual's examples ---------------------------------------------------------


def test_numbers_print_as_the_manual_shows():
    # :FETCh? "defbuffer1", DATE, READ, SOUR → 03/21/2013,-1.375422E-11,0.000000E+00
    assert format_number(-1.375422e-11) == "-1.375422E-11"
    assert format_number(0.0) == "0.000000E+00"
    assert format_number(15) == "1.500000E+01"
    assert parse_number("-1.375422E-11") == -1.375422e-11
    assert parse_number("15") == 15.0
    for text in ("1.0E", "--1", "1,5", "j.000000E+00", ""):
        with pytest.raises(ValueError):
            parse_number(text)


def test_error_queue_entries():
    # event-log example (2461/2470 manuals): -109,"Missing parameter;1;2015/05/06 12:55:33.648"
    when = 1430916933.648  # 2015-05-06 12:55:33.648 UTC
    assert format_error(-109, "Missing parameter", when) == (
        '-109,"Missing parameter;1;2015/05/06 12:55:33.648"')
    assert parse_error('-109,"Missing parameter;1;2015/05/06 12:55:33.648"') == (
        -109, "Missing parameter")
    assert format_error(0, "No error", 12.0) == NO_ERROR == '0,"No error;0;0 0"'
    assert parse_error(NO_ERROR) == (0, "No error")
    assert parse_error('-113,"Undefined header"') == (-113, "Undefined header")
    for garbled in ('0,"No e(ror;0;0 0"', '0,xNo error;0;0 0"', "1.000000E+00"):
        with pytest.raises(ValueError):
            parse_error(garbled)


def test_lines_end_with_lf():
    assert encode_lines([":SOUR:FUNC CURR", ":SYST:ERR?"]) == b":SOUR:FUNC CURR\n:SYST:ERR?\n"


# --- the emulator's bytes --------------------------------------------------------------------


@pytest.fixture
def cell(clock):
    return LinearCell(t0=clock())


@pytest.fixture
def smu(cell, clock):
    return Keithley2450Emulator("smu", cell, clock, serial="01234567")


def test_identity_and_manual_limit_example(smu):
    assert smu.handle(b"*IDN?\n") == IDN
    assert smu.handle(b":SOUR:CURR:VLIM 15\n") == b""  # manual: "Set the voltage limit to 15 V"
    assert smu.handle(b":SOUR:CURR:VLIM?\n") == b"1.500000E+01\n"
    assert smu.handle(b":SYST:ERR?\n") == b'0,"No error;0;0 0"\n'


def test_reset_defaults(smu):
    for line in (b":SOUR:FUNC CURR\n", b":SOUR:CURR 1e-3\n", b":OUTP:SMOD HIMP\n",
                 b":OUTP ON\n", b":BOGUS\n", b"*RST\n"):
        smu.handle(line)
    assert smu.handle(b":SOUR:FUNC?;:OUTP?;:OUTP:SMOD?\n") == b"VOLT;0;NORM\n"
    assert smu.handle(b":SOUR:CURR?;:SOUR:VOLT?\n") == b"0.000000E+00;0.000000E+00\n"
    assert smu.handle(b":SOUR:CURR:VLIM?\n") == b"2.100000E+01\n"  # manual default: 21 V
    assert smu.handle(b":SOUR:VOLT:ILIM?\n") == b"1.050000E-04\n"
    assert smu.handle(b":FUNC?\n") == b'"CURR:DC"\n'
    assert smu.handle(b":SYST:ERR:COUN?\n") == b"1\n"  # *RST leaves the error queue
    assert smu.handle(b"*CLS\n:SYST:ERR:COUN?\n") == b"0\n"


def test_error_queue_in_order_with_virtual_time(smu, clock):
    clock.advance(5.25)
    assert smu.handle(b":BOGUS 1\n") == b""
    assert smu.handle(b":SOUR:CURR\n") == b""
    assert smu.handle(b":SOUR:CURR 2\n") == b""
    assert smu.handle(b":SOUR:FUNC POWER\n") == b""
    assert smu.handle(b":OUTP? 1\n") == b""
    assert smu.handle(b":SOUR:CURR one\n") == b""
    assert smu.handle(b":SYST:ERR:COUN?\n") == b"6\n"
    for entry in (b'-113,"Undefined header', b'-109,"Missing parameter',
                  b'-222,"Data out of range', b'-141,"Invalid character data',
                  b'-108,"Parameter not allowed', b'-104,"Data type error'):
        assert smu.handle(b":SYST:ERR?\n") == entry + b';1;1970/01/01 00:00:05.250"\n'
    assert smu.handle(b":SYSTEM:ERROR:NEXT?\n") == b'0,"No error;0;0 0"\n'


def test_header_forms_partial_lines_and_garbage(smu):
    assert smu.handle(b"*ID") == b""  # half a line waits for its LF
    assert smu.handle(b"N?\r\n") == IDN
    assert smu.handle(b"source1:current:vlimit:level 4.2\n") == b""
    assert smu.handle(b":SOURCE:CURRENT:VLIMIT?\n") == b"4.200000E+00\n"
    assert smu.handle(b"sour:curr:vlim -3\n:sour:curr:vlim?\n") == b"3.000000E+00\n"  # |limit|
    assert smu.handle(b":SOUR:CURR:VLIM MAX;:SOUR:CURR:VLIM?\n") == b"2.100000E+02\n"
    assert smu.handle(b"*IDN?;:BOGUS;*IDN?\n") == IDN  # an error ends the line
    assert smu.handle(b"\x8f\x00\xff\n") == b""
    assert smu.handle(b"x" * 5000) == b""
    assert smu.handle(b"*OPC?\n") == b"1\n"
    errors = [smu.handle(b":SYST:ERR?\n")[:5] for _ in range(4)]
    assert errors == [b'-113,', b'-101,', b'-363,', b'0,"No']


def test_buffer_elements_and_fetch(smu, clock):
    assert smu.handle(b':FETC? "defbuffer1"\n') == b""
    assert smu.handle(b":SYST:ERR?\n").startswith(b'-230,"Data corrupt or stale;1;')
    smu.handle(b':OUTP:SMOD HIMP;:SOUR:FUNC CURR;:SOUR:CURR 1e-3;:SENS:FUNC "VOLT";:OUTP ON\n')
    assert smu.handle(b':READ? "defbuffer1", READ, SOUR, REL\n') == (
        b"3.700000E+00,1.000000E-03,0.000000E+00\n")
    clock.advance(30)
    assert smu.handle(b":READ?\n") == b"3.710000E+00\n"
    assert smu.handle(b':FETCh? "defbuffer1", REL, SOURce\n') == b"3.000000E+01,1.000000E-03\n"
    assert smu.handle(b":TRAC:ACT?\n") == b"2\n"
    assert smu.handle(b":MEAS:CURR?\n") == b"1.000000E-03\n"  # selects the current function
    assert smu.handle(b":FUNC?\n") == b'"CURR:DC"\n'
    assert smu.handle(b':TRAC:CLE "defbuffer1";:TRAC:ACT?\n') == b"0\n"
    assert smu.handle(b':READ? "mybuffer"\n') == b""
    assert smu.handle(b':READ? "defbuffer1", VOLTage\n') == b""
    assert smu.handle(b":SYST:ERR?\n").startswith(b'-224,"Illegal parameter value')


def test_current_range_is_autoranged():
    assert current_range_A(0) == 1e-8
    assert current_range_A(1e-3) == 1e-3
    assert current_range_A(1.05e-4) == 1e-4  # 5 % over-range
    assert current_range_A(1.2e-4) == 1e-3
    assert current_range_A(5) == 1.0


@pytest.mark.parametrize("mode, control", [
    ("HIMP", ("open", 0.0)),  # relay open: the cell is disconnected
    ("NORM", ("current", -1e-4)),  # 0 V through 10 % of the 1 mA range: a discharge
    ("ZERO", ("current", -1e-3)),  # 0 V through the full 1 mA range
    ("GUAR", ("current", 0.0)),  # 0 A
])
def test_output_off_states_act_on_the_cell(smu, cell, mode, control):
    smu.handle(f":OUTP:SMOD {mode};:SOUR:FUNC CURR;:SOUR:CURR 1e-3;:OUTP ON\n".encode())
    assert (cell.mode, cell.value) == ("current", 1e-3)
    smu.handle(b":OUTP OFF\n")
    assert (cell.mode, cell.value) == control
    assert smu.handle(b":OUTP:SMOD?\n") == mode.encode() + b"\n"


def test_off_state_is_kept_per_source_function(smu, cell):
    smu.handle(b":OUTP:CURR:SMOD HIMP\n")
    assert smu.handle(b":OUTP:SMOD?;:OUTP:VOLT:SMOD?;:OUTP:CURR:SMOD?\n") == b"NORM;NORM;HIMP\n"
    smu.handle(b":SOUR:FUNC CURR\n")
    assert cell.mode == "open"


def test_power_up_and_reset_hold_the_cell_at_zero_volts(clock):
    cell = LinearCell()
    smu = Keithley2450Emulator("smu", cell, clock)  # factory: NORMal off state
    assert cell.current_A(0) == pytest.approx(-1e-5)  # 10 % of the 100 µA range (105 µA limit)
    smu.handle(b":OUTP:SMOD HIMP;:SOUR:FUNC CURR;:SOUR:CURR 1e-3;:OUTP ON\n")
    smu.handle(b"*RST\n")
    assert (cell.mode, cell.value) == ("current", -1e-5)
    assert Keithley2450Emulator("smu", LinearCell(), clock, off_mode="HIMP").cell.mode == "open"
    with pytest.raises(InputError, match="off_mode 'OPEN' is not one of"):
        Keithley2450Emulator("smu", LinearCell(), clock, off_mode="OPEN")


def test_snapshot_restores_instrument_memory(smu, cell, clock):
    smu.handle(b':OUTP:SMOD HIMP;:SOUR:FUNC CURR;:SOUR:CURR:VLIM 4;:SOUR:CURR 1e-3;:OUTP ON\n')
    smu.handle(b':SENS:FUNC "VOLT";:READ?;:BOGUS\n')
    clock.advance(600)
    state = json.loads(json.dumps(smu.snapshot()))
    cell_state = json.loads(json.dumps(cell.snapshot()))
    fresh_cell = LinearCell()
    fresh = Keithley2450Emulator("smu", fresh_cell, clock, off_mode="HIMP")
    fresh_cell.restore(cell_state)
    fresh.restore(state)
    clock.advance(600)  # the crossing at 900 s is still taken
    assert fresh.handle(b":SOUR:CURR:VLIM:TRIP?;:READ?\n") == b"1;4.000000E+00\n"
    assert fresh.handle(b':FETC? "defbuffer1", REL\n') == b"1.200000E+03\n"
    assert fresh.handle(b":SYST:ERR?\n").startswith(b'-113,"Undefined header')


# --- driver ↔ emulator on the cell ----------------------------------------------------------


@pytest.fixture
def driver(smu):
    return Keithley2450("smu", sim_link(smu), max_current_A=0.01, voltage_window_V=(3.0, 4.2))


def test_constant_current_charge_reaches_compliance_on_time(driver, cell, clock):
    driver.set_voltage_limit_V(4.0)
    driver.set_current_A(1e-3)
    driver.output(True)
    assert driver.output_on()
    assert driver.read() == pytest.approx((0.0, 3.7, 1e-3))
    clock.advance(899)  # V = 3.7 V + t/3000 s reaches 4.0 V at t = 900 s
    assert driver.read() == pytest.approx((899.0, 3.7 + 899 / 3000, 1e-3))
    assert not driver.limit_tripped()
    clock.advance(2)
    t, volts, amps = driver.read()
    assert (t, volts) == (901.0, 4.0)
    assert amps == pytest.approx(1e-3 * math.exp(-1 / cell.tau_s))
    assert driver.limit_tripped()
    assert (cell.mode, cell.value) == ("voltage", 4.0)
    clock.advance(299)  # the current tapers at the limit
    assert driver.current_A() == pytest.approx(1e-3 * math.exp(-300 / cell.tau_s))
    assert driver.voltage_V() == 4.0
    driver.set_voltage_limit_V(4.2)  # a higher limit: back to 1 mA
    assert driver.read()[1:] == pytest.approx((cell._ocv() + 0.1, 1e-3))
    assert not driver.limit_tripped()


def test_voltage_source_discharges_at_its_current_limit_then_holds(driver, cell, clock):
    driver.set_current_limit_A(1e-3)
    driver.set_voltage_V(3.2)
    driver.output(True)
    assert driver.read() == pytest.approx((0.0, 3.5, -1e-3))  # 3.6 V − 1 mA × 100 Ω
    assert driver.limit_tripped()
    clock.advance(600)
    assert driver.read() == pytest.approx((600.0, 3.3, -1e-3))
    clock.advance(400)  # 3.2 V was reached at 900 s
    t, volts, amps = driver.read()
    assert (t, volts) == (1000.0, 3.2)
    assert amps == pytest.approx(-1e-3 * math.exp(-100 / cell.tau_s))
    assert not driver.limit_tripped()


def test_output_off_disconnects_the_cell(driver, smu, cell, clock):
    driver.set_current_A(1e-3)
    driver.output(True)
    clock.advance(300)
    driver.output(False)
    assert cell.mode == "open"
    assert smu.handle(b":OUTP?;:OUTP:SMOD?\n") == b"0;HIMP\n"
    volts = cell.voltage_V(clock())
    clock.advance(3600)
    assert cell.voltage_V(clock()) == volts  # no current flows with the relay open
    assert driver.read()[1:] == (0.0, 0.0)


def test_make_safe_leaves_the_cell_open(driver, smu, cell):
    driver.set_voltage_V(4.1)
    driver.set_current_limit_A(5e-3)
    driver.output(True)
    assert cell.mode == "voltage"
    smu.handle(b":OUTP:SMOD NORM\n")  # someone chose the normal off state
    driver.make_safe()
    assert cell.mode == "open"
    assert driver.output_on() is False


def test_first_use_clears_stale_errors_and_selects_high_impedance(driver, smu, cell):
    smu.handle(b":BOGUS\n")
    assert cell.mode == "current"  # factory NORMal off state: held at 0 V through 10 µA
    assert driver.identify() == "Keithley 2450 serial 01234567, firmware 1.0.0i"
    assert cell.mode == "open"
    assert smu.handle(b":SYST:ERR:COUN?\n") == b"0\n"


def test_refusal_names_every_queued_error(smu):
    unlimited = Keithley2450("smu", sim_link(smu))
    with pytest.raises(InstrumentError, match=r"smu refused b':SOUR:FUNC CURR\\n:SENS:FUNC "
                                              r"\"VOLT\"\\n:SOUR:CURR 2\.000000E\+00\\n:SYST:ERR\?"
                                              r"\\n' with error -222 \"Data out of range\""):
        unlimited.set_current_A(2.0)
    smu.handle(b":BOGUS\n")
    with pytest.raises(InstrumentError, match=r'error -113 "Undefined header" \(then -222 "Data '
                                              r'out of range"\)'):
        unlimited.set_current_limit_A(2.0)
    assert unlimited.output_on() is False  # the queue was emptied


def test_station_limits_refuse_before_sending(smu, driver):
    smu.faults.link_down = True  # anything sent would end in LinkLost instead
    with pytest.raises(InstrumentError, match=r"will not set a current of -0\.02 A: the station "
                                              r"limit is ±0\.01 A \(max_current_A\)"):
        driver.set_current_A(-0.02)
    with pytest.raises(InstrumentError, match="current limit of 0.02 A"):
        driver.set_current_limit_A(0.02)
    with pytest.raises(InstrumentError, match="must be positive"):
        driver.set_current_limit_A(0)
    with pytest.raises(InstrumentError, match=r"will not set 4\.3 V: the station window is "
                                              r"3\.0–4\.2 V"):
        driver.set_voltage_V(4.3)
    with pytest.raises(InstrumentError, match=r"at most 4\.2 V \(voltage_window_V\)"):
        driver.set_voltage_limit_V(5)


def test_bad_settings_are_input_errors(smu):
    with pytest.raises(InputError, match="max_current_A must be positive"):
        Keithley2450("s", sim_link(smu), max_current_A=0)
    with pytest.raises(InputError, match="low < high"):
        Keithley2450("s", sim_link(smu), voltage_window_V=(4.2, 3.0))


def test_garbled_reply_is_retried(smu, driver):
    link = driver.link
    driver.set_current_A(1e-3)
    driver.output(True)
    smu.faults.garble_replies = 1
    assert driver.voltage_V() == pytest.approx(3.7)
    assert smu.faults.garble_replies == 0
    assert link.last_error.startswith("smu answered b':MEAS:VOLT?\\n:SYST:ERR?\\n' with")
    assert link.health is Health.OK


def test_link_down_is_lost(smu, driver):
    smu.faults.link_down = True
    with pytest.raises(LinkLost, match="sim://smu is lost after 3 attempts"):
        driver.voltage_V()


# --- independent clients over TCP --------------------------------------------------------------


@pytest.fixture
def server():
    cell = LinearCell(t0=time.monotonic())
    srv = serve(Keithley2450Emulator("smu", cell, time.monotonic, serial="01234567"))
    yield srv
    srv.stop()


def test_pyserial_client(server):
    port = serial.serial_for_url(f"socket://127.0.0.1:{server.port}", timeout=1)
    try:
        port.write(b"*IDN?\n")
        assert port.read_until(b"\n") == IDN
        port.write(b":OUTP:SMOD HIMP\n:SOUR:FUNC CURR\n:SOUR:CURR:VLIM 15\n:SOUR:CURR 1e-3\n"
                   b':SENS:FUNC "VOLT"\n:OUTP ON\n:OUTP?\n')
        assert port.read_until(b"\n") == b"1\n"
        port.write(b":SOUR:CURR:VLIM?\n")
        assert port.read_until(b"\n") == b"1.500000E+01\n"
        port.write(b':READ? "defbuffer1", READ, SOUR, REL\n')
        assert re.fullmatch(rb"3\.70\d{4}E\+00,1\.000000E-03,0\.000000E\+00\n",
                            port.read_until(b"\n"))
        port.write(b":SYST:BOGUS\n:SYST:ERR?\n")
        assert re.fullmatch(rb'-113,"Undefined header;1;1970/01/\d\d \d\d:\d\d:\d\d\.\d{3}"\n',
                            port.read_until(b"\n"))
        port.write(b":OUTP OFF\n:MEAS:VOLT?\n")
        assert port.read_until(b"\n") == b"0.000000E+00\n"
    finally:
        port.close()


def test_pyvisa_client(server):
    with visa_socket(server.port) as inst:
        inst.write_raw(b"*IDN?\n")
        assert inst.read_bytes(len(IDN)) == IDN
        inst.write_raw(b":SOUR:FUNC?;:SOUR:VOLT:ILIM?;:OUTP:SMOD?\n")
        assert inst.read_bytes(23) == b"VOLT;1.050000E-04;NORM\n"
        inst.write_raw(b":SOUR:FUNC CURR\n:SOUR:CURR -1e-3\n:OUTP ON\n:MEAS:VOLT?\n")
        reply = inst.read_bytes(13)  # 3.6 V − 1 mA × 100 Ω, a few ms of discharge later
        assert re.fullmatch(rb"\d\.\d{6}E\+00\n", reply)
        assert float(reply) == pytest.approx(3.5, abs=1e-4)
        inst.write_raw(b":SOUR:CURR 5\n:SYST:ERR?\n")
        assert inst.read_bytes(20) == b'-222,"Data out of ra'


def test_driver_over_tcp(server):
    pool = LinkPool()
    try:
        link = pool.open(f"socket://127.0.0.1:{server.port}", Keithley2450.SERIAL_DEFAULTS)
        smu = Keithley2450("smu", link, max_current_A=0.01)
        assert smu.identify() == "Keithley 2450 serial 01234567, firmware 1.0.0i"
        smu.set_voltage_limit_V(4.2)
        smu.set_current_A(1e-3)
        smu.output(True)
        t, volts, amps = smu.read()
        assert (t, amps) == (0.0, 1e-3)
        assert volts == pytest.approx(3.7, abs=1e-3)
        smu.make_safe()
        assert smu.output_on() is False
    finally:
        pool.close()


# --- the 2450 as a one-channel Potentiostat, on the simulated cells -----------------------------


@pytest.fixture
def lnmo(clock):
    return cell_from_spec({"kind": "lnmo"})


@pytest.fixture
def pstat(lnmo, clock):
    emulator = Keithley2450Emulator("smu", lnmo, clock)
    return Keithley2450("smu", sim_link(emulator), max_current_A=1e-3, voltage_window_V=(0, 5.3))


def run_to_end(pstat, clock, technique, max_polls=10_000):
    """Poll as the engine does: wait the run's poll interval, poll, until it finishes."""
    run = pstat.start(1, technique)
    samples = []
    for _ in range(max_polls):
        if run.finished:
            return run, samples
        clock.advance(run.poll_interval_s)
        samples += run.poll()
    raise AssertionError(f"{technique} did not finish in {max_polls} polls")


def test_the_2450_is_a_one_channel_potentiostat(pstat):
    assert isinstance(pstat, Potentiostat)
    assert pstat.channels == 1
    assert EIS not in pstat.TECHNIQUES and CCCV in pstat.TECHNIQUES
    assert pstat.current_ranges_A() == (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    run = pstat.start(1, OCV(60, interval_s=10))
    assert isinstance(run, PotentiostatRun)
    assert run.poll_interval_s == 10 and run.channel == 1


def test_cc_charge_of_an_lnmo_cell_ends_at_the_hardware_voltage_limit(pstat, lnmo, clock):
    twin = cell_from_spec({"kind": "lnmo"})
    twin.set_control(0.0, "current", 1e-6)
    crossing = twin.next_crossing(0.0, None, 5.1, None)  # the same cell, charged untouched
    run, samples = run_to_end(pstat, clock, ConstantCurrent(1e-6, 20_000, v_max_V=5.1,
                                                            interval_s=60))
    assert run.end_reason == "v_max"
    assert [s.t_s for s in samples] == [60.0 * k for k in range(1, len(samples) + 1)]
    *charging, last = samples
    assert all(s.I_A == 1e-6 and s.E_V < 5.1 for s in charging)
    assert last.E_V == 5.1 and last.I_A < 1e-6  # held at the limit, current tapering
    assert last.t_s - 60 < crossing <= last.t_s
    assert 4000 < crossing < 8000  # ~1 µAh at 1 µA: most of the 1.47 µAh cell
    assert lnmo.mode == "open"  # the run's end opened the output relay


def test_cc_charge_without_v_max_stops_at_the_station_ceiling(lnmo, clock):
    emulator = Keithley2450Emulator("smu", lnmo, clock)
    pstat = Keithley2450("smu", sim_link(emulator), voltage_window_V=(0, 4.6))
    run, samples = run_to_end(pstat, clock, ConstantCurrent(1e-6, 20_000, interval_s=60))
    assert run.end_reason == "v_max"
    assert samples[-1].E_V == 4.6 and samples[-1].I_A < 1e-6


def test_cv_hold_ends_on_its_current_cutoff(pstat, lnmo, clock):
    # charged to the end of the 4.7 V plateau, the hold still has a few % of charge to take
    run_to_end(pstat, clock, ConstantCurrent(1e-6, 20_000, v_max_V=4.75, interval_s=60))
    run, samples = run_to_end(pstat, clock, ConstantVoltage(4.75, 36_000, i_min_A=2e-8,
                                                            interval_s=30))
    assert run.end_reason == "i_min"
    assert all(s.E_V == 4.75 for s in samples)
    *holding, last = samples
    assert len(holding) > 5
    assert all(abs(s.I_A) >= 2e-8 for s in holding) and abs(last.I_A) < 2e-8
    assert holding[0].I_A > 0  # the hold goes on charging
    assert lnmo.mode == "open"


def test_ocv_reads_the_open_cell_until_its_duration(pstat, lnmo, clock):
    run, samples = run_to_end(pstat, clock, OCV(600, interval_s=60))
    assert run.end_reason == "done"
    assert [s.t_s for s in samples] == [60.0 * k for k in range(1, 11)]
    assert all(s.I_A == 0.0 for s in samples)
    assert abs(samples[-1].E_V - lnmo.voltage_V(clock())) < 1e-6


def test_cc_discharge_ends_on_v_min_checked_by_the_host(pstat, clock):
    run_to_end(pstat, clock, CCCV(1e-6, 5.0, 1e-7, 36_000, interval_s=60))
    run, samples = run_to_end(pstat, clock, ConstantCurrent(-1e-6, 36_000, v_min_V=3.5,
                                                            interval_s=60))
    assert run.end_reason == "v_min"
    assert samples[-1].E_V <= 3.5 < samples[-2].E_V
    assert all(s.I_A == -1e-6 for s in samples)


def test_cccv_switches_to_a_voltage_hold_at_its_voltage(pstat, clock):
    run, samples = run_to_end(pstat, clock, CCCV(1e-6, 4.75, 1e-7, 36_000, interval_s=60))
    assert run.end_reason == "i_min"
    switch = next(k for k, s in enumerate(samples) if s.E_V >= 4.75)
    assert all(s.I_A == 1e-6 for s in samples[:switch])
    assert all(s.E_V == 4.75 and 0 < s.I_A <= 1e-6 for s in samples[switch + 1:])
    hold = [s.I_A for s in samples[switch:]]
    assert len(hold) > 5 and hold == sorted(hold, reverse=True) and hold[-1] < 1e-7


def test_recording_rule_decides_which_readings_go_out(pstat, clock):
    run, samples = run_to_end(pstat, clock, ConstantCurrent(1e-6, 3000, interval_s=60,
                                                            record=Recording(dt_s=600)))
    assert run.end_reason == "done"
    assert [s.t_s for s in samples] == [60.0, 660.0, 1260.0, 1860.0, 2460.0]
    run, samples = run_to_end(pstat, clock, ConstantCurrent(-1e-6, 3000, interval_s=10,
                                                            record=Recording(dV=0.01)))
    assert run.end_reason == "done"
    steps = [b.E_V - a.E_V for a, b in zip(samples, samples[1:], strict=False)]
    assert steps and all(step <= -0.01 for step in steps)
    assert len(samples) < 300 // 2  # most of the 300 readings stayed home


def test_current_rule_follows_a_decaying_hold(pstat, clock):
    """ΔI: in a voltage hold every reading I moved to by dI from the last sample sent goes
    out (and no other, bar the first and the cutoff's); a constant current sends none."""
    run, samples = run_to_end(pstat, clock, ConstantCurrent(1e-6, 3000, interval_s=60,
                                                            record=Recording(dI=1e-8)))
    assert run.end_reason == "done" and [s.t_s for s in samples] == [60.0]
    readings = []
    run = pstat.start(1, ConstantVoltage(4.75, 36_000, i_min_A=2e-8, interval_s=10,
                                         record=Recording(dI=2e-8)))
    samples = []
    while not run.finished:
        clock.advance(run.poll_interval_s)
        samples += run.poll()
        readings.append(run.last)
    assert run.end_reason == "i_min" and len(samples) > 10
    sent, last = [samples[0]], samples[0]
    for reading in readings[1:]:
        if abs(reading.I_A - last.I_A) >= 2e-8 or abs(reading.I_A) < 2e-8:
            sent.append(reading)
            last = reading
    assert samples == sent
    assert len(readings) > len(samples) + 20  # the slow tail stayed home


def test_sweeps_are_staircases_one_level_per_poll(pstat, clock):
    run, samples = run_to_end(pstat, clock, LinearSweep(4.0, 4.5, 0.1, 0.01))
    assert run.end_reason == "done" and run.poll_interval_s == pytest.approx(10.0)
    assert [s.E_V for s in samples] == pytest.approx([4.0, 4.1, 4.2, 4.3, 4.4, 4.5])
    run, samples = run_to_end(pstat, clock, CyclicSweep(4.2, 4.4, 4.0, 0.1, 0.01, scans=2))
    assert [s.E_V for s in samples] == pytest.approx([4.2, 4.3, 4.4, 4.3, 4.2, 4.1, 4.0, 4.1,
                                                      4.2, 4.3, 4.4, 4.3, 4.2, 4.1, 4.0, 4.1,
                                                      4.2])


def test_stop_make_safe_and_refusals(pstat, lnmo, clock):
    with pytest.raises(InputError, match=r"cannot run EIS; it runs OCV, ConstantCurrent"):
        pstat.start(1, EIS(1e5, 1.0, 11))
    with pytest.raises(InputError, match="has one channel, 1, not 2"):
        pstat.start(2, OCV(60))
    with pytest.raises(InputError, match="interval_s 120 must be at most duration_s 60"):
        pstat.start(1, OCV(60, interval_s=120))
    run = pstat.start(1, ConstantCurrent(1e-6, 3600, interval_s=60))
    assert lnmo.mode == "current"
    with pytest.raises(InstrumentError, match="still running ConstantCurrent; stop"):
        pstat.cell_on(1)
    clock.advance(60)
    assert len(run.poll()) == 1
    pstat.stop(1)
    assert run.finished and run.end_reason == "aborted" and lnmo.mode == "open"
    assert run.poll() == []
    pstat.cell_on(1, 4.0)
    assert (lnmo.mode, lnmo.value) in (("voltage", 4.0), ("current", 1e-3))
    pstat.cell_on(1)  # 0 A: held at open circuit
    assert (lnmo.mode, lnmo.value) == ("current", 0.0)
    pstat.cell_off(1)
    assert lnmo.mode == "open"
    run = pstat.start(1, OCV(600, interval_s=60))
    pstat.make_safe()
    assert run.end_reason == "aborted" and not pstat.output_on()


def test_a_refusal_in_the_middle_of_a_run_ends_it_with_error(clock):
    """Someone fixes the 2450's source range at 200 mV on its front panel while a sweep
    runs: its next level past the range is refused (-222), the run ends with that error,
    the output off. (A sweep past the 2450's own 210 V, the old way to provoke it, is
    refused by the host now: no thin-film cell is tested past ±10 V.)"""
    cell = cell_from_spec({"kind": "blocking"})
    smu = Keithley2450Emulator("smu", cell, clock)
    unlimited = Keithley2450("smu", sim_link(smu))
    run = unlimited.start(1, LinearSweep(0.0, 1.0, 0.1, 0.1))
    samples = []
    while len(samples) < 2:
        clock.advance(run.poll_interval_s)
        samples += run.poll()
    smu.settings["SOUR:VOLT:RANG:AUTO"] = False
    smu.fixed_range["SOUR:VOLT"] = 0.2
    for _ in range(100):
        if run.finished:
            break
        clock.advance(run.poll_interval_s)
        samples += run.poll()
    assert run.end_reason == "error"
    assert "-222" in str(run.error)
    assert 2 <= len(samples) < 10 and max(s.E_V for s in samples) < 0.25
    assert cell.mode == "open" and not unlimited.output_on()


def test_a_checkpoint_of_0_1_0_restores(cell, clock):
    """0.1.0 kept a buffer's count and latest reading only, and no settings or registers."""
    old = {"function": "CURR", "sense": "VOLT", "level": {"CURR": 1e-3, "VOLT": 0.0},
           "limit": {"CURR": 21.0, "VOLT": 0.000105}, "off_mode": {"CURR": "HIMP", "VOLT": "NORM"},
           "output_on": True, "errors": [[-113, "Undefined header", 2.0]],
           "buffers": {"defbuffer1": {"first_t": 0.0, "count": 3, "t": 2.0, "READ": 3.7,
                                      "SOUR": 1e-3}, "defbuffer2": None},
           "regime": "source", "held": ["current", 1e-3], "switch_at": None, "now": 2.0}
    smu = Keithley2450Emulator("smu", cell, clock)
    smu.restore(old)
    assert smu.handle(b':FETC? "defbuffer1", READ, SOUR, REL\n') == (
        b"3.700000E+00,1.000000E-03,2.000000E+00\n")
    assert smu.handle(b":SENS:VOLT:NPLC?;:ROUT:TERM?;:OUTP?\n") == b"1.000000E+00;FRON;1\n"
    assert smu.handle(b":SYST:ERR?\n").startswith(b'-113,"Undefined header')
