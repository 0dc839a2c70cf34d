"""Run kinds (issue 10): the command line dispatches once, through the kind registry, so a
third kind of run — here a trivial `soak` that holds a sample for some minutes and logs
the time — is that kind's code and one `register` call, and nothing else."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lipon_hw import kinds
from lipon_hw.cli import main
from lipon_hw.errors import InputError
from lipon_hw.export import export_run
from lipon_hw.store import Store
from lipon_hw.yamlfile import load

ROOT = Path(__file__).resolve().parents[1]


class SoakKind:
    """Hold for `minutes` of virtual time; one reading a minute."""

    name = "soak"
    document_kind = "soak"
    export_formats = ("csv",)

    def _minutes(self, sequence: str) -> int:
        doc = load(sequence)
        minutes = doc.data.get("minutes")
        if not isinstance(minutes, int) or not 1 <= minutes <= 600:
            raise doc.error(("minutes",), "is a whole number of minutes from 1 to 600")
        return minutes

    def validate(self, sequence, station_path, store):
        minutes = self._minutes(sequence)
        return {"valid": True, "kind": self.name, "minutes": minutes}, f"soak {minutes} min"

    def run(self, sequence, options):
        minutes = self._minutes(sequence)
        store = Store(options.data_dir)
        run_id = store.create_run("soak", self.name, sequence, load(sequence).text, "", None,
                                  None)
        for m in range(minutes):
            store.add_readings(run_id, 60.0 * m, {"soak.minutes": float(m)})
        store.set_status(run_id, "completed", "soaked", {"minutes": minutes})
        store.close()
        print(json.dumps({"run_id": run_id, "minutes": minutes}))

    def resume(self, run_id, options):
        raise InputError(f"run {run_id}: a soak has nothing to resume")

    def export(self, store, run_id, fmt, out, force):
        return [export_run(store, run_id, fmt, out, force=force)]

    def plots(self, store, run_id, out):
        return []

    def make_safe(self, run, station, lab, done, failed):
        pass  # a soak drives no instrument

    def last_stored_t(self, store, run_id):
        return store.last_reading_t(run_id) or 0.0


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
    run_id = json.loads(out.output)["run_id"]
    assert Store(data).run(run_id).kind == "soak"
    out = cli.invoke(main, ["export", str(run_id), "--data", data, "--out",
                            str(tmp_path / "soak.csv")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "soak.csv").read_text().splitlines()[0] == "t_s,soak.minutes,step,step_kind"
    assert cli.invoke(main, ["report", str(run_id), "--data", data]).exit_code == 0
    out = cli.invoke(main, ["resume", str(run_id), "--data", data])
    assert out.exit_code == 2 and "a soak has nothing to resume" in out.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: soak\nkind: soak\nminutes: 0\n", encoding="utf-8")
    out = cli.invoke(main, ["run", str(bad), "--data", data])
    assert out.exit_code == 2 and f"{bad}:3: minutes: is a whole number" in out.output


def test_an_unknown_kind_is_one_sentence_naming_the_line(tmp_path):
    seq = tmp_path / "x.yaml"
    seq.write_text("name: x\n\nkind: screening\n", encoding="utf-8")
    out = CliRunner().invoke(main, ["run", str(seq), "--data", str(tmp_path / "d")])
    assert out.exit_code == 2
    assert f"{seq}:3: kind: 'screening' is not a kind of run" in out.output
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
