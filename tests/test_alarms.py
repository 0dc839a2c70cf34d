"""Alarms people see (issue 11, item 5): each stored with its time, instrument, rule and
reaction (store layout 5); heard as it is stored, by the console and any watcher, also
when another process stored it; listed by `lipon-hw alarms`; counted in every summary."""

from __future__ import annotations

import json
import re
import threading

import pytest
from click.testing import CliRunner
from interlocked import cli, interlocked_recipe
from stores import committed, digest

from lipon_hw.cli import main
from lipon_hw.deposition.kind import KIND as DEPOSITION
from lipon_hw.deposition.session import start_run
from lipon_hw.engine import lifecycle
from lipon_hw.engine.trouble import AlarmRelay
from lipon_hw.errors import RunAborted
from lipon_hw.kinds import RunOptions
from lipon_hw.store import DB_NAME, Alarm, Store

from recipes import LNMO

LINE = re.compile(r"^\d+:\d\d:\d\d (info|warning|hold|error) +\S.*: .+")


def test_interlocks_store_the_rule_they_hold_by_and_the_reaction(tmp_path):
    data = tmp_path / "d"
    with pytest.raises(RunAborted) as caught:
        start_run(str(interlocked_recipe(tmp_path, "pause")), data)
    store = Store(data, read_only=True)
    alarms = store.alarms(1)
    assert all(isinstance(a, Alarm) and a.run_id == 1 for a in alarms)
    assert [a.t_s for a in alarms] == sorted(a.t_s for a in alarms)
    rule = "interlock 1"  # the rule's name (it has none of its own: its place)
    held = [a for a in alarms if a.reaction == "pause"]
    assert len(held) == 3 and {(a.severity, a.source, a.rule) for a in held} == {
        ("hold", "interlock", rule)}
    resumed = [a for a in alarms if a.reaction == "resume"]
    assert len(resumed) == 3 and {a.rule for a in resumed} == {rule}
    assert all(h.t_s < r.t_s for h, r in zip(held, resumed, strict=True))
    *_, aborted, safe = alarms
    assert (aborted.severity, aborted.rule, aborted.reaction) == ("error", rule, "abort")
    assert "more than 3 times" in aborted.message
    assert (safe.source, safe.rule, safe.reaction) == ("engine", None, "safe state")
    assert safe.message.startswith("safe state: rf")
    assert caught.value.alarms == alarms  # what the console lists of a run that failed
    assert committed(data / DB_NAME, "SELECT rule, reaction FROM alarms WHERE rowid = 1") == [
        (rule, "pause")]


def test_each_alarm_is_heard_once_while_its_run_goes_on(tmp_path):
    data = tmp_path / "d"
    heard: list[tuple[Alarm, str]] = []

    def alarm(a: Alarm) -> None:  # the run's status as another process sees it, then
        (status,), = committed(data / DB_NAME, "SELECT status FROM runs WHERE id = 1")
        heard.append((a, status))

    options = RunOptions(str(data))
    result = lifecycle.start(DEPOSITION, str(interlocked_recipe(tmp_path, "alarm")), options,
                             lifecycle.Watch(alarm=alarm))
    assert result.status == "completed"
    stored = Store(data, read_only=True).alarms(1)
    assert [a for a, _ in heard] == stored == result.alarms
    # the rule as it trips, as the presputter ends (disarmed), and the safe state
    assert len(stored) == 3
    assert {status for _, status in heard} == {"running"}  # heard during the run


def test_without_an_alarm_watcher_alarms_come_as_notes(tmp_path):
    notes: list[str] = []
    with pytest.raises(RunAborted):
        start_run(str(interlocked_recipe(tmp_path, "abort")), tmp_path / "d",
                  notify=notes.append)
    said = [n for n in notes if n.startswith("alarm: ")]
    assert len(said) == 2, notes
    assert said[0] == ("alarm: 0:18:45 error   interlock: interlock 1 (forward_power_W > 10) "
                       "tripped: the run is aborted (rule: interlock 1; reaction: abort)")
    assert "engine: safe state: rf" in said[1]


def test_run_prints_alarms_as_they_happen_and_counts_them(tmp_path):
    data = tmp_path / "d"
    recipe = interlocked_recipe(tmp_path, "alarm")
    proc = cli("run", recipe, "--data", data, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = [line for line in proc.stderr.splitlines() if line.startswith("alarm: ")]
    assert len(printed) == len(set(printed)) == 3
    assert printed[0] == ("alarm: 0:18:45 warning interlock: interlock 1 (forward_power_W > "
                          "10) is true (rule: interlock 1; reaction: alarm)")
    # as they happen: tripped in the presputter, disarmed once the deposit has begun
    lines = proc.stderr.splitlines()
    assert lines.index("step 4/8: presputter") < lines.index(printed[0]) < \
        lines.index("step 5/8: deposit") < lines.index(printed[1])
    assert printed[1].endswith("interlock: interlock 1: no longer true (rule: interlock 1; "
                               "reaction: alarm)")
    assert f"3 alarms (1 warning, 0 errors): lipon-hw alarms 1 --data {data}" \
        in proc.stdout.splitlines()

    proc = cli("run", recipe, "--data", data, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "alarm:" not in proc.stderr
    out = json.loads(proc.stdout)
    assert out["alarms"]["count"] == 3
    assert out["alarms"]["by_severity"] == {"info": 2, "warning": 1}
    first = out["alarms"]["list"][0]
    assert first == {"t_s": 1125.0, "severity": "warning", "source": "interlock",
                     "rule": "interlock 1", "reaction": "alarm",
                     "message": "interlock 1 (forward_power_W > 10) is true"}


def test_the_alarms_command_lists_a_run_read_only(tmp_path):
    data = tmp_path / "d"
    with pytest.raises(RunAborted):
        start_run(str(interlocked_recipe(tmp_path, "abort")), data)
    start_run(str(interlocked_recipe(tmp_path, "alarm")), data)
    db = data / DB_NAME
    before = digest(db)
    runner = CliRunner()

    latest = runner.invoke(main, ["alarms", "--data", str(data)])
    assert latest.exit_code == 0, latest.output
    lines = latest.stdout.splitlines()
    assert len(lines) == 3 and all(LINE.match(line) for line in lines), lines
    assert lines[0] == ("0:18:45 warning interlock: interlock 1 (forward_power_W > 10) is "
                        "true (rule: interlock 1; reaction: alarm)")
    assert latest.stderr.strip() == "run 2: 3 alarms (1 warning, 0 errors)"

    first = runner.invoke(main, ["alarms", "1", "--data", str(data), "--json"])
    out = json.loads(first.stdout)
    assert out["run_id"] == 1 and out["count"] == 2
    assert out["by_severity"] == {"info": 1, "error": 1}
    assert [(a["reaction"], a["severity"]) for a in out["list"]] == [
        ("abort", "error"), ("safe state", "info")]

    since = runner.invoke(main, ["alarms", "2", "--data", str(data), "--since", "0:19:30"])
    times = [line.split()[0] for line in since.stdout.splitlines()]
    every = [line.split()[0] for line in lines]
    assert times == every[1:] and times[0] > "0:19:30"  # not the trip at 18:45
    seconds = runner.invoke(main, ["alarms", "2", "--data", str(data), "--since", "1170"])
    assert seconds.stdout == since.stdout
    assert digest(db) == before  # only read

    for args, words in ([["alarms", "7"], "run 7 is not in"],
                        [["alarms", "2", "--since", "1:x"], "is not a time of the run clock"],
                        [["alarms", "2", "--since", "-5"], "0 or later"]):
        bad = runner.invoke(main, [*args, "--data", str(data)])
        assert bad.exit_code == 2, bad.output
        assert bad.stderr.count("\n") == 1 and words in bad.stderr and "Traceback" not in \
            bad.stderr
    empty = runner.invoke(main, ["alarms", "--data", str(tmp_path / "none")])
    assert empty.exit_code == 2 and "holds no lipon-hw data" in empty.stderr


def test_a_cell_test_summary_lists_its_alarms(tmp_path):
    path = tmp_path / "lnmo.yaml"
    path.write_text(LNMO.format(channels=1, cycles=1), encoding="utf-8")
    out = CliRunner().invoke(main, ["run", str(path), "--data", str(tmp_path / "d"), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["alarms"] == {"count": 0, "by_severity": {}, "list": []}
    text = CliRunner().invoke(main, ["run", str(path), "--data", str(tmp_path / "d")])
    assert "0 alarms (0 warnings, 0 errors)" in text.stdout.splitlines()


def test_alarms_another_process_stores_are_heard_once(tmp_path):
    """A cell test's worker processes store their channels' alarms through connections of
    their own: the run's process reads them back and hears each once, never its own twice,
    never another run's."""
    ours = Store(tmp_path / "d")
    run_id = ours.create_run("r", "cycling", "p.yaml", "", "", None, None)
    other_run = ours.create_run("other", "cycling", "q.yaml", "", "", None, None)
    heard: list[Alarm] = []
    ours.on_alarm = heard.append
    relay = AlarmRelay(ours, run_id, every_s=3600)
    worker = Store(tmp_path / "d")  # another connection, as a worker process has
    worker.add_alarm(run_id, 10.0, "info", "channel 2", "paused at step 3")
    worker.add_alarm(other_run, 11.0, "error", "mes4", "not ours")
    ours.add_alarm(run_id, 12.0, "error", "engine", "ours")
    worker.add_alarm(run_id, 13.0, "warning", "store", "channel 2 sample is not finite",
                     rule="finite readings", reaction="left out")
    worker.flush()
    assert [a.message for a in heard] == ["ours"]  # heard at once, as stored
    relay.poll()  # within `every_s` of the last read: no query yet
    assert len(heard) == 1
    relay.poll(force=True)
    assert [a.message for a in heard] == ["ours", "paused at step 3",
                                          "channel 2 sample is not finite"]
    assert (heard[-1].rule, heard[-1].reaction) == ("finite readings", "left out")
    relay.poll(force=True)
    assert len(heard) == 3
    worker.close()
    ours.close()


def test_a_cell_test_hears_its_worker_processes_alarms_while_it_runs(tmp_path):
    """Two channels in two worker processes, a pause asked before they start: each worker
    stores its channel's pause; the run's process hears it (read back from the store) while
    the run goes on, and answers it with an abort, which the workers store in turn. The
    protocol is far too long to end before a worker reads the pause (within a second)."""
    path = tmp_path / "lnmo.yaml"
    path.write_text(LNMO.format(channels="1-2", cycles=5000), encoding="utf-8")
    data = tmp_path / "d"
    heard: list[Alarm] = []
    operator: list[Store] = []

    def start(run_id, _proto):
        operator.append(Store(data))
        operator[0].requests.make(run_id, "pause")

    answered: list[int] = []

    def alarm(a: Alarm) -> None:
        heard.append(a)
        if sum(x.message.startswith("paused at step") for x in heard) == 2 and not answered:
            answered.append(a.run_id)
            operator[0].requests.make(a.run_id, "abort")

    def unheard() -> None:  # else, should the pauses never be heard, the run never ends
        Store(data).requests.make(1, "abort")

    from lipon_hw.celltest.kind import KIND as CELL_TEST

    watchdog = threading.Timer(120, unheard)
    watchdog.start()
    try:
        result = lifecycle.start(CELL_TEST, str(path), RunOptions(str(data), workers=2),
                                 lifecycle.Watch(start=start, alarm=alarm))
    finally:
        watchdog.cancel()
    operator[0].close()
    assert answered == [1] and result.status == "aborted"
    stored = Store(data, read_only=True).alarms(1)
    assert sorted(heard, key=lambda a: (a.t_s, a.source)) == \
        sorted(stored, key=lambda a: (a.t_s, a.source)) == \
        sorted(result.alarms, key=lambda a: (a.t_s, a.source))
    assert sorted((a.source, a.message.split(" at step")[0]) for a in heard) == [
        ("channel 1", "aborted while paused"), ("channel 1", "paused"),
        ("channel 2", "aborted while paused"), ("channel 2", "paused")]


def test_a_listener_that_fails_changes_nothing_stored(tmp_path):
    store = Store(tmp_path / "d")
    run_id = store.create_run("r", "deposition", "r.yaml", "", "", None, None)

    def broken(_alarm):
        raise RuntimeError("a console that fell over")

    store.on_alarm = broken
    store.add_alarm(run_id, 1.0, "error", "rf", "arc", rule="arcs", reaction="hold")
    assert store.alarms(run_id) == [Alarm(run_id, 1.0, "error", "rf", "arc", "arcs", "hold")]
    store.close()
