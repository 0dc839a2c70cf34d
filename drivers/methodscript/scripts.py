"""Techniques → MethodSCRIPT scripts: the lines the driver uploads for each technique,
its limits and its record rule."""

from __future__ import annotations

from collections.abc import Sequence as Lines

from lipon_hw.drivers.methodscript.codec import format_literal, script_bytes
from lipon_hw.techniques import (
    CCCV,
    EIS,
    OCV,
    ConstantCurrent,
    ConstantVoltage,
    CyclicSweep,
    DCPolarization,
    LinearSweep,
    MultisineEIS,
    RecordGate,
    Recording,
    Sequence,
    Technique,
    Window,
    check_technique,
    end_limits,
    recording_of,
    sweep_legs,
)

L = format_literal
#: 10 µA: the ranges of a thin-film cell; autoranging spans 1 nA–10 mA (EmStat4 LR)
I_RANGE_LOW, I_RANGE_HIGH = "1n", "10m"


def build_script(technique: Technique) -> list[str]:
    """The script lines (without the `e` and the final empty line) for a technique."""
    check_technique(technique)
    return SCRIPT_BUILDERS[type(technique)](technique)


def _record_vars(rec: Recording) -> list[str]:
    """The rule's thresholds where a RecordGate starts them (0, so that the first sample
    goes out)."""
    gate = RecordGate(rec)
    lines = ["var tn"] if rec.dt_s is not None else []
    lines += ["var eh", "var el"] if rec.dV is not None else []
    lines += ["var ih", "var il"] if rec.dI is not None else []
    lines += [f"store_var tn {L(gate.next_t)} eb"] if rec.dt_s is not None else []
    lines += [f"store_var eh {L(gate.e_high)} ab",
              f"store_var el {L(gate.e_low)} ab"] if rec.dV is not None else []
    lines += [f"store_var ih {L(gate.i_high)} ba",
              f"store_var il {L(gate.i_low)} ba"] if rec.dI is not None else []
    return lines


def _package(names: Lines[str]) -> list[str]:
    return ["pck_start", *(f"pck_add {name}" for name in names), "pck_end"]


def _record_block(rec: Recording, names: Lines[str]) -> list[str]:
    """The body lines that send a sample: always, or by RecordGate's tests and moves written
    as script lines (ΔI only where the loop measures a current `i`)."""
    if rec.every_point:
        return _package(names)
    send = _package(names)
    if rec.dt_s is not None:
        send += ["copy_var t tn", f"add_var tn {L(rec.dt_s)}"]
    if rec.dV is not None:
        send += ["copy_var e eh", f"add_var eh {L(rec.dV)}", "copy_var e el",
                 f"sub_var el {L(rec.dV)}"]
    if rec.dI is not None:
        send += ["copy_var i ih", f"add_var ih {L(rec.dI)}", "copy_var i il",
                 f"sub_var il {L(rec.dI)}"]
    rules = (["t >= tn"] if rec.dt_s is not None else []) + (
        ["e >= eh", "e <= el"] if rec.dV is not None else []) + (
        ["i >= ih", "i <= il"] if rec.dI is not None else [])
    lines: list[str] = []
    for n, rule in enumerate(rules):
        lines += [f"{'if' if n == 0 else 'elseif'} {rule}", *_indent(send)]
    return [*lines, "endif"]


def _limit(condition: str, names: Lines[str], end: str = "breakloop") -> list[str]:
    """Send the sample and end the loop (`breakloop`) or the script (`abort`: on to
    `on_finished:`, the cell switched off) when `condition` holds."""
    return [f"if {condition}", *_indent(_package(names)), f"  {end}", "endif"]


def _indent(lines: Lines[str]) -> list[str]:
    return [f"  {line}" for line in lines]


def _loop(head: str, body: Lines[str]) -> list[str]:
    return [head, *_indent(body), "endloop"]


def _finish() -> list[str]:
    return ["on_finished:", "  cell_off"]


TEI = ("t", "e", "i")


def _ocv_script(tq: OCV) -> list[str]:
    record = recording_of(tq)  # no current to follow at open circuit
    body = ["timer_get t", *_record_block(record, ("t", "e"))]
    return ["var t", "var e", *_record_vars(record), "set_pgstat_chan 0",
            "set_pgstat_mode 2", "set_max_bandwidth 40", "cell_off", "timer_start",
            *_loop(f"meas_loop_ocp e {L(tq.interval_s)} {L(tq.duration_s)}", body)]


def _window_on_e(window: Window | None) -> list[str]:
    """The safety window where E moves (a galvanostatic loop): a sample strictly past it
    is sent and aborts the script (a CCCV's hold does not follow), tested before the
    step's own limits (Window)."""
    if window is None:
        return []
    return [*(_limit(f"e < {L(window.min_V)}", TEI, "abort")
              if window.min_V is not None else []),
            *(_limit(f"e > {L(window.max_V)}", TEI, "abort")
              if window.max_V is not None else [])]


def _window_on_i(window: Window | None) -> list[str]:
    """The safety window's current where I moves (a potentiostatic loop): |I| strictly
    above max_current_A, as two comparisons, each aborting the script."""
    if window is None or window.max_current_A is None:
        return []
    i_max = window.max_current_A
    return [*_limit(f"i > {L(i_max)}", TEI, "abort"), *_limit(f"i < {L(-i_max)}", TEI, "abort")]


def _cc_body(rec: Recording, v_max: float | None, v_min: float | None,
             window: Window | None) -> list[str]:
    body = ["timer_get t", *_window_on_e(window)]
    body += _limit(f"e >= {L(v_max)}", TEI) if v_max is not None else []
    body += _limit(f"e <= {L(v_min)}", TEI) if v_min is not None else []
    return body + _record_block(rec, TEI)


def _cv_body(rec: Recording, i_min: float | None, window: Window | None) -> list[str]:
    body = ["timer_get t", *_window_on_i(window)]
    if i_min is not None:  # |I| < i_min as two nested comparisons
        body += [f"if i < {L(i_min)}", *_indent(_limit(f"i > {L(-i_min)}", TEI)), "endif"]
    return body + _record_block(rec, TEI)


def _galvanostat(current: float) -> list[str]:
    return ["set_pgstat_mode 6", "set_max_bandwidth 40", "set_range ab 6",
            "set_autoranging ab 100m 6", f"set_range db {L(abs(current) or 1e-9)}", "set_i 0",
            "cell_on"]


def potentiostat_lines(voltage: float) -> list[str]:
    return ["set_pgstat_mode 2", "set_max_bandwidth 40", f"set_range_minmax da {L(voltage)} "
            f"{L(voltage)}", "set_range ba 10u", f"set_autoranging ba {I_RANGE_LOW} {I_RANGE_HIGH}",
            f"set_e {L(voltage)}", "cell_on"]


def _cc_script(tq: ConstantCurrent) -> list[str]:
    loop = f"meas_loop_cp e i {L(tq.current_A)} {L(tq.interval_s)} {L(tq.duration_s)}"
    return ["var t", "var e", "var i", *_record_vars(tq.record), "set_pgstat_chan 0",
            *_galvanostat(tq.current_A), "timer_start",
            *_loop(loop, _cc_body(tq.record, tq.v_max_V, tq.v_min_V, tq.window)),
            *_finish()]


def _cv_script(tq: ConstantVoltage | DCPolarization) -> list[str]:
    loop = f"meas_loop_ca e i {L(tq.voltage_V)} {L(tq.interval_s)} {L(tq.duration_s)}"
    return ["var t", "var e", "var i", *_record_vars(tq.record), "set_pgstat_chan 0",
            *potentiostat_lines(tq.voltage_V), "timer_start",
            *_loop(loop, _cv_body(tq.record, end_limits(tq).i_min_A, tq.window)),
            *_finish()]


def _cccv_script(tq: CCCV) -> list[str]:
    up = tq.current_A >= 0
    cc = f"meas_loop_cp e i {L(tq.current_A)} {L(tq.interval_s)} {L(tq.duration_s)}"
    cv = f"meas_loop_ca e i {L(tq.voltage_V)} {L(tq.interval_s)} {L(tq.duration_s)}"
    return ["var t", "var e", "var i", *_record_vars(tq.record), "set_pgstat_chan 0",
            *_galvanostat(tq.current_A), "timer_start",
            *_loop(cc, _cc_body(tq.record, tq.voltage_V if up else None,
                                None if up else tq.voltage_V, tq.window)),
            *potentiostat_lines(tq.voltage_V),
            *_loop(cv, _cv_body(tq.record, tq.i_min_A, tq.window)),
            *_finish()]


def _eis_script(tq: EIS) -> list[str]:
    return _impedance_script(tq, f"meas_loop_eis f zr zi {L(tq.amplitude_V)} "
                                 f"{L(tq.f_start_Hz)} {L(tq.f_end_Hz)} {tq.points}i e")


def _impedance_script(tq: EIS | MultisineEIS, loop: str) -> list[str]:
    """At `dc_V`, or at the open-circuit potential measured just before; a P line (time,
    frequency, Z re, Z im) per frequency."""
    dc = ["meas 100m e ab"] if tq.dc_V is None else [f"store_var e {L(tq.dc_V)} da"]
    return ["var t", "var e", "var f", "var zr", "var zi", "set_pgstat_chan 0",
            "set_pgstat_mode 3", "set_max_bandwidth 200k", "set_range ba 10u",
            f"set_autoranging ba {I_RANGE_LOW} {I_RANGE_HIGH}", "cell_off", *dc, "set_e e",
            "cell_on", "timer_start",
            *_loop(loop, ["timer_get t", *_package(("t", "f", "zr", "zi"))]), *_finish()]


def _multisine_script(tq: MultisineEIS) -> list[str]:
    """The sweep's script with its loop given the lipon-hw `multisine(k1,k2,…)` option (not
    in the MethodSCRIPT manual: only an instrument that takes it runs it, see
    MethodScriptPotentiostat): amplitude the peak of the sum, f_start the fundamental f0,
    f_end the top tone, points the number of tones, the option their harmonic numbers
    ascending. One P line per tone, lowest first, once the window has been measured."""
    design = tq.design
    harmonics = ",".join(str(k) for k in design.harmonics)
    return _impedance_script(tq, f"meas_loop_eis f zr zi {L(tq.amplitude_V)} "
                                 f"{L(design.f0_Hz)} {L(design.frequencies_Hz[-1])} "
                                 f"{len(design.harmonics)}i e multisine({harmonics})")


def _lsv_script(tq: LinearSweep) -> list[str]:
    return _sweep_script(tq, f"meas_loop_lsv e i {L(tq.start_V)} {L(tq.end_V)} "
                             f"{L(tq.step_V)} {L(tq.rate_V_s)}")


def _cv_sweep_script(tq: CyclicSweep) -> list[str]:
    scans = f" nscans({tq.scans})" if tq.scans > 1 else ""
    return _sweep_script(tq, f"meas_loop_cv e i {L(tq.start_V)} {L(tq.vertex1_V)} "
                             f"{L(tq.vertex2_V)} {L(tq.step_V)} {L(tq.rate_V_s)}{scans}")


def _sweep_script(tq: LinearSweep | CyclicSweep, loop: str) -> list[str]:
    ends = [v for leg in sweep_legs(tq) for v in leg]
    low, high = min(ends), max(ends)
    return ["var t", "var e", "var i", "set_pgstat_chan 0", "set_pgstat_mode 2",
            "set_max_bandwidth 40", f"set_range_minmax da {L(low)} {L(high)}",
            "set_range ba 10u", f"set_autoranging ba {I_RANGE_LOW} {I_RANGE_HIGH}",
            f"set_e {L(tq.start_V)}", "cell_on", "timer_start",
            *_loop(loop, ["timer_get t", *_package(TEI)]), *_finish()]


def _sequence_script(tq: Sequence) -> list[str]:
    """The phases' scripts one after the other in one script: their variables declared
    once, at the top; the timer started once (every sample's time from the sequence's
    start); each phase's record thresholds set afresh before its loop (its first sample
    goes out, as in a script of its own); one `on_finished:` at the end, where a phase's
    safety window `abort`s to. A phase's limit `breakloop`s on to the next phase."""
    names: list[str] = []
    body: list[str] = []
    timer = False
    for phase in tq.phases:
        lines = SCRIPT_BUILDERS[type(phase)](phase)
        if lines[-2:] == _finish():
            lines = lines[:-2]
        for line in lines:
            if line.startswith("var "):
                if line not in names:
                    names.append(line)
            elif line == "timer_start":
                if not timer:
                    body.append(line)
                timer = True
            else:
                body.append(line)
    return [*names, *body, *_finish()]


def loop_counts(technique: Technique) -> tuple[int, ...]:
    """How many measurement loops (start markers in the output) each phase of a
    technique's script runs: one entry for a technique of its own, one a phase for a
    Sequence. Kept by the object, as its script (`script_bytes_for`)."""
    phases = technique.phases if isinstance(technique, Sequence) else (technique,)
    return _by_object(_LOOPS_BY_OBJECT, technique, lambda: tuple(
        sum(line.startswith("meas_loop") for line in SCRIPT_BUILDERS[type(phase)](phase))
        for phase in phases))


def _by_object(cache: dict, technique: Technique, make):
    """make(), kept in `cache` by the technique object (techniques are frozen: the same
    object, the same answer): id → (the technique, held so that its id is not reused, the
    answer); at most 256 kept."""
    known = cache.get(id(technique))
    if known is not None and known[0] is technique:
        return known[1]
    answer = make()
    if len(cache) >= 256:
        cache.clear()
    cache[id(technique)] = (technique, answer)
    return answer


#: the script of each technique type
SCRIPT_BUILDERS = {OCV: _ocv_script, ConstantCurrent: _cc_script, ConstantVoltage: _cv_script,
                   DCPolarization: _cv_script, CCCV: _cccv_script, EIS: _eis_script,
                   MultisineEIS: _multisine_script, LinearSweep: _lsv_script,
                   CyclicSweep: _cv_sweep_script, Sequence: _sequence_script}
_SCRIPTS: dict[str, bytes] = {}  # a cycling test starts the same few techniques again
#: the same by the technique object itself (a channel starts the one it made again)
_BY_OBJECT: dict[int, tuple[Technique, bytes]] = {}
_LOOPS_BY_OBJECT: dict[int, tuple[Technique, tuple[int, ...]]] = {}


def script_bytes_for(technique: Technique) -> bytes:
    """script_bytes(build_script(technique)), kept by the technique's repr (which tells
    1 from 1.0, unlike ==), and by the object (`_by_object`)."""
    return _by_object(_BY_OBJECT, technique, lambda: _script_by_repr(technique))


def _script_by_repr(technique: Technique) -> bytes:
    key = f"{type(technique).__qualname__}{technique!r}"
    script = _SCRIPTS.get(key)
    if script is None:
        script = script_bytes(build_script(technique))
        if len(_SCRIPTS) >= 64:
            _SCRIPTS.clear()
        _SCRIPTS[key] = script
    return script
