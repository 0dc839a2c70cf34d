"""What an INFICON instrument (SQM-160, SQC-310) measures on the sensor wired to a crystal.

Both emulators read their crystal through one `CrystalSensor`, so the same film on the same
crystal reads the same on both (the formulas and the choice between them: `lipon_hw.sim.qcm`):

- frequency: the crystal's, or 0 Hz when it has failed;
- rate: the crystal's mass rate over the film density, times the toolings; a reading the
  instrument takes as a measurement carries seeded noise of RATE_NOISE_A_S;
- thickness: the Z-match equation between the frequency at the last zero and now, from the
  crystal's uncoated frequency, with the film's density and Z-ratio, times the toolings. A
  failed crystal holds the last thickness computed while it oscillated (computed on demand,
  so the last one asked for or used by a control loop);
- crystal life: where the frequency sits between the configured min and max frequencies.

The zero frequency and the held thickness are instrument memory; each emulator puts them in
its snapshot under the keys it always used.
"""

from __future__ import annotations

from dataclasses import dataclass

from lipon_hw.sim import qcm

RATE_NOISE_A_S = 0.05  # assumption: rate scatter of one measurement on a settled 6 MHz crystal


@dataclass(frozen=True)
class FilmConstants:
    """What an instrument converts with: the film's density and Z-ratio, and the product of
    its toolings (film × crystal, a fraction)."""

    density_g_cm3: float
    z_ratio: float
    tooling: float


class CrystalSensor:
    """The sensor input a tool's crystal is wired to: its zero and the thickness it holds."""

    def __init__(self, tool):
        self.tool = tool
        self.zero_Hz: float | None = None
        self.held_A = 0.0
        self.zeros = 0  # zero commands carried out (tests count repeats)

    def live(self) -> dict | None:
        """The crystal's reading (`tool.crystal()`) if it oscillates, else None."""
        crystal = self.tool.crystal()
        return None if crystal["failed"] else crystal

    def frequency_Hz(self) -> float:
        """The crystal's frequency, 0 Hz when it has failed (the tool's own accessor where it
        has one: the mass rate is not needed)."""
        frequency = getattr(self.tool, "crystal_frequency_Hz", None)
        if frequency is not None:
            return frequency()
        crystal = self.live()
        return crystal["frequency_Hz"] if crystal else 0.0

    def rate_A_s(self, film: FilmConstants, crystal: dict) -> float:
        """The film rate the crystal's mass rate means, without measurement noise."""
        return qcm.rate_A_s(crystal["mass_rate_g_cm2_s"], film.density_g_cm3, film.tooling)

    def measured_rate_A_s(self, film: FilmConstants, crystal: dict) -> float:
        """One rate measurement: the true rate plus the instrument's noise."""
        return self.rate_A_s(film, crystal) + self.tool.world.rng.normal(0, RATE_NOISE_A_S)

    def thickness_A(self, film: FilmConstants) -> float:
        """Thickness since the zero, or the held one if the crystal has failed."""
        crystal = self.live()
        return self.thickness_from(film, crystal) if crystal else self.held_A

    def thickness_from(self, film: FilmConstants, crystal: dict) -> float:
        """Thickness since the zero on an oscillating crystal; kept as the held value. The
        first reading after a zero that found no crystal takes the zero there."""
        if self.zero_Hz is None:
            self.zero_Hz = crystal["frequency_Hz"]
        self.held_A = qcm.thickness_since_zero_A(crystal["fundamental_Hz"], self.zero_Hz,
                                                 crystal["frequency_Hz"], film.density_g_cm3,
                                                 film.z_ratio, film.tooling)
        return self.held_A

    def zero(self) -> None:
        """Thickness 0 from now (at the next reading if the crystal has failed)."""
        crystal = self.live()
        self.zero_Hz = crystal["frequency_Hz"] if crystal else None
        self.held_A = 0.0
        self.zeros += 1

    @staticmethod
    def life_pct(frequency_Hz: float, f_min_Hz: float, f_max_Hz: float) -> float:
        return qcm.crystal_life_pct(frequency_Hz, f_min_Hz, f_max_Hz)
