"""The simulated prober's chuck: the sheet on it, the probe card above it, and which cell
each site's potentiostat channel sees.

The stage's emulator (`sim/emulators/grbl.py`) calls `touch(x, y, down)` with the machine
position whenever its Z reaches the contact height (down) or leaves it (up). The chuck
reads the stage instrument's station `settings` (the driver's: `card`, `origin_mm`,
`contact_z_mm`), as the engine does, and its `sim:` section: `potentiostat` (the
simulated potentiostat whose channels the sites are wired to), `contact_miss` (the
probability that a site fails to make contact at one touchdown; default 0.003, an
assumption) and `align_tolerance_mm` (how far a site may sit from a cell's centre and
still land on its pad; default 0.1 mm, an assumption: pads of a few mm, a pitch of
10 mm).

On a touchdown, site (i, j) lands on the sheet point (x + (j−1)·pitch_x, y + (i−1)·pitch_y)
of the sheet's frame (cell (r, c) centred at ((c−1)·pitch_x, (r−1)·pitch_y) of the
sheet's own pitch); the channel gets a `ProbeContact` holding that cell, or none (no
contact) when the point is off the sheet, off a pad, or the site misses. Misses and the
floating voltages of open inputs come from a generator seeded by the World's seed, the
stage's name and the touchdown's number, one draw per site, so a run is reproducible.
On a lift every contact of the card is broken at once (a measurement still running sees
the open circuit from then on; its look-ahead, if any, is not revised: unverified for
event-driven loops, which the engine avoids by lifting only after its measurements).

No contact reads as an open input (assumptions, not a measured instrument): at open
circuit the voltage floats at a value of its own (drawn in ±1 V per touchdown and site,
held: the input capacitance keeps its charge); a current forced into it drives the
voltage to the compliance, ±`COMPLIANCE_V`; a voltage applied draws V/`OPEN_OHM`;
the impedance is `OPEN_OHM` in parallel with `STRAY_F` of probe capacitance, 1.6e8 Ω at
1 kHz, where a cell reads tens of ohms.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from lipon_hw.errors import InputError

OPEN_OHM = 1.0e14  # as the cells' open fault (sim/cells/params.py)
STRAY_F = 1.0e-12  # probe-to-probe capacitance (assumption)
COMPLIANCE_V = 5.0  # assumption: the voltage a channel reaches forcing current into nothing
DEFAULT_MISS = 0.003
DEFAULT_ALIGN_MM = 0.1


class ProbeContact:
    """What a site's channel sees: the cell under the needles, or an open input. Keeps
    the cell contract of `lipon_hw.sim.cells.model.Cell`."""

    kind = "probe_contact"

    def __init__(self, name: str, cell=None, floating_V: float = 0.0):
        self.name = name
        self.cell = cell
        self.floating_V = float(floating_V)
        self.mode, self.value = "open", 0.0

    @property
    def connected(self) -> bool:
        return self.cell is not None

    @property
    def faults(self) -> list:
        return self.cell.faults if self.connected else []

    def add_faults(self, faults) -> None:
        if self.connected:
            self.cell.add_faults(faults)

    def disconnect(self, t: float) -> None:
        """The needles leave the pad at t: the cell is left at open circuit."""
        if self.connected:
            self.cell.set_control(t, "open", 0.0)
            self.cell = None

    # --- the cell contract ------------------------------------------------------------
    def set_control(self, t: float, mode: str, value: float) -> None:
        self.mode, self.value = mode, 0.0 if mode == "open" else float(value)
        if self.connected:
            self.cell.set_control(t, mode, value)

    def voltage_V(self, t: float) -> float:
        if self.connected:
            return self.cell.voltage_V(t)
        if self.mode == "voltage":
            return self.value
        if self.mode == "current" and self.value:
            return math.copysign(COMPLIANCE_V, self.value)
        return self.floating_V

    def current_A(self, t: float) -> float:
        if self.connected:
            return self.cell.current_A(t)
        return self.value / OPEN_OHM if self.mode == "voltage" else 0.0

    def impedance_ohm(self, t: float, f_Hz: float) -> complex:
        if self.connected:
            return self.cell.impedance_ohm(t, f_Hz)
        return 1.0 / complex(1.0 / OPEN_OHM, 2 * math.pi * f_Hz * STRAY_F)

    def next_crossing(self, t: float, v_min, v_max, i_min_abs):
        if self.connected:
            return self.cell.next_crossing(t, v_min, v_max, i_min_abs)
        if self.mode == "voltage":
            return t if i_min_abs is not None and abs(self.current_A(t)) <= i_min_abs else None
        v = self.voltage_V(t)
        hit = (v_min is not None and v <= v_min) or (v_max is not None and v >= v_max)
        return t if hit else None

    def snapshot(self) -> dict:
        return {"connected": self.connected, "floating_V": self.floating_V,
                "cell": self.cell.snapshot() if self.connected else None}

    def restore(self, state: dict) -> None:
        self.floating_V = state["floating_V"]
        if self.connected and state["cell"] is not None:
            self.cell.restore(state["cell"])
        elif not state["connected"]:
            self.cell = None


@dataclass(frozen=True)
class SiteContact:
    """One site at one touchdown: where it landed and what it touched."""

    site: int
    channel: int
    row: int | None  # the cell's (None: off the sheet or off a pad)
    col: int | None
    contact: str  # "ok", "off_sheet", "misaligned" or "miss"


class Chuck:
    """The sheet on the chuck and the card's sites over it (`SimLab.chuck`)."""

    def __init__(self, lab, stage: str, driver, potentiostat: str, contact_miss: float,
                 align_tolerance_mm: float, seed: int):
        self.lab = lab
        self.stage = stage
        self.card = driver.card
        self.origin_mm = driver.origin_mm
        self.contact_z_mm = driver.contact_z_mm
        self.potentiostat = potentiostat
        self.contact_miss = float(contact_miss)
        self.align_tolerance_mm = float(align_tolerance_mm)
        self._seed = [int(seed), zlib.crc32(stage.encode())]
        self._loaded = None
        self.touchdowns = 0
        self.last: list[SiteContact] = []
        for site, channel in enumerate(self.card.channels, start=1):
            self._mount(channel, ProbeContact(self._name(site)))

    @property
    def sheet(self):
        """The sheet on the chuck: one `load`ed, else the lab's (`SimSheets` leaves the
        sheet a screening tests on the lab as `sheet`), else None."""
        return self._loaded if self._loaded is not None else getattr(self.lab, "sheet", None)

    def load(self, sheet) -> None:
        """Put a sheet (rows, cols, pitch_mm, cell(row, col)) on the chuck (None: the
        lab's)."""
        self._loaded = sheet

    def touch(self, x_mm: float, y_mm: float, down: bool) -> None:
        now = self.lab.world.clock()
        if not down:
            for channel in self.card.channels:
                contact = self.lab.cell(self.potentiostat, channel)
                if isinstance(contact, ProbeContact):
                    contact.disconnect(now)
                else:
                    self._mount(channel, ProbeContact(f"{self.stage} open"))
            return
        self.touchdowns += 1
        rng = np.random.default_rng([*self._seed, self.touchdowns])
        misses = rng.random(self.card.sites) < self.contact_miss
        floating = rng.uniform(-1.0, 1.0, self.card.sites)
        x0, y0 = x_mm - self.origin_mm[0], y_mm - self.origin_mm[1]
        landed = []
        for i in range(1, self.card.rows + 1):
            for j in range(1, self.card.cols + 1):
                site = (i - 1) * self.card.cols + j
                dx, dy = self.card.site_offset_mm(i, j)
                row, col, contact = self._under(x0 + dx, y0 + dy)
                if contact == "ok" and misses[site - 1]:
                    contact = "miss"
                cell = self.sheet.cell(row, col) if contact == "ok" else None
                channel = self.card.channels[site - 1]
                self._mount(channel, ProbeContact(self._name(site), cell,
                                                  float(floating[site - 1])))
                landed.append(SiteContact(site, channel, row, col, contact))
        self.last = landed

    def _under(self, x: float, y: float) -> tuple[int | None, int | None, str]:
        sheet = self.sheet
        if sheet is None:
            return None, None, "off_sheet"
        px, py = sheet.pitch_mm
        col, row = round(x / px) + 1, round(y / py) + 1
        if not (1 <= row <= sheet.rows and 1 <= col <= sheet.cols):
            return None, None, "off_sheet"
        if abs(x - (col - 1) * px) > self.align_tolerance_mm or \
                abs(y - (row - 1) * py) > self.align_tolerance_mm:
            return None, None, "misaligned"
        return row, col, "ok"

    def _name(self, site: int) -> str:
        return f"{self.stage} site {site}"

    def _mount(self, channel: int, contact: ProbeContact) -> None:
        self.lab.mount_cell(self.potentiostat, channel, contact)


def attach_chucks(lab, spec, seed: int) -> dict[str, Chuck]:
    """A chuck under every simulated stage of the station (its emulator has
    `chuck_settings`), wired to the potentiostat its `sim:` section names."""
    from lipon_hw.station import driver_class, driver_kwargs

    chucks = {}
    for name, inst in spec.instruments.items():
        ports = [e for e in lab.ports_of(name)] if name in lab.drivers_by_instrument else []
        emulator = ports[0] if ports else None
        settings = getattr(emulator, "chuck_settings", None)
        if settings is None:
            continue
        pstat = settings["potentiostat"]
        if pstat not in lab.potentiostats:
            raise InputError(f"instrument {name}: potentiostat must name the simulated "
                             f"potentiostat the probe card's sites are wired to (these are: "
                             f"{', '.join(lab.potentiostats) or 'none'})")
        miss = DEFAULT_MISS if settings["contact_miss"] is None else settings["contact_miss"]
        if not 0.0 <= miss <= 1.0:
            raise InputError(f"instrument {name}: contact_miss is a probability, 0 to 1, "
                             f"not {miss!r}")
        align = settings["align_tolerance_mm"]
        align = DEFAULT_ALIGN_MM if align is None else align
        if not align > 0:
            raise InputError(f"instrument {name}: align_tolerance_mm must be positive")
        driver = driver_class(inst.driver)(name, None, **driver_kwargs(driver_class(inst.driver),
                                                                     inst))
        count = len(lab.potentiostats[pstat].ports)
        beyond = [c for c in driver.card.channels if c > count]
        if beyond:
            raise InputError(f"instrument {name}: the probe card's sites use channel "
                             f"{beyond[0]}, but {pstat} has {count} channels")
        chuck = Chuck(lab, name, driver, pstat, miss, align, seed)
        emulator.chuck, emulator.schedule = chuck, lab.faults.at
        chucks[name] = chuck
    return chucks
