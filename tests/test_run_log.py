"""Each run's log file, `<data>/runs/<id>/run.log`, through Python `logging` (issue 11,
item 5): opened at start, appended to on resume, closed at the end; the run's notes,
steps, alarms, safe state and end; its own run's lines only; never printed on the
terminal on top of what the console prints."""

from __future__ import annotations

import logging
import re
import threading

import pytest
from interlocked import cli, interlocked_recipe

from lipon_hw.deposition.session import resume_run, start_run
from lipon_hw.engine.runlog import ROOT, log_path
from lipon_hw.errors import RunAborted

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO|WARNING|ERROR) +lipon_hw\.\S+: ")
DEPOSIT = 4


def lines_of(data, run_id: int = 1) -> list[str]:
    return log_path(data, run_id).read_text(encoding="utf-8").splitlines()


def test_a_run_and_its_resume_write_one_log(tmp_path):
    data = tmp_path / "d"
    asked: list[float] = []

    def abort_in_the_deposit(ctx):
        if ctx.step_idx == DEPOSIT and not asked:
            asked.append(ctx.now)
            ctx.store.requests.make(ctx.run_id, "abort")

    recipe = interlocked_recipe(tmp_path, "alarm", thickness_nm=20)
    with pytest.raises(RunAborted):
        start_run(str(recipe), data, on_sample=abort_in_the_deposit)
    first = lines_of(data)
    assert all(STAMP.match(line) for line in first), first
    text = "\n".join(first)
    assert "run 1 started: short LiPON on Simulated LiPON line" in first[0]
    for step in ("step 1/8: pump_down", "step 4/8: presputter", "step 5/8: deposit"):
        assert text.count(step) == 1
    warned = [line for line in first if " WARNING " in line]
    assert len(warned) == 1 and "alarm: " in warned[0] and \
        "(rule: interlock 1; reaction: alarm)" in warned[0]
    assert "engine: safe state: rf" in text and "after: aborted by the operator" in text
    assert "the hardware was made safe (rf" in text
    assert first[-1].split(": ", 1)[1].startswith(
        "run 1 ended aborted: aborted by the operator; 3 alarms (1 warning, 0 errors)")

    result = resume_run(1, data)
    assert result.status == "completed"
    both = lines_of(data)
    assert both[:len(first)] == first  # appended to
    again = "\n".join(both[len(first):])
    assert "run 1 resumed: short LiPON" in both[len(first)]
    assert "engine: resumed from checkpoint" in again and "reaction: resume" in again
    assert "resume: process setpoints restored" in again
    assert "after: all steps done" in again
    assert both[-1].split(": ", 1)[1].startswith("run 1 ended completed: all steps done")


def test_the_terminal_gets_each_line_once_and_no_log_records(tmp_path):
    proc = cli("run", interlocked_recipe(tmp_path, "alarm"), "--data", tmp_path / "d",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    said = proc.stderr.splitlines()
    assert len(said) == len(set(said)) and said.count("step 4/8: presputter") == 1
    assert not any(STAMP.match(line) or "lipon_hw." in line for line in said), said
    log = lines_of(tmp_path / "d")
    for line in said:  # every sentence the operator saw is in the log, once
        if line.startswith(("step ", "alarm: ")):
            assert sum(entry.endswith(line) for entry in log) == 1, line


def test_concurrent_runs_each_log_their_own_and_logging_is_left_as_found(tmp_path):
    logger = logging.getLogger(ROOT)
    level, handlers = logger.level, list(logger.handlers)
    ended: dict[str, object] = {}

    def run(then: str) -> None:
        try:
            ended[then] = start_run(str(interlocked_recipe(tmp_path, then)),
                                    tmp_path / then).status
        except RunAborted:
            ended[then] = "aborted"

    threads = [threading.Thread(target=run, args=(then,)) for then in ("alarm", "abort")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ended == {"alarm": "completed", "abort": "aborted"}
    alarm, abort = ("\n".join(lines_of(tmp_path / then)) for then in ("alarm", "abort"))
    assert alarm.count("is true") == 1 and "tripped" not in alarm
    assert abort.count("tripped") >= 1 and "is true" not in abort
    assert (logger.level, logger.handlers) == (level, handlers)


def test_a_log_that_cannot_be_written_is_said_and_the_run_goes_on(tmp_path):
    data = tmp_path / "d"
    log_path(data, 1).mkdir(parents=True)  # a directory where the file would be
    notes: list[str] = []
    result = start_run(str(interlocked_recipe(tmp_path, "alarm")), data, notify=notes.append)
    assert result.status == "completed"
    assert any(n.startswith("warning: the log file of run 1 cannot be written") for n in notes)
