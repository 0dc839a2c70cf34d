"""The online commands of a MethodSCRIPT channel other than script upload (`e`, `l`):
what a host sends outside a script, one line each, answered with the command's letter
echoed first (`<letter>!XXXX` when refused).

| command | reply                                  | what it does                            |
|---------|----------------------------------------|-----------------------------------------|
| `t`     | `t<device><fw>#<build>` then `R*`      | firmware version (two lines)            |
| `v`     | `v<MethodSCRIPT version>`              | language version (format unverified)    |
| `i`     | `i<serial number>`                     | serial (format unverified)              |
| `r`     | `r`, the script's output, empty line   | run the script in RAM (`!0006`: none)   |
| `Z`     | `Z`, end markers, `on_finished:`, ``   | abort (`Z!0006` when idle)              |
| `h`     | `h`                                    | halt the running script (`!0006` idle)  |
| `H`     | `H`                                    | resume a halted script (`!0006` if not) |
| `Fmscr` | `F`                                    | store the script in RAM to flash        |
| `Lmscr` | `L`                                    | load the script in flash to RAM         |
| `G<hh>` | `G!0007`                               | get register hh: no register modelled   |
| `S<hh>` | `S!0007`                               | set register: no register modelled      |

Sources: the reference notes (protocols.md §4.1) and PalmSens' open Python example
(`v`, `i`, `G<hh>` answered in one line after the echoed letter; `Lmscr` then `r` runs the
script kept in flash; `Z`/`Z!0006`). Not read in the manual, so assumptions: the exact
`v` and `i` strings; `r`, `F`, `L`, `h`, `H` echoing their letter alone; `!0006` (not
allowed now) for `r` without a script in RAM, `Lmscr` with an empty flash, `Fmscr` with
nothing in RAM, `h` when nothing runs and `H` when nothing is halted; the register map,
which is not modelled (every `G`/`S` answers `!0007`, invalid parameter). A halted script
stands still in its own time: on `H` it carries on as if the halt had not happened, its
timer and loop times not counting the halt, and its cell sees no time pass either (a real
cell would stay at the applied value meanwhile). `e`/`l` while a script runs or is
halted answer `!0006`; `Z` on a halted script aborts it.
"""

from __future__ import annotations

from collections.abc import Callable

from lipon_hw.drivers.methodscript import encode_error
from lipon_hw.sim.emulators.methodscript.parser import parse_script

FIRMWARE_VERSION = "14"
FIRMWARE_BUILD = "Oct  1 2025 12:00:00"
MSCRIPT_VERSION = "1.8"  # the manual version the reference names (format unverified)
SERIAL_PREFIX = {"es4_lr": "ES4LR", "es4_hr": "ES4HR", "mes4lr": "ES4LR", "mes4hr": "ES4HR"}
NOT_NOW, INVALID_PARAMETER = 0x0006, 0x0007


class OnlineCommands:
    """Mixed into the channel: `_online` maps each whole command line to its handler."""

    ram_script: list[str] | None = None  # the last script loaded (`e` or `l`)
    flash_script: list[str] | None = None
    _halted_at: float | None = None
    _running_clock: Callable[[], float] | None = None

    @property
    def _online(self) -> dict[str, Callable[[], None]]:
        return {"t": self._firmware, "v": lambda: self._emit(f"v{MSCRIPT_VERSION}"),
                "i": lambda: self._emit(f"i{self.serial_number}"), "Z": self._abort_any,
                "r": self._run_ram, "h": self._halt, "H": self._resume,
                "Fmscr": self._store_flash, "Lmscr": self._load_flash}

    @property
    def _online_with_argument(self) -> dict[str, Callable[[str], None]]:
        return {"G": lambda arg: self._register("G", arg),
                "S": lambda arg: self._register("S", arg)}

    @property
    def serial_number(self) -> str:
        """One per channel (a MultiEmStat4 channel is an EmStat4 module of its own)."""
        _, _, channel = self.name.rpartition("/")
        number = int(channel) if channel.isdigit() else 1
        return f"{SERIAL_PREFIX.get(self.device_type, 'ES4LR')}23A{number:04d}"

    @property
    def halted(self) -> bool:
        return self._halted_at is not None

    def _refuse(self, letter: str, code: int = NOT_NOW) -> None:
        self._out += encode_error(code, echo=letter)

    def _firmware(self) -> None:
        self._emit(f"t{self.device_type}{FIRMWARE_VERSION}#{FIRMWARE_BUILD}")
        self._emit("R*")

    def _run_ram(self) -> None:
        if self.running or self.ram_script is None:
            self._refuse("r")
            return
        lines = self.ram_script
        program = self._programs.get(tuple(lines))
        if program is None:  # parsed when loaded, since dropped from the cache
            program = self._programs[tuple(lines)] = parse_script(lines)
        self._emit("r")
        self._start(program, lines)

    def _store_flash(self) -> None:
        if self.ram_script is None:
            self._refuse("F")
            return
        self.flash_script = list(self.ram_script)
        self._emit("F")

    def _load_flash(self) -> None:
        if self.flash_script is None or self.running:
            self._refuse("L")
            return
        self.ram_script = list(self.flash_script)
        self._emit("L")

    def _halt(self) -> None:
        if not self.running or self.halted:
            self._refuse("h")
            return
        self._halted_at = now = self.clock()
        self._running_clock = self.clock
        self.clock = lambda: now  # the script (and its cell) stand still
        self._emit("h")

    def _resume(self, echo: bool = True) -> None:
        if not self.halted:
            self._refuse("H")
            return
        base, paused = self._running_clock, self._running_clock() - self._halted_at
        self.clock = lambda: base() - paused
        self._halted_at = self._running_clock = None
        if echo:
            self._emit("H")

    def _abort_any(self) -> None:
        if self.halted:
            self._resume(echo=False)
        self._abort()

    def _register(self, letter: str, arg: str) -> None:
        """No register is modelled: a well-formed register number is an invalid
        parameter as much as a malformed one."""
        del arg
        self._refuse(letter, INVALID_PARAMETER)
