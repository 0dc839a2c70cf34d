"""Alicat MC-series mass-flow controller on the wire, feeding N2 into the sputter tool.

The setpoint is the flow the tool receives (`set_n2_flow_sccm`); the flow reads
back with 0.2 % of full scale noise. Inlet pressure and gas temperature are
fixed at 14.70 psia and 25.00 °C (assumption), so volumetric and mass flow
coincide (Alicat's default standard conditions are 25 °C, 14.696 psia).
Setpoints are taken as `S<float>` or as an integer 0..64000 of full scale
(MC-series manual, methods 1 and 2); a setpoint outside 0..full scale, or any
other unknown command, is answered with `?` (assumption). Lines for other unit
ids are ignored, as on a shared RS-485 bus.
"""

from __future__ import annotations

from lipon_hw.drivers.alicat import REFUSAL, TERMINATOR, DataFrame, format_data_frame
from lipon_hw.sim.emulator import DISCARD_ALL, Emulator

INLET_PSIA = 14.70
GAS_TEMPERATURE_C = 25.00
INTEGER_FULL_SCALE = 64000
MAX_LINE = 128  # longer input without a CR is line noise, dropped


class AlicatEmulator(Emulator):
    model = "Alicat MC-50SCCM-D"
    firmware = "10v05.0-R24"

    def __init__(self, name: str, tool, unit: str = "A", full_scale_sccm: float = 50.0):
        super().__init__(name)
        self.tool = tool
        self.unit = unit.upper()
        self.full_scale_sccm = float(full_scale_sccm)

    def _process(self, buffer: bytes) -> tuple[int, bytes]:
        end = buffer.find(TERMINATOR)
        if end < 0:
            return (DISCARD_ALL if len(buffer) > MAX_LINE else 0), b""
        line = buffer[:end].decode("ascii", errors="replace").strip().upper()
        if not line or line[0] != self.unit:
            return end + 1, b""
        with self.world_lock:
            return end + 1, self._answer(line[1:].strip())

    def _answer(self, command: str) -> bytes:
        if self.faults.error_code is not None:  # the unit refuses whatever it is sent
            return REFUSAL.encode("ascii") + TERMINATOR
        if command == "":
            return self._frame()
        if command == "VE":
            return f"{self.unit} {self.firmware}\r".encode("ascii")
        setpoint = self._setpoint_of(command)
        if setpoint is None or not 0.0 <= setpoint <= self.full_scale_sccm:
            return REFUSAL.encode("ascii") + TERMINATOR
        self.tool.set_n2_flow_sccm(setpoint)
        return self._frame()

    def _setpoint_of(self, command: str) -> float | None:
        if command.isdigit():
            return int(command) / INTEGER_FULL_SCALE * self.full_scale_sccm
        if command.startswith("S"):
            try:
                return float(command[1:])
            except ValueError:
                return None
        return None

    def _frame(self) -> bytes:
        setpoint = self.tool.n2_setpoint_sccm()
        noise = self.tool.world.rng.normal(0.0, 0.002 * self.full_scale_sccm)
        flow = self.tool.n2_flow_sccm() + noise
        return format_data_frame(DataFrame(self.unit, INLET_PSIA, GAS_TEMPERATURE_C,
                                           flow, flow, setpoint, "N2"))
