"""Small recipes and protocols for tests: the shipped ones' shapes, minutes instead of hours."""

from __future__ import annotations

from pathlib import Path

SHORT = """\
name: short LiPON
tool: sputter
sample: {id: T-1, substrate: glass}
record_every_s: 5
checkpoint_every_s: 30
steps:
  - pump_down: {below_torr: 2.0e-5, timeout_min: 60}
  - gas: {n2_sccm: 20, pressure_mtorr: 15, settle_s: 10}
  - rf: {power_W: 50, ramp_W_per_s: 5, regulation: load}
  - presputter: {for_min: 1}
  - deposit: {film: LiPON, until_thickness_nm: THICKNESS, max_h: 8}
  - rf: {power_W: 0, ramp_W_per_s: 10}
  - gas: {n2_sccm: 0}
  - vent: {}
interlocks:
  - {when: "reflected_power_W > 0.1 * forward_power_W for 5 s", then: pause,
     during: [presputter, deposit]}
  - {when: "process_gauge.pressure_torr > 0.03", then: abort, during: [presputter, deposit]}
"""


def short_recipe(tmp_path: Path, thickness_nm: float = 30, name: str = "short.yaml",
                 extra: str = "") -> Path:
    path = tmp_path / name
    path.write_text(SHORT.replace("THICKNESS", f"{thickness_nm:g}") + extra, encoding="utf-8")
    return path


#: a short LNMO cycling protocol: format with channels= and cycles=
LNMO = """
name: LNMO short
kind: cycling
potentiostat: mes4
channels: {channels}
cell: {{kind: lnmo, area_cm2: 0.049, capacity_uAh: 1.47}}
record: {{every_s: 30, every_mV: 5}}
safety: {{min_V: 2.5, max_V: 5.2}}
steps:
  - tag: cycle
  - cc: {{current_A: 3.0e-6, until: {{voltage_V: 5.1, time_h: 2}}}}
  - cc: {{current_A: -3.0e-6, until: {{voltage_V: 3.5, time_h: 2}}}}
  - loop: {{to: cycle, times: {cycles}}}
"""

#: LNMO as above with an impedance spectrum (21 points, 100 kHz to 1 Hz) opening each
#: cycle: format with channels= and cycles=
LNMO_EIS = LNMO.replace(
    "  - tag: cycle\n",
    "  - tag: cycle\n"
    "  - eis: {{from_Hz: 1.0e5, to_Hz: 1, per_decade: 4, amplitude_mV: 10}}\n").replace(
    "name: LNMO short", "name: LNMO short with EIS")
