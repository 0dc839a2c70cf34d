"""What a screening metric's name says: its quantity, frequency and unit, for columns,
axis labels and test numbers.

A cell's metrics are stored as name → value with the unit as the name's last part
(`ocv_V`, `z_1000Hz_ohm`, `phase_0p5Hz_deg`, `r_hf_ohm`, `r_arc_ohm`, `r_dc_ohm`; see
`recipe.metric_names`). Their order
everywhere (table columns, maps, STDF test numbers) is the reading order: OCV, then |Z|
and phase by rising frequency, then resistances, then anything else by name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

#: a frequency as the recipe writes it into a name (`recipe.freq_label`): 1000, 0p5 (0.5),
#: 1e06, 1em05 (1e-05); a plain 0.5 or 1e+06 is read too
_AT_FREQUENCY = re.compile(r"^(?P<q>[a-z]+)_(?P<f>[0-9][0-9p.eE+m-]*)Hz_(?P<u>[A-Za-z]+)$")
#: the unit part of a name as a person writes it
UNITS = {"V": "V", "mV": "mV", "A": "A", "ohm": "Ω", "deg": "°", "s": "s", "Hz": "Hz",
         "F": "F", "pct": "%", "C": "°C", "nm": "nm", "Ah": "Ah"}
_QUANTITIES = {"ocv": "OCV", "z": "|Z|", "phase": "phase", "r_dc": "R_dc (pulse)",
               "r_bulk": "R_bulk (fitted)", "r_ct": "R_ct (fitted)",
               "r_hf": "R_hf (Re Z, highest frequency)", "r_arc": "R_arc (interface arcs)",
               "i_leak": "leakage current"}


@dataclass(frozen=True)
class Metric:
    name: str  # as stored
    quantity: str  # as a person reads it: "|Z| at 1 kHz"
    unit: str  # as a person writes it ("Ω"), "" when the name carries none
    unit_code: str  # as in the name ("ohm"): plain ASCII, for files other tools read
    frequency_Hz: float | None

    @property
    def label(self) -> str:
        return f"{self.quantity} / {self.unit}" if self.unit else self.quantity


def parse(name: str) -> Metric:
    m = _AT_FREQUENCY.match(name)
    if m:
        try:
            f = float(m["f"].replace("p", ".").replace("m", "-"))
        except ValueError:
            f = None
        if f is not None and math.isfinite(f):
            q = _QUANTITIES.get(m["q"], m["q"])
            return Metric(name, f"{q} at {format_frequency(f)}", UNITS.get(m["u"], m["u"]),
                          m["u"], f)
    stem, _, unit = name.rpartition("_")
    if not stem or unit not in UNITS:
        stem, unit = name, ""
    return Metric(name, _QUANTITIES.get(stem, stem.replace("_", " ")), UNITS.get(unit, ""),
                  unit, None)


def format_frequency(f_Hz: float) -> str:
    for scale, prefix in ((1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m")):
        if abs(f_Hz) >= scale or scale == 1e-3:
            return f"{f_Hz / scale:g} {prefix}Hz"
    return f"{f_Hz:g} Hz"  # pragma: no cover - the loop always returns


def _rank(name: str) -> tuple:
    m = parse(name)
    if name.startswith("ocv_"):
        group = 0
    elif m.frequency_Hz is not None:
        group = 1 if name.startswith("z_") else 2 if name.startswith("phase_") else 3
    elif name.startswith("r_"):
        group = 4
    else:
        group = 5
    return group, name.split("_")[0], m.frequency_Hz or 0.0, name


def ordered(names: Iterable[str]) -> list[str]:
    """The names, each once, in reading order (see the module's docstring)."""
    return sorted(set(names), key=_rank)
