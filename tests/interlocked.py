"""The short LiPON recipe with one interlock of a test's choosing, armed in the
presputter, where the RF's forward power (50 W) makes `forward_power_W > 10` true at every
sample: `alarm` stores a warning as it trips (and an info as the presputter ends and
the rule is disarmed), `abort` ends the run at the first, and `pause` (with `for 5 s`)
holds with RF off, clears once RF is off, and holds again until the run is aborted for
holding the step more than MAX_HOLDS_PER_STEP times. Deterministic in virtual time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lipon_hw.station import default_station_text

from recipes import SHORT

WHEN = {"alarm": "forward_power_W > 10", "abort": "forward_power_W > 10",
        "pause": "forward_power_W > 10 for 5 s"}


def interlocked_recipe(tmp_path: Path, then: str, thickness_nm: float = 5) -> Path:
    head = SHORT.split("interlocks:")[0].replace("THICKNESS", f"{thickness_nm:g}")
    path = tmp_path / f"{then}.yaml"
    path.write_text(f'{head}interlocks:\n  - {{when: "{WHEN[then]}", then: {then}, '
                    f"during: [presputter]}}\n", encoding="utf-8")
    return path


def station_with(tmp_path: Path, notify: str, name: str = "station.yaml") -> Path:
    """The built-in simulated lab with `notify` (YAML text of the mapping) appended."""
    path = tmp_path / name
    path.write_text(default_station_text().rstrip("\n") + f"\nnotify: {notify}\n",
                    encoding="utf-8")
    return path


def cli(*args, cwd, timeout=180) -> subprocess.CompletedProcess:
    """`lipon-hw ARGS` in a fresh interpreter, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "lipon_hw.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
