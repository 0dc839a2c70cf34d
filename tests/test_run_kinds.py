"""Run kinds (issue 10): the command line dispatches once, through the kind registry, so a
third kind of run — here a trivial `soak` that holds a sample for some minutes and logs
the time — is that kind's code and one `register` call, and nothing else."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from lipon_hw import kinds
from lipon_hw.cli import main
from lipon_hw.engine.lifecycle import Opening, Outcome
from lipon_hw.errors import InstrumentError
from lipon_hw.export import export_run
from lipon_hw.kinds import KindBase
from lipon_hw.store import Store
from lipon_hw.yamlfile import load, loads

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Soak:
    name: str
    text: str
    minutes: int


class SoakKind(KindBase):
    """Hold for `minutes` of virtual time; one reading a minute. Everything a run does but
    run is the lifecycle's: its row, locks, guard, status on every exit, --json, plots."""

    name = "soak"
    document_kind = "soak"

    def load(self, sequence, station, store, text=None):
        doc = load(sequence) if text is None else loads(text, sequence)
        minutes = doc.data.get("minutes")
        if not isinstance(minutes, int) or not 1 <= minutes <= 600:
            raise doc.error(("minutes",), "is a whole number of minutes from 1 to 600")
        return Soak(doc.data.get("name", "soak"), doc.text, minutes)

    def describe(self, plan, sequence, station):
        return {"valid": True, "kind": self.name, "minutes": plan.minutes}, \
            f"soak {plan.minutes} min"

    def opening(self, store, station, plan, options):
        return Opening([])

    def execute(self, running):
        env = running.env()

        def soak():
            for m in range(running.plan.minutes):
                running.store.add_readings(running.run_id, env.now, {"soak.minutes": float(m)})
                yield env.timeout(60.0)

        env.run(env.process(soak()))
        summary = {"minutes": running.plan.minutes, "virtual_s": env.now}
        running.store.set_status(running.run_id, "completed", "soaked", summary)
        return Outcome("completed", "soaked", summary, env.now)

    def json_fields(self, result):
        return {"minutes": result.summary["minutes"]}

    def export(self, store, run_id, fmt, out, force):
        return [export_run(store, run_id, fmt, out, force=force)]


@pytest.fixture
def soak():
    kinds.register(SoakKind())
    yield
    kinds.unregister("soak")


def test_a_third_kind_runs_validates_exports_and_reports_through_the_same_commands(
        tmp_path, soak):
    seq = tmp_path / "soak.yaml"
    seq.write_text("name: soak\nkind: soak\nminutes: 3\n", encoding="utf-8")
    data = str(tmp_path / "data")
    cli = CliRunner()
    out = cli.invoke(main, ["validate", str(seq), "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["minutes"] == 3
    out = cli.invoke(main, ["run", str(seq), "--data", data])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("run 1 completed: soaked; 180 s of run time")
    out = cli.invoke(main, ["run", str(seq), "--data", data, "--json"])
    shown = json.loads(out.output)
    run_id = shown["run_id"]
    assert shown["status"] == "completed" and shown["minutes"] == 3
    assert shown["duration_s"] == 180.0 and shown["message"] == "soaked"
    stored = Store(data).run(run_id)
    assert stored.kind == "soak" and stored.status == "completed"
    out = cli.invoke(main, ["export", str(run_id), "--data", data, "--out",
                            str(tmp_path / "soak.csv")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "soak.csv").read_text().splitlines()[0] == "t_s,soak.minutes,step,step_kind"
    assert cli.invoke(main, ["report", str(run_id), "--data", data]).exit_code == 0
    out = cli.invoke(main, ["resume", str(run_id), "--data", data])
    assert out.exit_code == 2 and f"run {run_id} is completed" in out.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: soak\nkind: soak\nminutes: 0\n", encoding="utf-8")
    out = cli.invoke(main, ["run", str(bad), "--data", data])
    assert out.exit_code == 2 and f"{bad}:3: minutes: is a whole number" in out.output


def test_an_unknown_kind_is_one_sentence_naming_the_line(tmp_path):
    seq = tmp_path / "x.yaml"
    seq.write_text("name: x\n\nkind: sintering\n", encoding="utf-8")
    out = CliRunner().invoke(main, ["run", str(seq), "--data", str(tmp_path / "d")])
    assert out.exit_code == 2
    assert f"{seq}:3: kind: 'sintering' is not a kind of run" in out.output
    assert "cycling, deposition" in out.output


def test_the_command_line_never_branches_on_the_kind_of_a_run():
    """No comparison in cli.py names a kind: every difference lives in a kind."""
    tree = ast.parse((ROOT / "lipon_hw" / "cli.py").read_text(encoding="utf-8"))
    named = [node for node in ast.walk(tree) if isinstance(node, ast.Constant)
             and node.value in ("cycling", "deposition")]
    assert named == []
    attributes = [node for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and node.attr == "kind"]
    assert attributes == []


def test_what_every_kind_shares_imports_no_kind():
    """lipon_hw/engine/ is the lifecycle every kind builds on: it names none of them (the
    guard asks the run's kind what to make safe)."""
    offences = []
    for path in sorted((ROOT / "lipon_hw" / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offences += [f"{path.name}:{node.lineno}: {n}" for n in names
                         if n.startswith(("lipon_hw.deposition", "lipon_hw.celltest"))]
    assert offences == []


def test_the_lifecycle_is_written_once():
    """A run's row, its lock, finding a run to resume, the guard and the plots at a run's
    end are `engine/lifecycle.py`'s only: no kind has a start or resume of its own. How a
    run ended is stored by the part that made its hardware safe first — the deposition
    engine, the cell test's judge of its channels, the prober after lifting its probes — and
    by the guard when the engine died."""
    once = {"create_run", "open_run", "take_run", "run_to_resume", "start_guard",
            "draw_plots"}
    ends_runs = {"lipon_hw/engine/lifecycle.py", "lipon_hw/engine/guard.py",
                 "lipon_hw/deposition/runner.py", "lipon_hw/celltest/session.py",
                 "lipon_hw/screening/session.py"}
    offences = []
    for path in sorted((ROOT / "lipon_hw").rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if where in ("lipon_hw/engine/lifecycle.py", "lipon_hw/store.py") or \
                where.startswith("lipon_hw/sim/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name in once or (name == "set_status" and where not in ends_runs):
                    offences.append(f"{where}:{node.lineno}: {name}")
    assert offences == []


class BrokenSoak(SoakKind):
    """A kind whose instrument fails mid-run and which forgets to store how it ended."""

    name = "broken-soak"
    document_kind = "broken-soak"

    def execute(self, running):
        running.store.add_readings(running.run_id, 0.0, {"soak.minutes": 0.0})
        raise InstrumentError("oven: no reply to TEMP? within 1 s")


def test_a_kind_that_fails_without_ending_its_run_is_ended_by_the_lifecycle(tmp_path):
    kinds.register(BrokenSoak())
    try:
        seq = tmp_path / "soak.yaml"
        seq.write_text("name: soak\nkind: broken-soak\nminutes: 3\n", encoding="utf-8")
        data = str(tmp_path / "data")
        out = CliRunner().invoke(main, ["run", str(seq), "--data", data, "--json"])
        assert out.exit_code == 1
        assert json.loads(out.stdout.splitlines()[0]) == {
            "run_id": 1, "status": "failed", "message": "oven: no reply to TEMP? within 1 s",
            "alarms": {"count": 0, "by_severity": {}, "list": []}}
        run = Store(data, read_only=True).run(1)
        assert (run.status, run.message) == ("failed", "oven: no reply to TEMP? within 1 s")
        # its lock was let go: the next run of the same file starts (and fails the same way)
        out = CliRunner().invoke(main, ["run", str(seq), "--data", data])
        assert out.exit_code == 1 and Store(data, read_only=True).run(2).status == "failed"
    finally:
        kinds.unregister("broken-soak")
