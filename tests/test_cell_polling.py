"""How a cell test polls a buffering potentiostat (MethodSCRIPT): rarely while a step is
far from its end, promptly once it is near. A step that repeats (a cycling protocol's)
is expected to change by as much as it changed the cycle before, so prompt polling starts
a short margin before that end, and the gap between the instrument ending a step and the
host starting the next stays within the prompt cadence."""

from __future__ import annotations

import contextlib
from pathlib import Path

from faulty import fault_station
from stores import committed
from test_cell_programs import steps_one_by_one

from lipon_hw.celltest import channels, polling
from lipon_hw.celltest.session import start_cycling
from lipon_hw.errors import LiponError
from lipon_hw.sim.cells.model import CellModel
from lipon_hw.store import Store

from recipes import LNMO

ROOT = Path(__file__).resolve().parents[1]


def _steps(db):
    """(step_count, first sample t, last sample t) of channel 1's steps, in order."""
    return committed(db, "SELECT step_count, MIN(t_s), MAX(t_s) FROM cell_samples WHERE"
                     " channel = 1 GROUP BY step_count ORDER BY step_count")


def _count_polls(monkeypatch) -> list[int]:
    """The step count of each poll of the channel's potentiostat, counted as the channel
    decides when to make it (one wait before each poll)."""
    polls: list[int] = []
    real_wait = polling.wait_s

    def counted(channel, *args, **kwargs):
        polls.append(channel.state.step_count)
        return real_wait(channel, *args, **kwargs)

    monkeypatch.setattr(polling, "wait_s", counted)
    return polls


def test_a_repeated_step_is_polled_promptly_only_near_its_expected_end(tmp_path, monkeypatch):
    # each step started on its own, as where the host judges a step's end or a rule (a
    # cycle as one program on the instrument: test_cell_programs)
    steps_one_by_one(monkeypatch)
    polls = _count_polls(monkeypatch)
    protocol = tmp_path / "lnmo.yaml"
    protocol.write_text(LNMO.format(channels="1", cycles=40), encoding="utf-8")
    result = start_cycling(str(protocol), tmp_path / "data", workers=1)
    assert result.status == "completed", result.message
    steps = _steps(tmp_path / "data" / "lipon.db")
    assert len(steps) == 80  # 40 cycles of a charge and a discharge
    # the cell fades slowly: once steady, each step's end is foreseen to within seconds
    store = Store(tmp_path / "data")
    shifts = store.channels(result.run_id)[0].state["shifts"]
    store.close()
    assert shifts and all(abs(s) < 10 for s in shifts.values()), shifts
    # the first cycle is longer than the next (a rested cell), so its change is not taken
    # as the trend: the third cycle still polls from 2 % of the step before its end
    steady = [n for n, *_ in steps[6:]]
    per_step = [polls.count(n) for n in steady]
    # the instrument judges the safety window, so no poll halfway (WINDOW_POLL_S is
    # longer than the step); a steady step is asked first at its expected end, and again
    # at the prompt cadence if it has not ended yet (three or four polls a step when a
    # halfway poll and one NEAR_MARGIN_S before the end came first); a steady step's
    # voltage heading for its end calls no poll of its own (it took 7 when it did, and 11
    # or 12 with 2 % of a 30 min step as the margin)
    assert max(per_step) <= 2 and sum(per_step) <= 1.5 * len(per_step), per_step
    # the instrument waits at most a prompt poll (and the host's start) for the next step
    gaps = [b[1] - a[2] for a, b in zip(steps[4:], steps[5:], strict=False)]
    assert max(gaps) <= polling.NEAR_END_POLL_S + 2.0, gaps


def test_a_step_shorter_than_its_last_run_is_caught_by_its_voltage(tmp_path, monkeypatch):
    """The shipped protocol's second 15 h formation charge ends 3 % sooner than the first,
    before its prompt polling begins: the samples' slope toward 5.1 V calls the polls
    that find its end (the 2 % rule alone found it 480 s late). The second formation
    cycle (charge and discharge of ~10 h, as one program) is polled promptly every
    thousandth of it, not every 5 s: 164 polls then, under 60 now."""
    cycles: list[int] = []  # the cycle of each poll
    real_wait = polling.wait_s

    def wait(channel, *args, **kwargs):
        cycles.append(channel.state.cycle)
        return real_wait(channel, *args, **kwargs)

    monkeypatch.setattr(polling, "wait_s", wait)
    text = (ROOT / "sequences" / "lnmo_cycling.yaml").read_text(encoding="utf-8")
    text = text.replace("channels: 1-16", "channels: 1").replace("times: 598", "times: 1")
    protocol = tmp_path / "lnmo.yaml"
    protocol.write_text(text, encoding="utf-8")
    result = start_cycling(str(protocol), tmp_path / "data", workers=1)
    assert result.status == "completed", result.message
    # the impedance spectrum is not in cell_samples: the formation's charge, discharge,
    # charge, discharge come first
    first_charge, _, second_charge, discharge = _steps(tmp_path / "data" / "lipon.db")[:4]
    first, second = (c[2] - c[1] for c in (first_charge, second_charge))
    assert second < 0.98 * first  # before the 2 % rule's prompt polling
    gap = discharge[1] - second_charge[2]
    assert gap < 120, gap
    assert cycles.count(2) < 60, cycles.count(2)


def test_a_steady_step_recorded_rarely_is_not_polled_at_the_prompt_cadence(tmp_path,
                                                                           monkeypatch):
    """A record rule that sends a sample an hour or 500 mV apart leaves the slope of the
    last two samples (the jump at the step's start and the plateau) pointing at an end
    long past: that stale guess no longer calls a poll every NEAR_END_POLL_S for the rest
    of a steady step (it called about 170 per 30 min step), its end is still seen
    promptly. Each step on its own, as above."""
    steps_one_by_one(monkeypatch)
    polls = _count_polls(monkeypatch)
    protocol = tmp_path / "lnmo.yaml"
    protocol.write_text(LNMO.format(channels="1", cycles=12).replace(
        "every_s: 30, every_mV: 5", "every_s: 3600, every_mV: 500"), encoding="utf-8")
    result = start_cycling(str(protocol), tmp_path / "data", workers=1)
    assert result.status == "completed", result.message
    steps = _steps(tmp_path / "data" / "lipon.db")
    assert len(steps) == 24
    store = Store(tmp_path / "data")
    state = store.channels(result.run_id)[0].state
    store.close()
    steady_from = 8  # the shifts of the first cycles are not yet within 2 % of the step
    assert all(abs(s) < 10 for s in state["shifts"].values()), state["shifts"]
    per_step = [polls.count(n) for n, *_ in steps[steady_from:]]
    assert max(per_step) <= 4, per_step
    gaps = [b[1] - a[2] for a, b in zip(steps[steady_from:], steps[steady_from + 1:],
                                        strict=False)]
    assert max(gaps) <= polling.NEAR_END_POLL_S + 2.0, gaps


def test_a_first_step_ended_by_its_time_limit_is_seen_at_that_limit(tmp_path):
    """A first constant current is expected to pass the cell's capacity (about half an
    hour here), and polled rarely until then; its time limit (2 min) ends it first: the
    host polls at that limit, so the next step starts promptly (it was found at the first
    MAX_POLL_S poll, 900 s in, the cell idle meanwhile)."""
    text = LNMO.format(channels="1", cycles=1).replace(
        "until: {voltage_V: 5.1, time_h: 2}", "until: {voltage_V: 5.1, time_s: 120}")
    assert "time_s: 120" in text
    protocol = tmp_path / "lnmo.yaml"
    protocol.write_text(text, encoding="utf-8")
    result = start_cycling(str(protocol), tmp_path / "data", workers=1)
    assert result.status == "completed", result.message
    charge, discharge = _steps(tmp_path / "data" / "lipon.db")[:2]
    assert charge[2] <= 120.0
    gap = discharge[1] - charge[2]
    assert gap < 60, gap  # the record rule's 30 s and a poll's second at most


def test_a_sped_up_real_time_run_is_polled_in_wall_seconds(tmp_path, monkeypatch):
    """A simulated lab run in real time at --speed 2000: its channels are polled at most
    MAX_POLL_S["realtime"] of wall time apart (capped at the virtual clock's
    MAX_POLL_S), as hardware is, not that much of the run's clock (every 2 s of it: some
    600 polls a 20 min step, 1 ms of wall time apart; now 20-odd, as in virtual time)."""
    assert polling.longest_poll_s(True, 2000.0) == polling.MAX_POLL_S["virtual"]
    assert polling.longest_poll_s(True, 1.0) == polling.MAX_POLL_S["realtime"]
    # hardware waits as long whether or not the instrument judges the safety window
    assert polling.longest_poll_s(True, 1.0, judged=True) == polling.MAX_POLL_S["realtime"]
    assert polling.longest_poll_s(False, judged=True) == polling.WINDOW_POLL_S
    polls = _count_polls(monkeypatch)
    protocol = tmp_path / "lnmo.yaml"
    protocol.write_text(LNMO.format(channels="1", cycles=1), encoding="utf-8")
    result = start_cycling(str(protocol), tmp_path / "data", workers=1, speed=2000.0)
    assert result.status == "completed", result.message
    steps = _steps(tmp_path / "data" / "lipon.db")
    assert len(steps) == 2 and all(last - first > 600 for _, first, last in steps)
    assert max(polls.count(n) for n, *_ in steps) <= 40, [polls.count(n) for n, *_ in steps]


def test_the_instrument_stops_a_shorted_cell_at_its_window_between_rare_polls(tmp_path,
                                                                            monkeypatch):
    """The protocol's safety window is in the instrument's script, so a virtual-clock cell
    test without interlock rules polls a step whose end it knows up to WINDOW_POLL_S apart:
    cycle 4's charge (10,633–12,394 s) is asked only at its expected end. A hard short
    at 11,000 s is stopped by the instrument at the first sample past min_V, not at the
    host's poll: the cell is at open circuit from then (it was driven at 3 µA until a
    poll 900 s into the step when only the host judged the window), the step took one
    poll, and the channel is tripped by the safety limit with that sample."""
    opened: list[float] = []
    real = CellModel.set_control

    def watched(cell, t, mode, value):
        if mode == "open":
            opened.append(t)
        return real(cell, t, mode, value)

    monkeypatch.setattr(CellModel, "set_control", watched)
    polls = _count_polls(monkeypatch)
    station = fault_station(tmp_path, [{"fault": "cell_hard_short", "instrument": "mes4",
                                        "channel": 1, "at_s": 11_000}])
    protocol = tmp_path / "lnmo.yaml"
    protocol.write_text(LNMO.format(channels="1", cycles=6), encoding="utf-8")
    with contextlib.suppress(LiponError):
        start_cycling(str(protocol), tmp_path / "data", station_path=str(station), workers=1)
    store = Store(tmp_path / "data", read_only=True)
    channel, = store.channels(1)
    store.close()
    assert channel.status == "tripped" and channel.step_count == 7
    assert "V is below min_V 2.5 V at t = 11000 s" in channel.message, channel.message
    assert min(t for t in opened if t > 10_633) <= 11_000.0 + 1.0, opened  # a measurement
    assert polls.count(7) == 1, polls  # the first poll found the step stopped


def test_no_wait_between_polls_is_longer_than_the_longest(tmp_path, monkeypatch):
    """A protocol's `poll_every_s` (and a real-time clock's 2 s of wall time) is the
    longest wait between two polls, also where a first step nears the end expected from
    the cell's capacity (a tenth of the time left was taken whole: 70.6 s here, some
    1,400 s in a 150 nA formation charge on hardware) and at a steady step's end (its
    prompt cadence, NEAR_END_POLL_S, 5 s)."""
    waits: list[float] = []
    real = channels.Channel._sleep

    def sleep(channel, dt):
        waits.append(dt)
        return real(channel, dt)

    monkeypatch.setattr(channels.Channel, "_sleep", sleep)
    polls = _count_polls(monkeypatch)
    protocol = tmp_path / "lnmo.yaml"
    protocol.write_text(LNMO.format(channels="1", cycles=5) + "poll_every_s: 2\n",
                        encoding="utf-8")
    result = start_cycling(str(protocol), tmp_path / "data", workers=1)
    assert result.status == "completed", result.message
    assert max(waits) <= 2.0, max(waits)
    assert len(polls) > 5 * 2 * 1700 / 2.0  # every 2 s of 5 cycles' 30 min steps
