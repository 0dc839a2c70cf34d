"""docs/: the generated reference is current, and every guide's code and commands run.

- `docs/reference.md` must be what `docs/make_reference.py` writes from the models now
  (change a model, forget to regenerate: this fails), and name every step and field.
- `docs/add-a-driver.md`: its Python blocks run in order in one namespace, then its
  `test_*` functions (the guide's own driver against its own emulator).
- `docs/write-a-recipe.md`: each YAML block headed `# file: NAME` is written to NAME in
  a scratch directory, then each `sh` line runs there; a line ending in
  `# exit N: MESSAGE` must exit N and print MESSAGE, any other must exit 0. The YAML
  files also pass the JSON Schema their modeline names.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import jsonschema
import pytest

from lipon_hw.celltest import protocol_schema as ps
from lipon_hw.deposition import recipe as rc
from lipon_hw.json_schema import load_yaml12

DOCS = Path(__file__).parent.parent / "docs"
BIN = Path(sys.executable).parent


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_the_reference_is_what_the_models_say_now(tmp_path):
    script = DOCS / "make_reference.py"
    check = subprocess.run([sys.executable, str(script), "--check"], capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    stale = tmp_path / "reference.md"  # one default changed by hand, as a model edit would
    stale.write_text((DOCS / "reference.md").read_text("utf-8").replace(
        "| `ramp_W_per_s` | number | W/s | 0.01 … 1000 | `1` |",
        "| `ramp_W_per_s` | number | W/s | 0.01 … 1000 | `2` |"), encoding="utf-8")
    assert stale.read_text("utf-8") != (DOCS / "reference.md").read_text("utf-8")
    assert subprocess.run([sys.executable, str(script), "--check", str(stale)],
                          capture_output=True, timeout=120).returncode == 1


def test_the_reference_names_every_step_and_field():
    text = (DOCS / "reference.md").read_text("utf-8")
    sections = dict(re.findall(r"^### (.+?)\n(.*?)(?=^##)", text, re.S | re.M))
    for kinds in (rc.STEP_KINDS, ps.STEP_KINDS):
        for kind, model in kinds.items():
            section = sections[f"`{kind}`"]
            for field in model.model_fields:
                assert f"| `{field}` |" in section, (kind, field)
    assert "| `power_W` | number | W | 0 … 10000 | **required** |" in sections["`rf`"]


def test_the_driver_guide_runs(monkeypatch):
    text = (DOCS / "add-a-driver.md").read_text("utf-8")
    module = types.ModuleType("add_a_driver")  # dataclasses look their module up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for i, block in enumerate(_blocks(text, "python")):
        exec(compile(block, f"add-a-driver.md block {i + 1}", "exec"), module.__dict__)
    tests = [f for name, f in vars(module).items() if name.startswith("test_")]
    assert len(tests) >= 2
    for test in tests:
        test()


def test_the_recipe_guide_runs(tmp_path):
    text = (DOCS / "write-a-recipe.md").read_text("utf-8")
    files = {}
    for block in _blocks(text, "yaml"):
        name = re.match(r"# file: (\S+)", block)
        if name:
            files[name[1]] = block
            (tmp_path / name[1]).write_text(block, encoding="utf-8")
    assert {"lipon_200nm.yaml", "lnmo_short.yaml"} <= set(files)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    lines = [line for block in _blocks(text, "sh") for line in block.strip().splitlines()]
    assert any(line.startswith("lipon-hw run") for line in lines)
    for line in lines:
        command, _, expect = line.partition("  # exit ")
        code, _, message = expect.partition(": ")
        done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=env)
        assert done.returncode == int(code or 0), (line, done.stderr[-2000:])
        assert message in done.stderr, (line, done.stderr)
    for name, body in files.items():
        modeline = re.search(r"# yaml-language-server: \$schema=(\S+)", body)
        if modeline:
            schema = load_yaml12((tmp_path / modeline[1]).read_text("utf-8"))
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(
                load_yaml12(body)))
            assert errors == [], (name, errors[0].message if errors else "")


@pytest.mark.parametrize("guide", ["write-a-recipe.md", "add-a-driver.md"])
def test_guides_name_only_real_commands(guide):
    """Every `lipon-hw CMD` a guide mentions in prose is a command of the CLI."""
    from lipon_hw.cli import main

    text = (DOCS / guide).read_text("utf-8")
    for command in set(re.findall(r"lipon-hw (\w[\w-]*)", text)):
        assert command in main.commands, (guide, command)
