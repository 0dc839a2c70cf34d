"""kill -9 and `lipon-hw resume` on the hardware path, end to end.

The simulated lab is served behind TCP sockets (`sim serve`, in this process); the engine
runs `lipon-hw run` in its own process on a station of `socket://` addresses only, with no
`sim:` section: it sees instruments and a real-time clock, nothing it could snapshot or
roll back. A deposition and then a cell test are each killed with SIGKILL at a moment the
store shows (a checkpoint inside the deposit step; channel 1 past its second cycle with
its resume state committed), resumed with `lipon-hw resume`, and must complete with their
data whole: every step once, one layer, no reading or sample stored twice or lost, time
never going back.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from served import cli_process, served_hardware
from stores import committed

from recipes import short_recipe

#: a sample as a row (`store_cell_blocks.rows_table`; no rowid: it is not kept)
ROW = "run_id, channel, t_s, voltage_V, current_A, cycle, step_count, step_id, step_type"

#: the served lab's clock and the engine's: ~2.3 s of wall time from the start of the
#: deposition to its presputter step; a cell-test step of 60 s lasts 0.2 s
SPEED = 300.0

DEPOSIT = 4

CYCLES = 8
PROTOCOL = f"""\
name: cycles over TCP
kind: cycling
potentiostat: mes4
channels: 1-2
record: {{every_s: 10}}
safety: {{min_V: 2.5, max_V: 5.2}}
steps:
  - tag: cycle
  - cc: {{current_A: 3.0e-6, until: {{voltage_V: 5.1, time_s: 60}}}}
  - cc: {{current_A: -3.0e-6, until: {{voltage_V: 3.5, time_s: 60}}}}
  - loop: {{to: cycle, times: {CYCLES}}}
"""


@pytest.fixture
def hardware(tmp_path):
    with served_hardware(SPEED, tmp_path / "station.yaml") as lab:
        yield lab



def run_then_kill(sequence: Path, station: str, data: Path, ready) -> None:
    """`lipon-hw run` in its own process, SIGKILLed once `ready()` holds (polling the
    store, never a guessed time); returns once its guard made the hardware safe."""
    proc = cli_process("run", sequence, "--station", station, "--speed", SPEED, "--data", data,
                    cwd=sequence.parent)
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)  # the guard inherited stderr: its end ends this
    assert proc.returncode == -signal.SIGKILL
    assert "the guard process made the hardware safe" in err, err


def resume(run_id: int, data: Path, cwd: Path) -> dict:
    proc = cli_process("resume", run_id, "--data", data, "--speed", SPEED, "--json", cwd=cwd)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return json.loads(out.strip().splitlines()[-1])


def test_a_deposition_killed_mid_layer_resumes_on_hardware_and_completes_whole(
        hardware, tmp_path):
    data = tmp_path / "data"
    db = data / "lipon.db"
    run_then_kill(short_recipe(tmp_path, thickness_nm=30), hardware.station_path, data,
                  lambda: committed(
        db, "SELECT 1 FROM checkpoints WHERE step_idx=? AND t_s > (SELECT t_start_s FROM steps "
            "WHERE idx=?)", DEPOSIT, DEPOSIT, while_made=True))
    (killed_at,) = committed(db, "SELECT MAX(t_s) FROM readings")[0]
    (status,) = committed(db, "SELECT status FROM runs")[0]
    assert status == "failed"  # the guard's word, until the resume
    assert committed(db, "SELECT status FROM steps WHERE idx=?", DEPOSIT) == [("running",)]
    assert committed(db, "SELECT t_s FROM alarms WHERE source='guard'") == [(killed_at,)]
    before = committed(db, "SELECT t_s, quantity_id, value FROM readings ORDER BY t_s")

    summary = resume(1, data, tmp_path)
    assert summary["status"] == "completed"
    assert committed(db, "SELECT status FROM runs") == [("completed",)]
    # every step ran to its end, each once
    steps = committed(db, "SELECT idx, status FROM steps ORDER BY idx")
    assert steps == [(i, "done") for i in range(8)]
    # one LiPON layer on the sample, whole (the one the kill cut short was finished)
    layers = committed(db, "SELECT material, thickness_nm, properties FROM layers")
    assert [(m, json.loads(p).get("partial")) for m, _, p in layers] == [("LiPON", None)]
    # ended where the monitor crossed 30 nm: past it by no more than one sample's growth (the
    # served lab keeps the wall clock's pace, so a loaded host samples it more coarsely)
    thickness = [v for (v,) in committed(
        db, "SELECT r.value FROM readings r JOIN quantities q ON q.id = r.quantity_id"
            " WHERE q.name = 'qcm.thickness_nm' ORDER BY r.t_s, r.rowid")]
    one_sample = max(b - a for a, b in zip(thickness, thickness[1:], strict=False))
    assert 30 - 2 <= layers[0][1] <= 30 + one_sample + 2, (layers[0][1], one_sample)
    assert "sim_truth" not in layers[0][2]
    # the film itself, as the served World grew it: one LiPON film, interrupted and finished
    films = [f for f in hardware.lab.world.film_stack() if f["material"] == "LiPON"]
    assert len(films) == 1 and films[0]["thickness_nm"] == pytest.approx(layers[0][1], rel=0.05)
    # nothing rewound on hardware: what was stored before the kill is all still there ...
    after = committed(db, "SELECT t_s, quantity_id, value FROM readings ORDER BY t_s")
    assert set(before) <= set(after)
    # ... and every quantity's readings go forward in time, none stored twice (but for the
    # deposit step's own last reading of the monitor, read after its shutter closed, which
    # may fall on the instant of the last sample: steps.deposit, resumed or not)
    ((deposit_end,),) = committed(db, "SELECT t_end_s FROM steps WHERE idx=?", DEPOSIT)
    ((monitor,),) = committed(db, "SELECT id FROM quantities WHERE name='qcm.thickness_nm'")
    series: dict[int, list[float]] = {}
    for t, q, _ in after:
        if (t, q) != (deposit_end, monitor) or t not in series.get(q, ()):
            series.setdefault(q, []).append(t)
    for q, times in series.items():
        assert all(b > a for a, b in zip(times, times[1:], strict=False)), \
            f"quantity {q}: time goes back or repeats"
    assert max(t for t, _, _ in after) > killed_at
    # the resume went on from where the readings stopped, not from the checkpoint
    alarms = [m for (m,) in committed(db, "SELECT message FROM alarms ORDER BY rowid")]
    resumed = [m for m in alarms if m.startswith("resumed from checkpoint")]
    assert len(resumed) == 1
    # on hardware nothing of the simulator reaches the store
    assert committed(db, "SELECT COUNT(*) FROM sim_truth") == [(0,)]
    checkpoints = [json.loads(s) for (s,) in committed(db, "SELECT state FROM checkpoints")]
    assert all(cp.get("physics") is None and "sim" not in cp for cp in checkpoints)


def test_a_cell_test_killed_mid_campaign_resumes_on_hardware_and_completes_whole(
        hardware, tmp_path):
    protocol = tmp_path / "cycles.yaml"
    protocol.write_text(PROTOCOL, encoding="utf-8")
    data = tmp_path / "data"
    db = data / "lipon.db"

    def mid_campaign() -> bool:  # channel 1's resume state committed inside cycle 3
        rows = committed(db, "SELECT cycle, state FROM channels WHERE channel=1",
                         while_made=True)
        return bool(rows) and rows[0][0] >= 3 and json.loads(rows[0][1]).get("pc", 0) > 0

    run_then_kill(protocol, hardware.station_path, data, mid_campaign)
    for emulator in (hardware.lab.emulators["mes4/1"], hardware.lab.emulators["mes4/2"]):
        assert not emulator.running and not emulator.cell_is_on  # the guard's doing
    before = {ch: committed(db, f"SELECT {ROW} FROM cell_samples WHERE channel=? ORDER BY rowid",
                            ch) for ch in (1, 2)}
    assert before[1]
    assert committed(db, "SELECT status FROM channels") == [("running",)] * 2  # mid-campaign
    # the guard's safe state is stored at the engine's death: after its last sample
    ((died_t,),) = committed(db, "SELECT t_s FROM alarms WHERE source='guard'")
    assert died_t == max(row[2] for rows in before.values() for row in rows)

    summary = resume(1, data, tmp_path)
    assert summary["status"] == "completed", summary
    assert committed(db, "SELECT status FROM runs") == [("completed",)]
    channels = committed(db, "SELECT channel, status, cycle FROM channels ORDER BY channel")
    assert [(ch, status) for ch, status, _ in channels] == [(1, "completed"), (2, "completed")]
    for ch in (1, 2):
        samples = committed(db, "SELECT t_s, cycle, step_count FROM cell_samples WHERE "
                                "channel=? ORDER BY rowid", ch)
        # nothing stored before the kill was lost (no rewind on hardware)
        kept = committed(db, f"SELECT {ROW} FROM cell_samples WHERE channel=? ORDER BY rowid", ch)
        assert kept[:len(before[ch])] == before[ch]
        times = [t for t, _, _ in samples]
        assert all(b > a for a, b in zip(times, times[1:], strict=False)), \
            f"channel {ch}: time goes back or a sample is stored twice"
        steps = [s for _, _, s in samples]
        assert steps == sorted(steps), f"channel {ch}: step numbers go back"
        cycles = [c for (c,) in committed(db, "SELECT cycle FROM cycles WHERE channel=? "
                                              "ORDER BY cycle", ch)]
        assert cycles == list(range(1, CYCLES + 1)), f"channel {ch}: cycles {cycles}"
    assert committed(db, "SELECT COUNT(*) FROM sim_truth") == [(0,)]
