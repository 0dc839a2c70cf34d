"""A cell test whose host dies mid-cycle (issue 11, item 4): engine and workers killed at
once (kill -9 of the whole process group, as a power cut of the host would), then
`lipon-hw resume`. Per channel, what is stored must read as one campaign across the seam:
step and cycle numbers never go back, no sample is stored twice, none is missing (every
step once, numbered without a gap; no hole in time longer than
the record period), and
what was stored up to the step the resume restarts from is kept as it was.

The station is the built-in simulated lab, whose world lives in the engine's process: a
resume rolls each channel back to its last step boundary (`celltest.session.resumption`),
so the samples of the step cut short are taken again, never kept twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from stores import committed

from recipes import LNMO

#: a sample as a row (`store_cell_blocks.rows_table`; no rowid: it is not kept)
ROW = "run_id, channel, t_s, voltage_V, current_A, cycle, step_count, step_id, step_type"

CYCLES = 12
CHANNELS = (1, 2)
#: LNMO's record period, plus the channel's poll that finds it due
EVERY_S = 30.0 + 1.0
#: the killed run goes on a real-time clock this many times wall speed, so its 12 cycles
#: (~12 h) last ~20 s of wall time and the moment to kill (a step cut short, its samples
#: committed) comes long before its end whatever the machine; in virtual time the whole run
#: can end between two of the store's once-a-second commits
SPEED = 2000


def test_a_cell_test_killed_mid_cycle_resumes_with_its_numbers_monotonic_and_nothing_lost(
        tmp_path, backend):
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(LNMO.format(channels="1-2", cycles=CYCLES), encoding="utf-8")
    data = tmp_path / "data"
    db = data / "lipon.db"
    proc = subprocess.Popen([sys.executable, "-m", "lipon_hw.cli", "run", protocol, "--data",
                             data, "--workers", "1", "--speed", str(SPEED)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)

    def mid_step() -> bool:
        """Every channel past its first step, and one with samples committed past its last
        step boundary (the store commits once a wall second, wherever a step is)."""
        rows = committed(db, "SELECT channel, step_count, state FROM channels",
                         while_made=True)
        if len(rows) != len(CHANNELS) or min(steps for _, steps, _ in rows) < 1:
            return False
        return any(committed(db, "SELECT 1 FROM cell_samples WHERE channel=? AND t_s > ?", ch,
                             json.loads(state)["t_s"]) for ch, _, state in rows)

    deadline = time.monotonic() + 60
    while not mid_step():
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-2000:]
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the engine and its worker, with no word said
    proc.wait(timeout=10)
    proc.stderr.close()
    assert committed(db, "SELECT status FROM channels") == [("running",)] * len(CHANNELS)
    boundary = {ch: json.loads(state)["t_s"] for ch, state in
                committed(db, "SELECT channel, state FROM channels")}
    before = {ch: committed(db, f"SELECT {ROW} FROM cell_samples WHERE channel=? AND t_s <= ? "
                                "ORDER BY rowid", ch, boundary[ch]) for ch in CHANNELS}
    cut = {ch: committed(db, "SELECT COUNT(*) FROM cell_samples WHERE channel=? AND t_s > ?",
                         ch, boundary[ch])[0][0] for ch in CHANNELS}
    assert any(cut.values())  # a step cut short: its samples are the seam

    resume = subprocess.run([sys.executable, "-m", "lipon_hw.cli", "resume", "1", "--data",
                             data, "--json"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert resume.returncode == 0, resume.stderr
    assert json.loads(resume.stdout.strip().splitlines()[-1])["status"] == "completed"
    assert committed(db, "SELECT status FROM channels") == [("completed",)] * len(CHANNELS)
    for ch in CHANNELS:
        rows = committed(db, "SELECT t_s, step_count, cycle FROM cell_samples WHERE "
                             "channel=? ORDER BY rowid", ch)
        times, steps, cycles = (list(column) for column in zip(*rows, strict=True))
        # kept as it was up to the boundary the channel restarted from
        assert committed(db, f"SELECT {ROW} FROM cell_samples WHERE channel=? AND t_s <= ? "
                             "ORDER BY rowid", ch, boundary[ch]) == before[ch]
        # never back, never twice
        assert all(b > a for a, b in zip(times, times[1:], strict=False)), f"ch {ch}: time"
        assert steps == sorted(steps), f"channel {ch}: a step number goes back"
        assert cycles == sorted(cycles), f"channel {ch}: a cycle number goes back"
        # nothing lost: every step once, in one run of samples, numbered without a gap;
        # every cycle; no hole in time longer than the record period
        assert sorted(set(steps)) == list(range(1, 2 * CYCLES + 1)), f"channel {ch}: steps"
        runs = [s for i, s in enumerate(steps) if i == 0 or s != steps[i - 1]]
        assert runs == sorted(set(steps)), f"channel {ch}: a step's samples are split"
        assert sorted(set(cycles)) == list(range(1, CYCLES + 1))
        assert max(b - a for a, b in zip(times, times[1:], strict=False)) <= EVERY_S + 1e-6
        assert [c for (c,) in committed(db, "SELECT cycle FROM cycles WHERE channel=? "
                                            "ORDER BY cycle", ch)] == list(range(1, CYCLES + 1))


def test_a_saved_state_stays_as_it_was_while_the_channel_goes_on():
    """A channel hands the store a copy of its state at every step, encoded only when the
    store writes it: what the channel changes after (its loops, durations, shifts, the
    next cycle figures and cell snapshot) must not reach the copy."""
    from lipon_hw.celltest.channels import ChannelState

    st = ChannelState(pc=3, loops={"4": 1}, cycle=2, step_count=5, durations={"2": 10.0},
                      shifts={"2": 0.5}, cycles={"acc": {"sums": [1.0]}}, cell={"t": 1.0})
    saved = st.copy()
    text = json.dumps(saved)
    st.pc, st.step_count = 4, 6
    st.loops["4"] = 2
    st.durations["2"] = 11.0
    st.shifts["6"] = 1.0
    st.cycles, st.cell, st.done_before = {"acc": {"sums": [2.0]}}, {"t": 2.0}, {"q_Ah": 1.0}
    assert json.dumps(saved) == text
    assert ChannelState.from_dict(json.loads(text)).loops == {"4": 1}
