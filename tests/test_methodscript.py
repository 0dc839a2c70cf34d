"""PalmSens MethodSCRIPT: codec, scripts, driver ↔ emulator on test cells, independent
clients over TCP."""

import cmath
import math
import random
import time

import pytest
import serial
from conftest import ManualClock, sim_link, visa_socket

from lipon_hw.drivers.methodscript import (
    CCCV,
    EIS,
    OCV,
    SI_PREFIXES,
    ConstantCurrent,
    ConstantVoltage,
    CyclicSweep,
    DCPolarization,
    LinearSweep,
    MethodScriptPotentiostat,
    Recording,
    build_script,
    decode_error,
    decode_firmware,
    decode_package,
    decode_value,
    encode_value,
    format_literal,
    is_marker,
    parse_literal,
    sample_from_line,
    sample_from_package,
    script_bytes,
)
from lipon_hw.drivers.methodscript.samples import columns_from_lines
from lipon_hw.errors import InputError, InstrumentError, LinkLost
from lipon_hw.links import Health, Link, LinkPool
from lipon_hw.ports import SerialPort
from lipon_hw.sim.cells.factories import cell_from_spec
from lipon_hw.sim.emulators.methodscript import MethodScriptEmulator, parse_script
from lipon_hw.sim.package_values import encode_batch, encode_lines, encode_values
from lipon_hw.sim.tcp import serve


class RCCell:
    """A test cell on the Cell contract: capacitor C (OCV = its voltage) behind Rs, with
    an optional parallel leak Rp. Every control gives Vc(t) = target + (Vc0 − target)·e^(−t/τ)
    (or a straight line for a current into a leak-free capacitor), so crossings are solved
    by bisection on a monotone function."""

    def __init__(self, C=1e-2, Rs=100.0, V0=3.0, Rp=math.inf, name="rc"):
        self.name, self.C, self.Rs, self.Rp = name, C, Rs, Rp
        self.vc, self.t, self.mode, self.value = V0, 0.0, "open", 0.0

    def _vc_at(self, t):
        dt, C, Rs, Rp = t - self.t, self.C, self.Rs, self.Rp
        if self.mode == "current":
            if math.isinf(Rp):
                return self.vc + self.value * dt / C
            target, tau = self.value * Rp, Rp * C
        elif self.mode == "voltage":
            leak = 1.0 if math.isinf(Rp) else Rp / (Rs + Rp)
            target, tau = self.value * leak, C * Rs * leak
        else:
            if math.isinf(Rp):
                return self.vc
            target, tau = 0.0, Rp * C
        return target + (self.vc - target) * math.exp(-dt / tau)

    def _go(self, t):
        assert t >= self.t - 1e-9, "a cell cannot go back in time"
        self.vc, self.t = self._vc_at(t), max(t, self.t)

    def _v_i(self, vc):
        if self.mode == "current":
            return vc + self.value * self.Rs, self.value
        if self.mode == "voltage":
            return self.value, (self.value - vc) / self.Rs
        return vc, 0.0

    def set_control(self, t, mode, value):
        self._go(t)
        self.mode, self.value = mode, value

    def voltage_V(self, t):
        self._go(t)
        return self._v_i(self.vc)[0]

    def current_A(self, t):
        self._go(t)
        return self._v_i(self.vc)[1]

    def impedance_ohm(self, t, f_Hz):
        self._go(t)
        zc = 1 / (2j * math.pi * f_Hz * self.C)
        return self.Rs + (zc if math.isinf(self.Rp) else self.Rp * zc / (self.Rp + zc))

    def next_crossing(self, t, v_min, v_max, i_min_abs):
        self._go(t)
        tests = []
        if v_max is not None:
            tests.append(lambda vc: self._v_i(vc)[0] > v_max)
        if v_min is not None:
            tests.append(lambda vc: self._v_i(vc)[0] < v_min)
        if i_min_abs is not None:
            tests.append(lambda vc: abs(self._v_i(vc)[1]) < i_min_abs)
        times = [self._first(t, test) for test in tests]
        times = [x for x in times if x is not None]
        return min(times) if times else None

    def _first(self, t, test):
        if test(self.vc) or not test(self._vc_at(t + 1e7)):
            return None
        low, high = t, t + 1e7
        for _ in range(100):
            mid = (low + high) / 2
            low, high = (low, mid) if test(self._vc_at(mid)) else (mid, high)
        return high

    def snapshot(self):
        return {"vc": self.vc, "t": self.t, "mode": self.mode, "value": self.value}

    def restore(self, state):
        self.__dict__.update(state)


# --- codec: manual examples --------------------------------------------------------------


def test_manual_package_example():
    """protocols.md §4.1 (from the manual): applied potential and WE current with metadata.
    (0x7F85F3F − 2^27 = −499905 µV; protocols.md's −498881 is a slip.)"""
    da, ba = decode_package("Pda7F85F3Fu;ba48D503Dp,10,288\n")
    assert (da.type, ba.type) == ("da", "ba")
    assert da.value == pytest.approx(-0.499905, abs=1e-12)
    assert ba.value == pytest.approx(-57.847747e-6, abs=1e-15)
    assert (ba.status, ba.current_range, ba.status_text) == (0, 0x88, "ok")
    assert encode_value(-0.499905) == "7F85F3Fu"  # the finest prefix that fits, as sent
    assert encode_value(-57.847747e-6) == "48D503Dp"


def test_manual_value_examples():
    """Manual v1.2 §4.2: 0.01 is `800000Am`; −0.01 mirrors it."""
    assert decode_value("800000Am") == pytest.approx(0.01)
    assert encode_value(0.01, prefix="m") == "800000Am"
    assert encode_value(-0.01, prefix="m") == "7FFFFF6m"
    assert decode_value("7FFFFF6m") == pytest.approx(-0.01)


def test_special_values_and_metadata():
    assert math.isnan(decode_value("     nan"))
    assert encode_value(math.nan) == "     nan"
    assert decode_value("8000005i") == 5 and encode_value(5, integer=True) == "8000005i"
    assert decode_value("8000000 ") == 0.0
    (var,) = decode_package("Pba7678CD7p,1A,20F,43")
    assert (var.status, var.current_range, var.noise) == (0xA, 0x0F, 3)
    assert var.status_text == "overload, overload warning"
    with pytest.raises(ValueError):
        decode_package("Pba7678CD7q")  # not a prefix
    with pytest.raises(ValueError):
        decode_package("Pba7G78CD7p")  # not hex
    with pytest.raises(ValueError):
        decode_package("M0007")


def _encode_value_prefix_by_prefix(value: float) -> str:
    """The manual's rule spelled out: the finest prefix whose mantissa fits."""
    if not math.isfinite(value):
        return "     nan"
    for prefix, scale in SI_PREFIXES.items():
        mantissa = round(value / scale)
        if abs(mantissa) < 1 << 27:
            return f"{mantissa + (1 << 27):07X}{prefix}"
    return "     nan"


def test_encoding_and_decoding_shortcuts_agree_with_the_plain_rules():
    """encode_value jumps to the right prefix, sample_from_line decodes a line in one pass:
    both must give what the plain rules give, errors included, on values near every
    prefix boundary and on lines garbled at random."""
    rng = random.Random(7)
    limit = (1 << 27) - 1
    values = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-30, 1e30, 1e40]
    for scale in SI_PREFIXES.values():
        for edge in (limit, limit + 0.5, limit + 0.49999, limit + 0.50001, limit + 1, 1):
            values += [edge * scale, -edge * scale, math.nextafter(edge * scale, 0),
                       math.nextafter(edge * scale, math.inf)]
    values += [rng.uniform(-1, 1) * 10 ** rng.uniform(-20, 20) for _ in range(20000)]
    plain = [_encode_value_prefix_by_prefix(v) for v in values]
    assert [encode_value(v) for v in values] == plain
    assert encode_values(values) == plain  # the emulator's batch encoding
    written = 0  # and its lines of a batch at once, values of like size in each column
    for _ in range(400):
        scale = 10 ** rng.uniform(-20, 20)
        columns = {k: [rng.choice((-1, 1)) * scale * rng.uniform(1, 1.2) for _ in range(20)]
                   for k in (0, 1)}
        lines = encode_lines("Peb{0};ab{1};{2}\n", columns, {2: "ba%,1"})
        written += lines is not None
        assert lines is None or lines == "".join(
            f"Peb{_encode_value_prefix_by_prefix(t)};ab{_encode_value_prefix_by_prefix(e)};"
            "ba%,1\n" for t, e in zip(columns[0], columns[1], strict=True))
    assert written > 300
    times = [0.5 + k for k in range(400)]  # a step's timer: its prefix changes on the way
    assert encode_values(times) == [_encode_value_prefix_by_prefix(t) for t in times]
    assert encode_batch("{1}:{0}{2}", {0: times, 1: times[::-1]}, {2: "|"}) == "".join(
        f"{_encode_value_prefix_by_prefix(b)}:{_encode_value_prefix_by_prefix(a)}|"
        for a, b in zip(times, times[::-1], strict=True))

    lines = ["Peb8000BB8m;ab84A2A6Cu;ba7D23940p,10,20F", "Pdc8989680 ;cc80F4240m;cd7FF0BDCm",
             "Peb8000005i;ab     nan", "Pja8000001 ;eb8000002m", "Pba7678CD7p,1A,20F,43"]
    alphabet = "Pabcdez0123456789ABCDEFGnmpui ;,!\n"
    trials = 0
    for _ in range(20000):
        text = list(rng.choice(lines))
        for _ in range(rng.randint(0, 3)):
            spot = rng.randrange(len(text) + 1)
            action = rng.random()
            if action < 0.4 and spot < len(text):
                text[spot] = rng.choice(alphabet)
            elif action < 0.7:
                text.insert(spot, rng.choice(alphabet))
            elif spot < len(text):
                del text[spot]
        line = "".join(text)
        try:
            expected = sample_from_package(decode_package(line))
        except (ValueError, TypeError) as exc:
            expected = type(exc)
        try:
            got = sample_from_line(line)
        except (ValueError, TypeError) as exc:
            got = type(exc)
        trials += expected is not ValueError
        assert repr(got) == repr(expected), line
    assert trials > 5000  # plenty of lines that decode


def test_a_stretch_of_data_lines_decodes_at_once_as_line_by_line():
    """columns_from_lines (a poll's data lines at once) gives what sample_from_line gives
    line by line (within 1 ulp), or None — for a stretch that holds a line garbled at
    random, of another layout, of another length, or an integer value; never for a clean
    stretch."""
    rng = random.Random(11)
    layouts = [("eb", "ab", "ba"), ("eb", "da", "ba"), ("eb", "ab"), ("dc", "cc", "cd"),
               ("ba", "eb", "ab")]
    decoded = 0
    for trial in range(3000):
        types = rng.choice(layouts)
        prefix = rng.choice("afpnumkMGTPE ")
        lines = [("P" + ";".join(t + f"{rng.randrange(1 << 28):07X}" + (
            prefix if t != "eb" else rng.choice("um")) + (",10,20C" if t == "ba" else "")
            for t in types) + "\n") for _ in range(rng.randrange(1, 30))]
        if trial % 3:  # spoil a line: a character changed, added or dropped; or an integer
            k = rng.randrange(len(lines))
            text = list(lines[k][:-1])
            spot = rng.randrange(len(text))
            action = rng.random()
            if action < 0.4:
                text[spot] = rng.choice("Pabcdez0123456789ABCDEFGnmpui ;,!")
            elif action < 0.7:
                text.insert(spot, rng.choice("Pabcdez0123456789ABCDEFGnmpui ;,"))
            else:
                del text[spot]
            lines[k] = "".join(text) + "\n"
        columns = columns_from_lines([x.encode("latin-1") for x in lines])
        try:
            one_by_one = [sample_from_line(x[:-1]) for x in lines]
        except ValueError:
            assert columns is None
            continue
        if columns is None:
            assert trial % 3, lines  # only a spoilt stretch goes line by line
            continue
        decoded += 1
        for name, column in columns.items():  # a long stretch is decoded by numpy: 1 ulp
            assert column == pytest.approx([getattr(x, name) for x in one_by_one],
                                           rel=2 ** -52, abs=0)
        assert set(columns) == {n for n in ("t_s", "E_V", "I_A", "f_Hz", "z_re_ohm",
                                            "z_im_ohm") if getattr(one_by_one[0], n) is not None}
    assert decoded > 1200


def test_a_stretch_decoded_at_once_tells_the_same_gaps_as_line_by_line():
    """A stretch with a hole longer than the record rule allows, after a garbled line or
    not, gives the same samples and the same gaps whether it is taken at once or line by
    line (Run.take against Run._line)."""
    from lipon_hw.drivers.methodscript.run import Run

    technique = ConstantCurrent(3e-6, 7200, v_max_V=5.1, interval_s=1.0,
                                record=Recording(30, 0.005))
    times = [30.0 * k for k in range(1, 12)] + [600.0, 630.0, 1500.0, 1530.0]
    lines = [f"Peb{encode_value(t)};ab{encode_value(4.0 + t / 1e4)};ba{encode_value(3e-6)}"
             f",10,20C\n".encode() for t in times]
    for before in ([], [b"Pgarbled\n"], [b"Pgarbled\n", b"Pgarbled too\n"]):
        at_once, one_by_one = Run(None, 1, technique), Run(None, 1, technique)
        at_once.take(b"".join([*before, b"M000A\n"]))
        at_once.take(b"".join(lines))
        for line in [*before, b"M000A\n", *lines]:
            one_by_one._line(line[:-1].decode("ascii"))
        gaps = at_once.take_gaps()
        assert gaps == one_by_one.take_gaps() and len(gaps) == 2 + bool(before)
        assert at_once.last == one_by_one.last
        at_once.finished = one_by_one.finished = True  # nothing more to read: no instrument
        assert at_once.poll_block().samples() == one_by_one.poll()


@pytest.mark.parametrize("value, text", [
    (1.5, "1500m"), (-50e-9, "-50n"), (3e-6, "3u"), (1e-4, "100u"), (6, "6"), (0, "0"),
    (4.2, "4200m"), (200e3, "200k"), (5.1, "5100m"), (-3.5e-6, "-3500n"), (0.1, "100m"),
    (1 / 3, "333333333n"),
])
def test_script_numbers(value, text):
    assert format_literal(value) == text
    assert parse_literal(text)[0] == pytest.approx(value, rel=1e-8)


def test_script_number_kinds():
    assert parse_literal("51i") == (51, True)
    assert parse_literal("0x1Fi") == (31, True)
    assert parse_literal("-50n") == (pytest.approx(-50e-9), False)
    for bad in ("1.5", "1e3", "x", "5 m"):
        with pytest.raises(ValueError):
            parse_literal(bad)


def test_error_lines_and_firmware():
    assert decode_error("Z!0006").code == 0x0006
    refused = decode_error("e!4001: Line 3, Col 1")
    assert (refused.code, refused.line, refused.column) == (0x4001, 3, 1)
    assert str(refused) == "!4001 (an unknown script command) at script line 3, column 1"
    assert decode_error("!0014: Line 9").line == 9
    assert decode_error("Pda7F85F3Fu") is None
    fw = decode_firmware("tes4_hr1100#Jan 28 2022 11:04:43\n", "R*\n")
    assert (fw.device_type, fw.version, fw.build, fw.model) == (
        "es4_hr", "1100", "Jan 28 2022 11:04:43", "EmStat4 HR")
    assert all(map(is_marker, ("M0007", "*", "L", "+", "C0005", "-")))
    assert not is_marker("M07")


# --- scripts: golden texts ---------------------------------------------------------------


def test_cc_script_with_limit_and_time_recording():
    lines = build_script(ConstantCurrent(3e-6, 7200, v_max_V=5.1, interval_s=1,
                                         record=Recording(dt_s=30)))
    send = ["    pck_start", "    pck_add t", "    pck_add e", "    pck_add i", "    pck_end"]
    assert lines == [
        "var t", "var e", "var i", "var tn", "store_var tn 0 eb", "set_pgstat_chan 0",
        "set_pgstat_mode 6", "set_max_bandwidth 40", "set_range ab 6",
        "set_autoranging ab 100m 6", "set_range db 3u", "set_i 0", "cell_on", "timer_start",
        "meas_loop_cp e i 3u 1 7200",
        "  timer_get t",
        "  if e >= 5100m", *send, "    breakloop", "  endif",
        "  if t >= tn", *send, "    copy_var t tn", "    add_var tn 30", "  endif",
        "endloop", "on_finished:", "  cell_off"]
    assert script_bytes(lines).startswith(b"e\nvar t\n") and script_bytes(lines).endswith(
        b"  cell_off\n\n")


def test_eis_script_at_open_circuit():
    assert build_script(EIS.per_decade(100e3, 100, 10 / 3)) == [
        "var t", "var e", "var f", "var zr", "var zi", "set_pgstat_chan 0",
        "set_pgstat_mode 3", "set_max_bandwidth 200k", "set_range ba 10u",
        "set_autoranging ba 1n 10m", "cell_off", "meas 100m e ab", "set_e e", "cell_on",
        "timer_start", "meas_loop_eis f zr zi 10m 100k 100 11i e",
        "  timer_get t", "  pck_start", "  pck_add t", "  pck_add f", "  pck_add zr",
        "  pck_add zi", "  pck_end", "endloop", "on_finished:", "  cell_off"]


def test_every_technique_makes_a_script_the_emulator_loads():
    techniques = [OCV(60), ConstantCurrent(-1e-6, 60, v_min_V=3, record=Recording(10, 5e-3)),
                  ConstantVoltage(4.2, 60, i_min_A=1e-8), DCPolarization(1.0, 60),
                  CCCV(1e-6, 4.2, 1e-8, 60), EIS(1e5, 1, 6, dc_V=0.5),
                  LinearSweep(0, 1, 10e-3, 0.1), CyclicSweep(0, 1, -1, 10e-3, 0.1, scans=2)]
    for technique in techniques:
        assert parse_script(build_script(technique)).main
    assert "meas_loop_cv e i 0 1 -1 10m 100m nscans(2)" in build_script(techniques[-1])


def test_bad_techniques_are_bad_input():
    with pytest.raises(InputError, match="interval_s"):
        build_script(OCV(1, interval_s=2))
    with pytest.raises(InputError, match="step_V"):
        build_script(LinearSweep(0, 1, 0, 0.1))


# --- the emulator's bytes ----------------------------------------------------------------


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def cell():
    return RCCell(C=1e-2, Rs=100.0, V0=3.0)


@pytest.fixture
def emulator(cell, clock):
    return MethodScriptEmulator("pstat", {1: cell}, clock)


def test_online_commands(emulator):
    assert emulator.handle(b"t\n") == b"tes4_lr14#Oct  1 2025 12:00:00\nR*\n"
    assert emulator.handle(b"Z\n") == b"Z!0006\n"
    assert emulator.handle(b"x\n") == b"x!0003\n"
    assert emulator.handle(b"\n") == b""  # a bare LF is a flush
    assert emulator.handle(b"t") == b""  # half a line
    assert emulator.handle(b"\r\n").startswith(b"tes4_lr")


@pytest.mark.parametrize("script, error", [
    ("var a\nfoo a\n", b"e!4001: Line 2, Col 1\n"),
    ("var a\nset_e b\n", b"e!420B: Line 2, Col 7\n"),
    ("var 1a\n", b"e!402B: Line 1, Col 5\n"),
    ("var a\nvar a\n", b"e!4026: Line 2, Col 5\n"),
    ("set_e 1.5\n", b"e!4004: Line 1, Col 7\n"),
    ("cell_on 1\n", b"e!420A: Line 1, Col 9\n"),
    ("var a\nmeas_loop_ocp a 1 2\nmeas_loop_ocp a 1 2\nendloop\nendloop\n",
     b"e!400B: Line 3, Col 1\n"),
    ("var a\nif a > 1\nendloop\n", b"e!4012: Line 3, Col 1\n"),
    ("var a\nif a > 1\n", b"e!4018: Line 2, Col 1\n"),
    ("breakloop\n", b"e!400C: Line 1, Col 1\n"),
    ("var a\nmeas_loop_cv a a 0 1 -1 1m 1 nscan(2)\nendloop\n", b"e!4008: Line 2, Col 30\n"),
])
def test_refused_scripts(emulator, script, error):
    assert emulator.handle(b"e\n" + script.encode() + b"\n") == error
    assert not emulator.running


def test_chronopotentiometry_stream(emulator, clock, cell):
    """1 mA into 10 mF behind 100 Ω, sampled every 100 ms for 2 s: 20 packages of the
    measured potential, which rises 10 mV per sample from 3.1 V."""
    script = ("var p\nvar c\nset_pgstat_chan 0\nset_pgstat_mode 6\nset_range db 1m\n"
              "cell_on\nmeas_loop_cp p c 1m 100m 2\n  pck_start\n  pck_add p\n  pck_end\n"
              "endloop\non_finished:\n  cell_off\n\n")
    assert emulator.handle(b"e\n" + script.encode()) == b"e\nM000A\n"
    clock.advance(0.35)
    lines = emulator.handle(b"\n").splitlines()
    assert [decode_package(x.decode())[0].value for x in lines] == pytest.approx(
        [3.11, 3.12, 3.13])
    assert lines[0] == b"Pab82F7470u"  # 3.11 V (cell values are rounded to the µV)
    clock.advance(10)
    rest = emulator.handle(b"\n").splitlines()
    assert len(rest) == 17 + 2 and rest[-2:] == [b"*", b""]
    assert cell.mode == "open" and cell.vc == pytest.approx(3.2)  # on_finished: cell_off


def test_run_time_errors(emulator):
    ocp_with_cell_on = "var e\ncell_on\nmeas_loop_ocp e 1 10\nendloop\n\n"
    assert emulator.handle(b"e\n" + ocp_with_cell_on.encode()) == b"e\n!0014: Line 3\n"
    cp_without_galvanostat = "var e\nvar i\ncell_on\nmeas_loop_cp e i 1u 1 10\nendloop\n\n"
    assert emulator.handle(b"e\n" + cp_without_galvanostat.encode()) == b"e\n!0023: Line 4\n"


def test_busy_channel_refuses_a_second_script(emulator, clock):
    emulator.handle(script_bytes(build_script(OCV(100))))
    assert emulator.handle(b"e\nvar a\n\n") == b"e!0006\n"
    assert emulator.handle(b"Z\n") == b"Z\n*\n\n"


def test_event_driven_loops_send_what_sampling_every_point_sends(clock):
    """The skip ahead over samples whose tests cannot turn true is invisible on the wire."""
    techniques = [
        ConstantCurrent(2e-4, 9000, v_max_V=3.6, interval_s=1, record=Recording(60, 5e-3)),
        ConstantCurrent(-2e-4, 9000, v_min_V=2.7, interval_s=1, record=Recording(dV=2e-3)),
        ConstantVoltage(3.2, 9000, i_min_A=2e-6, interval_s=1, record=Recording(120)),
        ConstantVoltage(2.8, 9000, i_min_A=2e-6, interval_s=1, record=Recording(120)),
        CCCV(2e-4, 3.3, 1e-6, 9000, interval_s=2, record=Recording(100, 3e-3)),
        OCV(3000, 1, Recording(100)),
    ]
    for technique in techniques:
        replies = []
        for event_driven in (True, False):
            clock.t = 0.0
            emulator = MethodScriptEmulator("p", {1: RCCell(C=0.5, Rs=1e3, Rp=1e7)}, clock)
            emulator.event_driven = event_driven
            out = emulator.handle(script_bytes(build_script(technique)))
            for _ in range(40):
                clock.advance(300)
                out += emulator.handle(b"\n")
            replies.append(out)
        assert replies[0] == replies[1], technique
        assert replies[0].endswith(b"*\n\n") and replies[0].count(b"\nP") > 5


def _wire(technique, spec, mode, stop_at=None):
    """Everything an emulator on a fresh cell sends for a technique, polled unevenly and
    aborted at the first poll from stop_at on; mode "bulk" (the default), "event"
    (next_crossing) or "every" (every sample run)."""
    clock = ManualClock()
    emulator = MethodScriptEmulator("p", {1: cell_from_spec(spec)}, clock)
    emulator.event_driven, emulator.bulk_loops = mode != "every", mode == "bulk"
    out = emulator.handle(script_bytes(build_script(technique)))
    for step in range(120):
        clock.advance(300 if step % 3 else 7.3)
        abort = stop_at is not None and clock.t >= stop_at
        out += emulator.handle(b"Z\n" if abort else b"\n")
        stop_at = None if abort else stop_at
    return out


CHARGE = ConstantCurrent(3e-6, 20000, v_max_V=5.1, interval_s=1.0, record=Recording(30, 0.005))


@pytest.mark.parametrize("spec, technique, stop_at", [
    ({"kind": "lnmo", "params": {"initial_soc": 0.0}}, CHARGE, None),
    ({"kind": "lnmo", "params": {"initial_soc": 1.0}},
     ConstantCurrent(-3e-6, 20000, v_min_V=3.5, interval_s=1.0, record=Recording(30, 0.005)),
     None),
    ({"kind": "lnmo", "params": {"initial_soc": 0.0}}, CHARGE, 1207.3),
    ({"kind": "lnmo", "params": {"initial_soc": 0.0},
      "faults": [{"kind": "soft_short", "at_s": 1000.5}]}, CHARGE, None),
    ({"kind": "lnmo", "faults": [{"kind": "hard_short", "at_s": 1000}]},
     ConstantCurrent(3e-6, 3000, v_max_V=5.1, interval_s=1.0, record=Recording(30, 0.005)),
     None),
    ({"kind": "lnmo", "params": {"initial_soc": 0.2}},
     ConstantCurrent(3e-6, 3000, v_max_V=5.1, interval_s=0.7, record=Recording(dV=2e-3)), None),
    ({"kind": "lnmo"}, ConstantCurrent(3e-6, 3000, interval_s=2, record=Recording(45)), None),
    ({"kind": "lnmo", "params": {"initial_soc": 1.0}},
     ConstantCurrent(-3e-6, 2000, v_min_V=4.5, interval_s=1), None),
    ({"kind": "lnmo", "params": {"initial_soc": 0.5}}, OCV(3000, 1, Recording(100, 1e-3)), None),
    ({"kind": "lnmo", "params": {"initial_soc": 0.5}},
     CCCV(3e-6, 4.9, 1e-7, 9000, interval_s=2, record=Recording(100, 3e-3)), None),
    ({"kind": "lco_anodeless"},
     ConstantCurrent(5e-6, 20000, v_max_V=4.2, interval_s=1.0, record=Recording(30, 0.005)),
     None),
    # ΔI: potentiostatic holds, where V is flat and only I moves
    ({"kind": "lnmo", "params": {"initial_soc": 0.5}},
     ConstantVoltage(4.75, 9000, i_min_A=2e-8, interval_s=1, record=Recording(600, 5e-3, 1e-8)),
     None),
    ({"kind": "lnmo", "params": {"initial_soc": 0.5}},
     ConstantVoltage(4.75, 9000, i_min_A=2e-8, interval_s=1, record=Recording(dI=1e-8)), 607.3),
    ({"kind": "lco"},
     ConstantVoltage(4.2, 9000, i_min_A=1e-5, interval_s=1, record=Recording(60, 5e-3, 5e-7)),
     None),
    ({"kind": "lnmo", "params": {"initial_soc": 0.5},
      "faults": [{"kind": "soft_short", "at_s": 600.5}]},
     ConstantVoltage(4.75, 9000, interval_s=1, record=Recording(dI=1e-8)), None),
    ({"kind": "lnmo", "params": {"initial_soc": 0.3}},
     CCCV(3e-6, 4.75, 2e-8, 9000, interval_s=2, record=Recording(300, 3e-3, 2e-8)), None),
    ({"kind": "lnmo", "params": {"initial_soc": 0.3}},
     ConstantCurrent(3e-6, 3000, v_max_V=5.1, interval_s=1, record=Recording(dI=1e-8)), None),
    ({"kind": "lnmo", "params": {"initial_soc": 0.5}}, OCV(3000, 1, Recording(100, dI=1e-8)),
     None),
])
def test_bulk_record_loops_send_what_sampling_every_point_sends(spec, technique, stop_at):
    """The driver's record loops, run in bulk on the cell's measurement grid, send the
    very bytes the interpreter sends sample by sample: a whole LNMO charge and discharge
    at 3 µA on the Δt/ΔV rule, an abort, faults switching on mid-loop, every Recording."""
    bulk = _wire(technique, spec, "bulk", stop_at)
    assert bulk == _wire(technique, spec, "every", stop_at)
    assert bulk == _wire(technique, spec, "event", stop_at)
    assert bulk.endswith(b"*\n\n") and (bulk.count(b"\nP") > 20 or technique.record.dI)
    assert (b"\nZ\n" in bulk) == (stop_at is not None)
    samples = [sample_from_line(x) for x in bulk.decode().splitlines() if x.startswith("P")]
    if technique is CHARGE and stop_at is None and "faults" not in spec:
        assert samples[-1].E_V >= 5.1 > samples[-2].E_V  # the limit sample ends it
        assert len(samples) > 200
    if technique.record.dI and stop_at is None:
        _check_current_rule(technique, samples)


def test_bulk_hold_below_the_cell_sends_what_sampling_every_point_sends():
    """A potentiostatic hold below the cell's potential: a negative current rising to its
    cutoff, followed by ΔI in bulk as sample by sample. (The event-driven path is left out:
    its look-aheads re-anchor the cell's track at each crossing, which moves a reading near
    a table breakpoint by ~1e-9 relative, enough to flip a last digit on the wire.)"""
    spec = {"kind": "lnmo", "params": {"initial_soc": 0.8}}
    technique = CCCV(-3e-6, 4.6, 2e-8, 9000, interval_s=1, record=Recording(120, 5e-3, 1e-8))
    bulk = _wire(technique, spec, "bulk")
    assert bulk == _wire(technique, spec, "every")
    samples = [sample_from_line(x) for x in bulk.decode().splitlines() if x.startswith("P")]
    held = [s for s in samples if s.E_V == 4.6]
    assert len(held) > 50 and all(s.I_A < 0 for s in held)
    _check_current_rule(technique, samples)


def _check_current_rule(technique, samples):
    """What ΔI sends: past a constant current, the first sample only (and the time rule's);
    in a potentiostatic hold, every sample I moved to by dI from the last one sent, and a
    decaying current followed sample after sample down to its cutoff."""
    rec, dI = technique.record, technique.record.dI
    if isinstance(technique, OCV):  # no current at open circuit: the Δt rule alone
        assert [s.t_s for s in samples] == [1.0, *range(101, 3000, 100)]
        return
    if isinstance(technique, ConstantCurrent):
        v_end, v_max = samples[-1].E_V, technique.v_max_V
        assert len(samples) == 2 and v_end >= v_max  # the first sample and the limit's
        return
    held = [s for s in samples if technique.voltage_V == s.E_V]
    assert len(held) > 30
    for a, b in zip(held, held[1:-1], strict=False):  # the last one may be the cutoff's
        moved = abs(b.I_A - a.I_A) >= dI * 0.999  # as rounded on the wire
        assert moved or rec.dt_s and b.t_s - a.t_s >= rec.dt_s or \
            rec.dV and abs(b.E_V - a.E_V) >= rec.dV
    i_min = getattr(technique, "i_min_A", None)
    if i_min is not None:
        assert abs(held[-1].I_A) < i_min <= abs(held[-2].I_A)


def test_a_script_in_pieces_is_the_script_at_once():
    """Scripts are taken a chunk of lines at a time: any split of the bytes (and CRLF
    endings, and a command after the script in the same chunk) gives the same replies."""
    script = script_bytes(build_script(CHARGE))
    variants = [script, script.replace(b"\n", b"\r\n")]
    rng = random.Random(3)
    replies = []
    for data in variants:
        for cuts in ([], list(range(1, len(data))), sorted(rng.sample(range(1, len(data)), 9))):
            clock = ManualClock()
            emulator = MethodScriptEmulator("p", {1: cell_from_spec({"kind": "lnmo"})}, clock)
            out = b""
            for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
                out += emulator.handle(data[a:b])
            clock.advance(600)
            replies.append(out + emulator.handle(b"\nt\n"))
    assert all(r == replies[0] for r in replies)
    assert replies[0].startswith(b"e\nM000A\nP") and b"\ntmes4" not in replies[0]
    assert b"tes4_lr" in replies[0] and replies[0].count(b"\nP") > 10


def test_bulk_loops_take_only_the_bodies_the_driver_writes():
    """A loop body that does anything else than the driver's limits and Δt/ΔV rule runs
    through the interpreter (and still sends the same)."""
    bodies = {
        "driver": build_script(CHARGE)[19:65],  # the loop body
        "else": ["timer_get t", "if t >= tn", "  pck_start", "  pck_add t", "  pck_end",
                 "  copy_var t tn", "  add_var tn 30", "else", "  add_var eh 1m", "endif"],
        "other step": ["timer_get t", "if t >= tn", "  pck_start", "  pck_add t", "  pck_end",
                       "  copy_var t tn", "  add_var tn eh", "endif"],
        "different branches": ["timer_get t", "if t >= tn", "  pck_start", "  pck_add t",
                               "  pck_end", "  copy_var t tn", "  add_var tn 30",
                               "elseif e >= eh", "  pck_start", "  pck_add e", "  pck_end",
                               "  copy_var e eh", "  add_var eh 5m", "endif"],
    }
    for label, body in bodies.items():
        lines = ["var t", "var e", "var i", "var tn", "var eh", "var el", "set_pgstat_chan 0",
                 "set_pgstat_mode 6", "set_range db 3u", "cell_on", "timer_start",
                 "meas_loop_cp e i 3u 1 4000", *(f"  {x}" for x in body), "endloop",
                 "on_finished:", "  cell_off"]
        replies = []
        for bulk in (True, False):
            clock = ManualClock()
            emulator = MethodScriptEmulator("p", {1: cell_from_spec({"kind": "lnmo"})}, clock)
            emulator.bulk_loops = bulk
            out = emulator.handle(script_bytes(lines))
            clock.advance(5000)
            replies.append(out + emulator.handle(b"\n"))
            loop = parse_script(lines).main[-1]
            recognised = emulator._recorded_body(loop, "e", "i") is not None
            assert recognised == (label == "driver"), label
        assert replies[0] == replies[1] and replies[0].count(b"\nP") > 5, label


def test_every_record_loop_the_driver_writes_runs_in_bulk():
    """Galvanostatic and potentiostatic loops, with limits on E or a current cutoff and
    any mix of the Δt/ΔV/ΔI rules, are recognised; a cutoff or a ΔI rule written some
    other way is not."""
    rules = [Recording(), Recording(60), Recording(dI=1e-8), Recording(60, 5e-3, 1e-8)]
    for record in rules:
        for technique in (ConstantCurrent(3e-6, 100, v_max_V=5.1, record=record),
                          ConstantVoltage(4.7, 100, i_min_A=1e-8, record=record),
                          DCPolarization(1.0, 100, record=record),
                          CCCV(3e-6, 4.7, 1e-8, 100, record=record)):
            program = parse_script(build_script(technique))
            loops = [st for st in program.main if getattr(st, "name", "").startswith("meas")]
            emulator = MethodScriptEmulator("p", {1: cell_from_spec({"kind": "lnmo"})},
                                            ManualClock())
            assert loops and all(emulator._recorded_body(loop, "e", "i") is not None
                                 for loop in loops), (technique, record)
    body = build_script(ConstantVoltage(4.7, 100, i_min_A=1e-8,
                                        record=Recording(60, dI=1e-8)))
    changes = {"one-sided cutoff": ("    if i > -10n", "    if i < 20n"),
               "ΔI steps differ": ("    sub_var il 10n", "    sub_var il 20n"),
               "ΔI up only": ("  elseif i <= il", "  elseif t >= il")}
    for label, (old, new) in changes.items():
        lines = [new if line == old else line for line in body]
        assert lines != body, label
        loop = next(st for st in parse_script(lines).main
                    if getattr(st, "name", "") == "meas_loop_ca")
        emulator = MethodScriptEmulator("p", {1: cell_from_spec({"kind": "lnmo"})},
                                        ManualClock())
        assert emulator._recorded_body(loop, "e", "i") is None, label


# --- driver ↔ emulator -------------------------------------------------------------------


@pytest.fixture
def pstat(emulator):
    return MethodScriptPotentiostat("pstat", sim_link(emulator))


def test_identify(pstat):
    assert pstat.identify() == "PalmSens EmStat4 LR firmware 14 (Oct 1 2025 12:00:00), 1 channel"


def test_cc_charge_stops_at_the_voltage_limit(pstat, clock, cell):
    """V = 3 V + I·t/C + I·Rs with 1 mA, 10 mF, 100 Ω: 4.05 V at 9.5 s; samples every
    0.4 s, so the loop breaks at the first sample past it, 9.6 s."""
    run = pstat.start(1, ConstantCurrent(1e-3, 60, v_max_V=4.05, interval_s=0.4,
                                         record=Recording(dt_s=2.0)))
    clock.advance(5)
    first = run.poll()
    assert [s.t_s for s in first] == pytest.approx([0.4, 2.4, 4.4])
    assert not run.finished and run.end_reason is None
    clock.advance(100)
    last = run.poll()
    assert [s.t_s for s in last] == pytest.approx([6.4, 8.4, 9.6])
    voltage, current = last[-1].E_V, last[-1].I_A
    assert (voltage, current) == (pytest.approx(3.1 + 0.96, abs=1e-6), pytest.approx(1e-3))
    assert run.finished and run.end_reason == "v_max"
    assert cell.mode == "open" and cell.vc == pytest.approx(3.96)


def test_cv_hold_stops_when_the_current_falls(pstat, clock, cell):
    """3.5 V on a 3 V capacitor behind 100 Ω: I = 5 mA·e^(−t/1 s) falls below 0.1 mA at
    ln 50 = 3.91 s; samples every 0.25 s → 4.0 s."""
    run = pstat.start(1, ConstantVoltage(3.5, 60, i_min_A=1e-4, interval_s=0.25,
                                         record=Recording(dt_s=10)))
    clock.advance(60)
    samples = run.poll()
    assert [s.t_s for s in samples] == pytest.approx([0.25, 4.0])
    current = samples[-1].I_A
    assert current == pytest.approx(5e-3 * math.exp(-4.0), rel=1e-5)
    assert run.end_reason == "i_min"


def test_cccv_charges_then_holds(pstat, clock, cell):
    run = pstat.start(1, CCCV(1e-3, 3.5, 2e-4, 60, interval_s=0.1))
    clock.advance(60)
    samples = run.poll()
    cc = [s for s in samples if math.isclose(s.I_A, 1e-3)]
    assert cc[-1].E_V >= 3.5 and cc[-1].t_s == pytest.approx(4.0, abs=0.15)  # 3.1 V + t/10 s
    assert abs(samples[-1].I_A) < 2e-4 and run.end_reason == "i_min"


def test_eis_of_r_parallel_c(clock):
    """Rs + Rp‖C at the open-circuit potential: the analytic values, to the package's
    resolution."""
    cell = RCCell(C=1e-6, Rs=10.0, V0=2.0, Rp=1e3)
    exact = MethodScriptEmulator("p", {1: cell}, clock, eis_noise=0)
    pstat = MethodScriptPotentiostat("pstat", sim_link(exact))
    technique = EIS.per_decade(1e5, 1.0, 2)
    run = pstat.start(1, technique)
    clock.advance(30)
    samples = run.poll()
    assert run.end_reason == "done" and len(samples) == 11
    for sample, f in zip(samples, technique.frequencies_Hz, strict=True):
        z = 10 + 1e3 / (1 + 2j * math.pi * f * 1e3 * 1e-6)
        assert sample.f_Hz == pytest.approx(f, rel=1e-6)
        assert complex(sample.z_re_ohm, sample.z_im_ohm) == pytest.approx(z, abs=2e-3)  # mΩ
    assert cmath.phase(complex(samples[5].z_re_ohm, samples[5].z_im_ohm)) < -0.5


def _spectra(seed=None, channels=(1,), **settings):
    """The EIS points of each channel of a fresh instrument, each on its own R + R‖C."""
    clock = ManualClock()
    cells = {ch: RCCell(C=1e-6, Rs=10.0, V0=2.0, Rp=1e3) for ch in channels}
    kwargs = settings if seed is None else {"seed": seed, **settings}
    emulator = MethodScriptEmulator("p", cells, clock, **kwargs)
    pstat = MethodScriptPotentiostat("p", [sim_link(emulator.ports[ch]) for ch in channels])
    technique = EIS.per_decade(1e5, 1.0, 4)
    runs = {ch: pstat.start(ch, technique) for ch in channels}
    clock.advance(60)
    return technique, {ch: [complex(s.z_re_ohm, s.z_im_ohm) for s in run.poll()]
                       for ch, run in runs.items()}


def test_eis_points_carry_seeded_noise_of_a_fraction_of_a_percent():
    """An EIS point is the impedance plus Gaussian noise, 0.3 % of |Z| on each part by
    default: the same seed gives the same spectrum, channels and seeds differ."""
    technique, spectra = _spectra(seed=7, channels=(1, 2))
    first = spectra[1]
    exact = [10 + 1e3 / (1 + 2j * math.pi * f * 1e-3) for f in technique.frequencies_Hz]
    errors = [(z - w) / abs(w) for z, w in zip(first, exact, strict=True)]
    parts = [e.real for e in errors] + [e.imag for e in errors]
    rms = math.sqrt(sum(x * x for x in parts) / len(parts))
    assert len(first) == 21 and 0.0015 < rms < 0.006
    assert max(abs(e) for e in errors) < 0.03
    assert _spectra(seed=7, channels=(1, 2))[1] == spectra  # seeded
    assert spectra[2] != first and _spectra(seed=8)[1][1] != first
    assert _spectra()[1][1] == _spectra(seed=0)[1][1]  # the default seed is 0
    quiet = _spectra(seed=7, eis_noise=0)[1][1]
    assert quiet == pytest.approx(exact, abs=2e-3)
    for bad in (-0.01, 0.5, "1%", True):
        with pytest.raises(InputError, match="eis_noise is a fraction of"):
            MethodScriptEmulator("p", {1: RCCell()}, ManualClock(), eis_noise=bad)
    with pytest.raises(InputError, match="seed must be a whole number"):
        MethodScriptEmulator("p", {1: RCCell()}, ManualClock(), seed=-1)


def test_sweeps_and_ocv(pstat, clock, cell):
    run = pstat.start(1, LinearSweep(3.0, 3.1, 0.01, 0.1))  # 11 steps of 0.1 s
    clock.advance(2)
    sweep = run.poll()
    assert [s.E_V for s in sweep] == pytest.approx([3.0 + 0.01 * k for k in range(11)])
    assert run.end_reason == "done"
    run = pstat.start(1, OCV(5, interval_s=1))
    clock.advance(6)
    assert [(s.t_s, s.I_A) for s in run.poll()] == [(pytest.approx(k), None)
                                                    for k in range(1, 6)]


def test_stop_aborts_and_switches_off(pstat, clock, cell):
    run = pstat.start(1, ConstantCurrent(1e-5, 3600, interval_s=1))
    clock.advance(10.5)
    pstat.stop(1)
    assert run.finished and run.aborted and run.end_reason == "aborted"
    assert len(run.poll()) == 10
    assert cell.mode == "open" and cell.t == pytest.approx(10.5)
    pstat.stop(1)  # nothing running: Z!0006 is fine


def test_cell_on_at_open_circuit_or_at_a_potential_and_off(pstat, clock, cell):
    pstat.cell_on(1)
    assert (cell.mode, cell.value) == ("current", 0.0)
    pstat.cell_on(1, 3.3)
    assert cell.value == pytest.approx(3.3)
    pstat.cell_off(1)
    assert cell.mode == "open"


def test_running_channel_is_refused_and_wire_refusal_is_an_instrument_error(pstat, emulator):
    pstat.start(1, OCV(100))
    with pytest.raises(InstrumentError, match="still running OCV"):
        pstat.start(1, OCV(10))
    other = MethodScriptPotentiostat("other", pstat.links[0])  # a second host on the port
    with pytest.raises(InstrumentError, match=r"refused the OCV script with !0006"):
        other.start(1, OCV(10))


def test_instrument_error_ends_a_run(pstat, clock, emulator, cell):
    """A run-time error on the instrument (its channel failing mid-script) ends the run
    with that error and the cell off. (An EIS of zero amplitude, the old way to provoke
    one, is refused by the host now: the emulator's own refusal of it is tested on the
    wire.)"""
    run = pstat.start(1, EIS(1e3, 1, 3))
    clock.advance(0.5)
    emulator.channel_fault(0x4205, clock())
    clock.advance(0.5)
    run.poll()
    assert run.error.code == 0x4205 and run.end_reason == "error"
    assert cell.mode == "open"


def test_the_emulator_refuses_an_impedance_scan_of_zero_amplitude(emulator, clock):
    """On the wire (the host's techniques cannot ask for it): meas_loop_eis with a 0 V
    excitation stops the script with the run-time error 4205 on its line."""
    lines = ["e", "var f", "var r", "var j", "set_pgstat_mode 3", "cell_on",
             "meas_loop_eis f r j 0 1k 1 3i 0", "  pck_start", "  pck_add f", "  pck_end",
             "endloop", ""]
    answer = emulator.handle(("\n".join(lines) + "\n").encode("ascii")).decode("ascii")
    clock.advance(10)
    answer += emulator.handle(b"\n").decode("ascii")
    assert "!4205: Line 6" in answer and "\nP" not in answer


def test_garbled_reply_is_retried(pstat, emulator):
    emulator.faults.garble_replies = 1
    assert pstat.identify().startswith("PalmSens EmStat4 LR")
    assert emulator.faults.garble_replies == 0
    assert pstat.links[0].health is Health.OK and pstat.links[0].last_error


def test_garbled_data_line_is_dropped_and_counted(pstat, emulator, clock):
    run = pstat.start(1, ConstantCurrent(1e-6, 600, interval_s=1))
    clock.advance(20)
    emulator.faults.garble_replies = 1
    samples = run.poll()  # the garbled byte is a `P` turned LF: an empty line, a headless one
    assert run.corrupt_lines == ["", "eb8A7D8C0u;ab82DCB70u;ba80F4240p,10,20C"]
    assert len(samples) == 19 and not run.finished
    clock.advance(5)
    assert len(run.poll()) == 5


def test_link_down_is_lost(pstat, emulator):
    emulator.faults.link_down = True
    with pytest.raises(LinkLost, match="sim://pstat is lost after 3 attempts"):
        pstat.identify()


def test_multichannel_runs_in_parallel_and_make_safe_stops_all(clock):
    cells = {ch: RCCell(C=1e-2, Rs=100.0, V0=3.0 + ch / 10) for ch in (1, 2, 3)}
    emulator = MethodScriptEmulator("mes4", cells, clock)
    assert emulator.handle(b"t\n").startswith(b"tmes4lr")
    pstat = MethodScriptPotentiostat("mes4", [sim_link(port) for port in
                                              emulator.ports.values()], channels=3)
    runs = {ch: pstat.start(ch, ConstantCurrent(1e-4 * ch, 600, interval_s=1))
            for ch in (1, 2, 3)}
    clock.advance(10)
    for ch, run in runs.items():
        voltage = run.poll()[-1].E_V  # V0 + I·t/C + I·Rs after 10 s
        assert voltage == pytest.approx(3.0 + ch / 10 + 0.01 * ch * 10 + 0.01 * ch)
    pstat.stop(2)
    clock.advance(5)
    assert runs[2].finished and not runs[1].finished
    pstat.make_safe()
    assert all(run.finished for run in runs.values())
    assert all(cell.mode == "open" for cell in cells.values())
    assert pstat.identify() == ("PalmSens MultiEmStat4 LR firmware 14 (Oct 1 2025 12:00:00), "
                                "3 channels")


def test_channel_numbers_and_links_must_agree(emulator, clock):
    link = sim_link(emulator)
    with pytest.raises(InputError, match="16 channels need 16 links"):
        MethodScriptPotentiostat("p", link, channels=16)
    with pytest.raises(InputError, match="channels 1–1, not 2"):
        MethodScriptPotentiostat("p", link).start(2, OCV(1))
    with pytest.raises(InputError, match="numbered from 1"):
        MethodScriptEmulator("p", {0: RCCell()}, clock)


# --- independent clients over TCP --------------------------------------------------------
#: the OCP of a 1.000000 V capacitor, in µV: 0x8000000 + 1000000 = 0x80F4240
OCP_SCRIPT = b"e\nvar p\nset_pgstat_chan 0\nset_pgstat_mode 2\ncell_off\n" \
             b"meas_loop_ocp p 50m 200m\npck_start\npck_add p\npck_end\nendloop\n\n"
OCP_OUTPUT = b"e\nM000B\n" + b"Pab80F4240u\n" * 4 + b"*\n\n"


@pytest.fixture
def server():
    emulator = MethodScriptEmulator("pstat", {1: RCCell(V0=1.0)}, time.monotonic)
    srv = serve(emulator)
    yield srv
    srv.stop()


def _read_until(port, tail: bytes, limit_s: float = 2.0) -> bytes:
    """Read until the bytes end with `tail`, nudging with a bare LF: the loopback server
    only answers what it receives."""
    data, deadline = b"", time.monotonic() + limit_s
    while not data.endswith(tail) and time.monotonic() < deadline:
        port.write(b"\n")
        data += port.read(4096)  # whatever came within the port's timeout
    return data


def test_pyserial_client(server):
    port = serial.serial_for_url(f"socket://127.0.0.1:{server.port}", timeout=1)
    try:
        port.write(b"t\n")
        assert port.read_until(b"*\n") == b"tes4_lr14#Oct  1 2025 12:00:00\nR*\n"
        port.write(b"Z\n")
        assert port.read_until(b"\n") == b"Z!0006\n"
        port.write(b"e\nvar p\nset_e q\n\n")
        assert port.read_until(b"\n") == b"e!420B: Line 2, Col 7\n"
        port.write(OCP_SCRIPT)
        port.timeout = 0.1
        assert _read_until(port, b"*\n\n") == OCP_OUTPUT
    finally:
        port.close()


def test_pyvisa_client(server):
    with visa_socket(server.port) as inst:
        inst.write_raw(b"t\n")
        assert inst.read_bytes(34) == b"tes4_lr14#Oct  1 2025 12:00:00\nR*\n"
        inst.write_raw(OCP_SCRIPT)
        assert inst.read_bytes(8) == b"e\nM000B\n"
        time.sleep(0.3)
        inst.write_raw(b"\n")
        assert inst.read_bytes(len(OCP_OUTPUT) - 8) == OCP_OUTPUT[8:]
        inst.write_raw(b"q\n")
        assert inst.read_bytes(7) == b"q!0003\n"


def test_driver_over_tcp(server):
    pool = LinkPool()
    try:
        link = pool.open(f"socket://127.0.0.1:{server.port}",
                         MethodScriptPotentiostat.SERIAL_DEFAULTS, timeout_s=0.1)
        pstat = MethodScriptPotentiostat("pstat", link)
        assert pstat.identify().startswith("PalmSens EmStat4 LR firmware 14")
        run = pstat.start(1, OCV(0.2, interval_s=0.05))
        samples = _polled_to_its_end(run)
        assert [s.E_V for s in samples] == pytest.approx([1.0] * 4)
        assert run.end_reason == "done"
        pstat.make_safe()
    finally:
        pool.close()


def _polled_to_its_end(run, limit_s: float = 10.0) -> list:
    """The samples of polls taken one after the other until the run's end has come."""
    samples, deadline = [], time.monotonic() + limit_s
    while not run.finished and time.monotonic() < deadline:
        samples += run.poll()
        time.sleep(0.01)
    assert run.finished, "the script's end never came"
    return samples


def test_a_poll_takes_what_has_arrived_and_waits_for_nothing(server):
    """Every read of a poll asks the port for what has arrived, with no wait for a first
    byte or for a pause: a host polls a bank's channels in turn, and a wait is paid per
    channel whether or not anything comes (it was 50 ms for a first byte, so 128 channels
    polled every 2 s spent 3.2 s of every second waiting). What is still on its way comes
    with a later poll: every sample of the run arrives, in order, once."""

    class WatchedPort(SerialPort):
        waits: list[float] = []

        def read_waiting(self, timeout_s: float) -> bytes:
            self.waits.append(timeout_s)
            return super().read_waiting(timeout_s)

    address = f"socket://127.0.0.1:{server.port}"
    link = Link(address, WatchedPort(address, MethodScriptPotentiostat.SERIAL_DEFAULTS),
                timeout_s=1.0)
    try:
        pstat = MethodScriptPotentiostat("pstat", link)
        run = pstat.start(1, OCV(0.4, interval_s=0.05))
        WatchedPort.waits.clear()  # the upload's own reply is waited for, as it must be
        samples = _polled_to_its_end(run)
        assert WatchedPort.waits and set(WatchedPort.waits) == {0.0}
        assert [s.E_V for s in samples] == pytest.approx([1.0] * 8)
        assert [s.t_s for s in samples] == pytest.approx([0.05 * k for k in range(1, 9)])
    finally:
        link.close()
