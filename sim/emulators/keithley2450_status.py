"""The Keithley 2450's error queue and status model, as a mixin of the emulator: the event
log read by `:SYSTem:ERRor?`, the IEEE 488.2 registers (`*ESR? *ESE *SRE *STB? *OPC *CLS`)
and the SCPI operation and questionable registers (`:STATus:...`).

The 2450 maps operation and questionable bits to events only on request
(`:STATus:OPERation:MAP`, not emulated), so their condition registers read 0 and their
event registers stay 0; the enable registers are kept and `:STATus:PRESet` clears them.
The status byte: bit 2 EAV (an entry in the error queue), 3 QSB, 5 ESB (an enabled
standard event), 6 MSS (an enabled summary), 7 OSB; bit 4 MAV reads 0 over a socket, where
the reply to `*STB?` is the only message (assumption). The standard event register: bit 0
OPC (`*OPC`), 2 query error (-4xx), 3 device-dependent (-3xx, positive codes), 4 execution
error (-2xx), 5 command error (-1xx), 7 power on (set at power-up, IEEE 488.2).
"""

from __future__ import annotations

from collections import deque

from lipon_hw.drivers.keithley2450 import NO_ERROR, format_error
from lipon_hw.sim.emulators.keithley2450_scpi import (
    command_only,
    esr_bit,
    integer,
    query_only,
)

ERROR_QUEUE = 1000
PON = 128
OPC = 1
REGISTERS = ("OPER", "QUES")


class StatusModel:
    """Error queue and status registers of `self`; `self._now` stamps the entries."""

    def _power_up_status(self) -> None:
        self.errors: deque[tuple[int, str, float]] = deque(maxlen=ERROR_QUEUE)
        self.esr, self.ese, self.sre = PON, 0, 0
        self.enable = dict.fromkeys(REGISTERS, 0)

    def status_snapshot(self) -> dict:
        return {"errors": [list(entry) for entry in self.errors], "esr": self.esr,
                "ese": self.ese, "sre": self.sre, "enable": dict(self.enable)}

    def status_restore(self, state: dict) -> None:
        """The registers default as at power-up when a 0.1.0 checkpoint lacks them."""
        self.errors = deque((tuple(entry) for entry in state["errors"]), maxlen=ERROR_QUEUE)
        self.esr, self.ese = state.get("esr", PON), state.get("ese", 0)
        self.sre = state.get("sre", 0)
        self.enable = dict(state.get("enable", dict.fromkeys(REGISTERS, 0)))

    def _push(self, code: int, message: str) -> None:
        self.errors.append((code, message, self._now))
        self.esr |= esr_bit(code)

    def _status_commands(self) -> list[tuple[str, object]]:
        return [
            ("*CLS", self._cls), ("*ESR", self._esr), ("*ESE", self._register_byte("ese")),
            ("*SRE", self._register_byte("sre")), ("*STB", self._stb), ("*OPC", self._opc),
            ("*WAI", self._no_op_command),
            (":SYSTem:ERRor[:NEXT]", self._error_next), (":SYSTem:ERRor:COUNt", self._error_count),
            (":SYSTem:ERRor:ALL", self._error_all), (":SYSTem:CLEar", self._system_clear),
            (":STATus:PRESet", self._status_preset), (":STATus:CLEar", self._status_clear),
            (":STATus:OPERation[:EVENt]", self._zero_register),
            (":STATus:OPERation:CONDition", self._zero_register),
            (":STATus:OPERation:ENABle", self._enable("OPER")),
            (":STATus:QUEStionable[:EVENt]", self._zero_register),
            (":STATus:QUEStionable:CONDition", self._zero_register),
            (":STATus:QUEStionable:ENABle", self._enable("QUES")),
            (":STATus:STANdard:ENABle", self._register_byte("ese")),
            (":STATus:STANdard[:EVENt]", self._esr),
        ]

    # --- handlers -------------------------------------------------------------------------
    def _cls(self, query: bool, args: list[str]) -> None:
        """Clears the event registers and the error queue (manual: *CLS)."""
        command_only(query)
        self.errors.clear()
        self.esr = 0

    def _system_clear(self, query: bool, args: list[str]) -> None:
        command_only(query)
        self.errors.clear()

    def _esr(self, query: bool, args: list[str]) -> str:
        query_only(query, args)
        value, self.esr = self.esr, 0
        return str(value)

    def _register_byte(self, name: str):
        def handler(query: bool, args: list[str]) -> str | None:
            if query:
                query_only(query, args)
                return str(getattr(self, name))
            value = integer(args, 0, 255, 0)
            setattr(self, name, value & ~64 if name == "sre" else value)
            return None

        return handler

    def _stb(self, query: bool, args: list[str]) -> str:
        query_only(query, args)
        return str(self.status_byte())

    def status_byte(self) -> int:
        byte = 4 if self.errors else 0
        if self.esr & self.ese:
            byte |= 32
        if byte & self.sre:
            byte |= 64
        return byte

    def _opc(self, query: bool, args: list[str]) -> str | None:
        """Every operation of the emulator is complete when its command returns."""
        if query:
            query_only(query, args)
            return "1"
        self.esr |= OPC
        return None

    def _no_op_command(self, query: bool, args: list[str]) -> None:
        """`*WAI`: every operation is already complete."""
        command_only(query)

    def _error_next(self, query: bool, args: list[str]) -> str:
        query_only(query, args)
        return format_error(*self.errors.popleft()) if self.errors else NO_ERROR

    def _error_count(self, query: bool, args: list[str]) -> str:
        query_only(query, args)
        return str(len(self.errors))

    def _error_all(self, query: bool, args: list[str]) -> str:
        """Every entry, oldest first, emptying the queue; the no-error entry when empty."""
        query_only(query, args)
        entries = [format_error(*entry) for entry in self.errors] or [NO_ERROR]
        self.errors.clear()
        return ",".join(entries)

    def _status_preset(self, query: bool, args: list[str]) -> None:
        command_only(query)
        self.enable = dict.fromkeys(REGISTERS, 0)

    def _status_clear(self, query: bool, args: list[str]) -> None:
        """Event registers and the error queue cleared (the 2450's :STATus:CLEar)."""
        command_only(query)
        self.errors.clear()
        self.esr = 0

    def _zero_register(self, query: bool, args: list[str]) -> str:
        query_only(query, args)
        return "0"

    def _enable(self, register: str):
        def handler(query: bool, args: list[str]) -> str | None:
            if query:
                query_only(query, args)
                return str(self.enable[register])
            self.enable[register] = integer(args, 0, 65535, 0)
            return None

        return handler
