"""The engine never knows it is simulated: nothing under `lipon_hw/engine/` nor the run
kinds' folders (`lipon_hw/deposition/`, `lipon_hw/celltest/`) imports
`lipon_hw.sim` (at the top, inside a function, or by name through importlib), nothing it
imports pulls the simulator in, and it reads nothing of the simulated lab itself
(`lab.sim`): what only a simulation can do reaches it as the lab's hooks. Nor does it ask
whether a station is simulated (`station.simulated`): it asks what the station can do —
keep the run's clock (`in_process`), give a seed, measure a film."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lipon_hw

PACKAGE = Path(lipon_hw.__file__).parent
SIM = "lipon_hw.sim"
#: the lifecycle every kind shares, and each kind of run
FOLDERS = ("engine", "deposition", "celltest")


def engine_modules() -> list[Path]:
    modules = sorted(p for folder in FOLDERS for p in (PACKAGE / folder).rglob("*.py"))
    assert len(modules) > 20  # the scan sees the engine, not an empty folder
    return modules


def sim_references(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every import of the simulator, every string naming it (importlib,
    __import__) and every read of a lab's `sim` attribute."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names
                      if a.name == SIM or a.name.startswith(SIM + ".")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and (module == SIM or module.startswith(SIM + ".")) or \
                    node.level == 0 and module == "lipon_hw" and \
                    any(a.name == "sim" for a in node.names) or \
                    node.level > 0 and (module == "sim" or module.startswith("sim.")):
                found.append((node.lineno, f"from {'.' * node.level}{module} import ..."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value == SIM or node.value.startswith(SIM + "."):
                found.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.Attribute) and node.attr == "sim":
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else \
                owner.id if isinstance(owner, ast.Name) else ""
            if name == "lab":
                found.append((node.lineno, "lab.sim"))
        elif isinstance(node, ast.Attribute) and node.attr == "simulated":
            # what a station is; the engine asks what it can do (in_process, default_seed)
            found.append((node.lineno, ".simulated"))
    return found


def test_no_engine_module_imports_or_reads_the_simulator():
    offences = [f"{path.relative_to(PACKAGE)}:{line}: {what}"
                for path in engine_modules()
                for line, what in sim_references(ast.parse(path.read_text("utf-8")))]
    assert offences == []


def test_the_scan_finds_each_way_of_reaching_the_simulator():
    """The scan itself can fail: each form it looks for, in a module of its own."""
    for source in ("import lipon_hw.sim.lab", "from lipon_hw.sim.lab import SimLab",
                   "from lipon_hw import sim", "def f():\n    from lipon_hw.sim import lab",
                   "import importlib\nimportlib.import_module('lipon_hw.sim.world')",
                   "def f(ctx):\n    return ctx.engine.lab.sim.world",
                   "def f(lab):\n    return lab.sim",
                   "def f(station):\n    return station.simulated"):
        assert sim_references(ast.parse(source)), source
    assert not sim_references(ast.parse("import lipon_hw.simple\nx = station.spec.sim"))


def test_importing_the_whole_engine_loads_nothing_of_the_simulator(tmp_path):
    """What the engine imports, and what those import in turn, at the top of each module."""
    names = [".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
             for p in engine_modules() if p.name != "__init__.py"]
    code = ("import sys\n" + "".join(f"import {n}\n" for n in names) +
            f"print(sorted(m for m in sys.modules if m == {SIM!r} "
            f"or m.startswith({SIM + '.'!r})))")
    # from a directory of its own: run from the source tree, `python -c` would import the
    # tree's lipon_hw (no drivers/ or sim/ inside it) instead of the installed package
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    assert out.strip() == "[]"
