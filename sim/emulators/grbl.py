"""A GRBL v1.1 motion controller on the wire: the XYZ stage of the simulated prober.

Source: gnea/grbl's v1.1 documents (interface.md, commands.md, the error and alarm code
CSVs); `lipon_hw.drivers.grbl` lists what is taken from them and what is unverified.

Bytes. Real-time commands are picked out of the stream as they arrive, wherever they
fall, and get no `ok`: `?` status report `<State|MPos:x,y,z|FS:feed,0>` (feed in mm/min,
speed 0: no spindle), `!` feed hold (decelerates along the path: `Hold:1`, then
`Hold:0`), `~` resume, 0x18 soft reset (the banner `Grbl 1.1h ['$' for help]`; in
motion: `ALARM:3` first, position kept here though the doc says it may be lost). Every
other byte goes to a line ended by CR or LF (each ends a line, so CR LF makes an empty
line and a second `ok`, as GRBL 1.1's main loop does); a line over 80 characters is
`error:11`. Spaces and `(comments)` and `;` comments are dropped, letters upper-cased.

Lines: G0, G1 (F mm/min, modal), G4 P<s> (its `ok` comes only when every queued move and
the dwell are done; lines sent meanwhile wait), G53 (machine coordinates, with G0/G1
only: `error:30`), G90/G91, G20/G21, G17/G54/G94 (accepted, nothing else to do); `$$`
settings, `$N=value` (only while Idle: `error:8`), `$I` build info, `$G` parser state,
`$` help, `$X` unlock, `$H` homing (`error:5` with `$22=0`), `$J=` jogs (need F; a target
beyond travel is `error:15`). Errors: 1 a word without letter, 2 a bad number,
3 an unknown `$` command, 9 G-code in alarm, 20 an unsupported G or M code,
21 two motion codes, 22 no feed for G1, 25 a word twice, 28 G4 without P, 36 an unused
word. With soft limits on (`$20=1`), a G0/G1 target outside the machine travel
(−$13x…0 mm per axis) throws `ALARM:2` and `[MSG:Reset to continue]`: no `ok`, and
nothing (`?` included) is answered until a soft reset, after which the state is Alarm
with `[MSG:'$H'|'$X' to unlock]` until `$X` (`[MSG:Caution: Unlocked]`) or `$H`.

Motion (`grbl_motion`): moves take the time of a trapezoid from the `$110`–`$112` rates
and `$120`–`$122` accelerations, one after another, Z included; the state is `Run`
while any is queued, `Idle` after (and during a G4 once the moves are done:
unverified). Homing takes the time of Z up, then X and Y together, at the seek rate
`$25`, and ends at −`$27` (pull-off) on every axis; `?` is ignored meanwhile, as the
doc says. The status report carries no `Bf`, `WCO`, `Ov` or `Pn` fields.

Emulator settings (assumptions for a prober's stage, not GRBL's factory values, which
interface.md lists as 500 mm/min, 10 mm/s², 200 mm): X/Y 6000 mm/min and 500 mm/s²,
Z 600 mm/min and 100 mm/s², travel 400 × 300 × 20 mm, homing and soft limits on;
`grbl_settings: {110: …}` overrides them. `homed: true` (default) starts Idle at the
home position, as a rig homed at power-up; `false` starts in Alarm as GRBL does with
homing enabled. `resets_on_reconnect: true` is an Arduino-based board whose USB serial port
resets the controller when it is opened again (DTR): a re-open after the first (a lost link
the host re-opens) is a power-up, motion stopped where it is, the banner sent, the position
counted from there as machine zero (the stage itself has not moved: the controller no
longer knows where it is), and Alarm with homing on until `$H` (which finds the switches
and the true position again) or `$X` (unlocked, the position still wrong).
`potentiostat`, `contact_miss` and `align_tolerance_mm` belong to the chuck
(`lipon_hw.sim.chuck`), which `SimLab` attaches as `chuck`: every move that brings Z to
or below the chuck's contact height calls `chuck.touch(x, y, True)` when it ends (an
event on the lab's schedule, so it happens at its time even if the host talks only to
the potentiostat meanwhile), and every move that starts from contact calls
`chuck.touch(x, y, False)` as it starts.
"""

from __future__ import annotations

import re

from lipon_hw.drivers.grbl import format_status, move_limits
from lipon_hw.sim.emulator import Emulator, Session
from lipon_hw.sim.emulators.grbl_motion import Planner, Segment

VERSION = "1.1h"
BUILD = "[VER:1.1h.20190830:]\r\n[OPT:V,15,128]\r\n"
BANNER = f"\r\nGrbl {VERSION} ['$' for help]\r\n"
HELP = "[HLP:$$ $# $G $I $N $x=val $Nx=line $J=line $SLP $C $X $H ~ ! ? ctrl-x]\r\n"
LOCKED = "[MSG:'$H'|'$X' to unlock]\r\n"
LINE_MAX = 80  # GRBL's LINE_BUFFER_SIZE
RX_BUFFER = 128  # bytes of the serial receive buffer; more is lost
REALTIME = frozenset(b"?!~\x18")
DEFAULT_SETTINGS = {
    0: 10.0, 1: 25.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0, 10: 1.0, 11: 0.010,
    12: 0.002, 13: 0.0, 20: 1.0, 21: 0.0, 22: 1.0, 23: 0.0, 24: 25.0, 25: 500.0,
    26: 250.0, 27: 1.0, 30: 1000.0, 31: 0.0, 32: 0.0, 100: 800.0, 101: 800.0, 102: 800.0,
    110: 6000.0, 111: 6000.0, 112: 600.0, 120: 500.0, 121: 500.0, 122: 100.0,
    130: 400.0, 131: 300.0, 132: 20.0,
}
#: the `$` commands answered (besides `$N=value` settings)
SYSTEM = ("$", "$$", "$I", "$G", "$X", "$H", "$J=")
#: the G codes a line may carry
G_CODES = (0, 1, 4, 17, 20, 21, 53, 54, 90, 91, 94)
_WORD = re.compile(r"([A-Z])([+-]?(?:\d+\.?\d*|\.\d+))")
_SET = re.compile(r"\$(\d+)=([+-]?(?:\d+\.?\d*|\.\d+))")


class GrblSession(Session):
    pass


class GrblEmulator(Emulator):
    model = f"GRBL {VERSION} motion controller"
    session_class = GrblSession
    #: keys of the instrument's `sim:` section that the chuck reads, not the emulator
    CHUCK_KEYS = ("potentiostat", "contact_miss", "align_tolerance_mm")

    def __init__(self, name: str, tool, homed: bool = True,
                 grbl_settings: dict | None = None, potentiostat: str | None = None,
                 contact_miss: float | None = None, align_tolerance_mm: float | None = None,
                 resets_on_reconnect: bool = False):
        super().__init__(name)
        for key, value in (("homed", homed), ("resets_on_reconnect", resets_on_reconnect)):
            if not isinstance(value, bool):  # a YAML "yes"/"maybe" is no answer
                raise ValueError(f"{name}: {key} must be true or false, not {value!r}")
        self.resets_on_reconnect = resets_on_reconnect
        self._opened = 0  # times the port was opened (the first is the session's start)
        self._booted = False  # a power-up's banner waits for the next bytes
        #: where the controller counts from: the stage's position = the position it
        #: reports + this (zero until a power-up while away from machine zero)
        self.offset = (0.0, 0.0, 0.0)
        self.clock = tool.world.clock
        self.settings = dict(DEFAULT_SETTINGS)
        for key, value in (grbl_settings or {}).items():
            if int(key) not in DEFAULT_SETTINGS:
                raise ValueError(f"{name}: grbl_settings has no ${key}")
            self.settings[int(key)] = float(value)
        self.chuck_settings = {"potentiostat": potentiostat, "contact_miss": contact_miss,
                               "align_tolerance_mm": align_tolerance_mm}
        self.chuck = None  # the simulated prober's chuck, attached by SimLab
        #: the lab's event schedule, `schedule(t, action)` (SimLab: `faults.at`): a landing
        #: fires at its time even when only the potentiostat is being talked to
        self.schedule = None
        pull = -self.settings[27]
        self.planner = Planner((pull, pull, pull))
        self.alarm = not homed  # G-code locked
        self.critical = False  # waiting for a soft reset after a limit alarm
        self.hold: int | None = None  # 1: decelerating, 0: stopped, ready to resume
        self._held: list[Segment] = []  # what a feed hold left, resumed by ~
        self._waiting: Segment | None = None  # the G4 or $H whose ok is due at its end
        self.in_contact = False
        self.absolute, self.inches, self.feed, self.motion = True, False, None, 0
        self.touches: list[tuple[float, float, bool, float]] = []  # (x, y, down, t)

    # --- bytes ----------------------------------------------------------------------
    def reset_connection(self) -> None:
        super().reset_connection()
        self._opened += 1
        if self.resets_on_reconnect and self._opened > 1:
            self._power_up()

    def _power_up(self) -> None:
        """The board reset by its port being opened: see the module docstring."""
        here = self.planner.flush(self.clock())
        self._held, self._waiting, self.hold, self.critical = [], None, None, False
        self.offset = here
        self.alarm = bool(self.settings[22])
        self.absolute, self.inches, self.motion, self.feed = True, False, 0, None
        self._booted = True

    def handle(self, data: bytes, session: Session | None = None) -> bytes:
        self.session = session = session if session is not None else self._own_session
        self.check_plugged()
        if self.faults.link_down:
            return b""
        out = bytearray(self._tick())
        if self._booted:
            self._booted = False
            out[:0] = (BANNER + (LOCKED if self.alarm else "")).encode("ascii")
        for byte in data:
            if byte in REALTIME:
                out += self._realtime(byte)
                continue
            if len(session.buffer) < RX_BUFFER:
                session.buffer.append(byte)
            if byte in b"\r\n" and not self._blocked():
                out += self._lines(session)
        return self._apply_faults(bytes(out))

    def _blocked(self) -> bool:
        return self.critical or self._waiting is not None

    def _lines(self, session: Session) -> bytes:
        out = bytearray()
        buffer = session.buffer
        while not self._blocked():
            ends = [i for i in (buffer.find(b"\n"), buffer.find(b"\r")) if i >= 0]
            if not ends:
                if len(buffer) > LINE_MAX:  # overflowing line: dropped up to its end
                    buffer.clear()
                    out += b"error:11\r\n"
                break
            end = min(ends)
            raw = bytes(buffer[:end])
            del buffer[:end + 1]
            if len(raw) > LINE_MAX:
                out += b"error:11\r\n"
                continue
            out += self._line(raw.decode("ascii", errors="replace")).encode("ascii")
        return bytes(out)

    # --- real-time commands ----------------------------------------------------------
    def _realtime(self, byte: int) -> bytes:
        if byte == 0x18:
            return self._reset().encode("ascii")
        if self.critical or (self._waiting is not None and self._waiting.kind == "home"):
            return b""  # not answered while waiting for a reset or homing
        now = self.clock()
        if byte == ord("?"):
            pos, speed = self.planner.now_at(now)
            pos = self._counted(pos)
            if self.alarm:
                state, sub = "Alarm", None
            elif self.hold is not None:
                state, sub = "Hold", self.hold
            else:
                head = self.planner.queue[0] if self.planner.queue else None
                moving = head is not None and head.kind != "dwell"
                state = ("Jog" if head.jog else "Run") if moving else "Idle"
                sub = None
            feed = speed * 60.0 * (1 / 25.4 if self.settings[13] else 1.0)
            return format_status(state, pos, feed, 0.0, sub)
        if byte == ord("!") and self.planner.busy and self.hold is None:
            head = self.planner.queue[0]
            if head.kind == "move":
                decel, rest = head.stop_from(now - head.t0)
                self._held = [rest, *self.planner.queue[1:]]
                self.planner.queue[:] = [decel]
                decel.t0, decel.announced = now, True
                self.hold = 1
        elif byte == ord("~") and self.hold == 0:
            self.hold = None
            for segment in self._held:
                self.planner.add(segment, now)
            self._held = []
        return b""

    def _reset(self) -> str:
        now = self.clock()
        out = ""
        moving = self.planner.busy and self.planner.queue[0].kind != "dwell"
        self.planner.flush(now)
        self._held, self._waiting, self.hold = [], None, None
        self.session.buffer.clear()
        if moving and not self.critical:
            out += "ALARM:3\r\n"
            self.alarm = True
        self.critical = False
        self.absolute, self.inches, self.motion = True, False, 0
        out += BANNER
        if self.alarm:
            out += LOCKED
        return out

    # --- the clock -------------------------------------------------------------------
    def _tick(self) -> bytes:
        """Finish what the clock has finished; an `ok` held by G4 or $H when it is due."""
        out = ""
        now = self.clock()
        self._announce()
        for segment, t_end in self.planner.advance(now):
            if segment.kind == "home":  # the switches found: the true position again
                self.alarm, self.offset = False, (0.0, 0.0, 0.0)
            if self.hold == 1 and not self.planner.queue:
                self.hold = 0
            if segment.kind != "dwell" and not self.in_contact and self._touching(segment.end):
                self.in_contact = True
                self._touch(segment.end, True, t_end)
            if segment is self._waiting:
                self._waiting = None
                out += "ok\r\n"
            self._announce()
        if not self._blocked() and self.session.buffer:
            out += self._lines(self.session).decode("ascii")
        return out.encode("ascii")

    def _announce(self) -> None:
        """The head segment starts: a move that starts from contact lifts the needles."""
        queue = self.planner.queue
        if queue and not queue[0].announced:
            head = queue[0]
            head.announced = True
            if self.in_contact and head.kind != "dwell" and head.length > 0:
                self.in_contact = False
                self._touch(head.start, False, head.t0)

    def _touching(self, pos) -> bool:
        return self.chuck is not None and pos[2] <= self.chuck.contact_z_mm + 1e-6

    def _touch(self, pos, down: bool, t: float) -> None:
        self.touches.append((pos[0], pos[1], down, t))
        if self.chuck is not None:
            self.chuck.touch(pos[0], pos[1], down)

    # --- lines -----------------------------------------------------------------------
    def _line(self, text: str) -> str:
        line = re.sub(r"\([^)]*\)|;.*$|\s", "", text).upper()
        if self.faults.error_code is not None:  # the fault schedule's refusal of every line
            return f"error:{self.faults.error_code}\r\n"
        if not line:
            return "ok\r\n"
        if line.startswith("$"):
            return self._system(line)
        if self.alarm:
            return "error:9\r\n"
        return self._gcode(line, jog=False)

    def _system(self, line: str) -> str:
        idle = not self.planner.busy and self.hold is None
        if line == "$":
            return HELP + "ok\r\n"
        if line == "$$":
            return "".join(f"${k}={_fmt(k, v)}\r\n" for k, v in self.settings.items()) + "ok\r\n"
        if line == "$I":
            return BUILD + "ok\r\n"
        if line == "$G":
            mode = f"G{self.motion} G54 G17 {'G20' if self.inches else 'G21'} " \
                   f"{'G90' if self.absolute else 'G91'} G94 M5 M9 T0 F{self.feed or 0:g} S0."
            return f"[GC:{mode}]\r\nok\r\n"
        if line == "$X":
            if self.alarm:
                self.alarm = False
                return "[MSG:Caution: Unlocked]\r\nok\r\n"
            return "ok\r\n"
        if line == "$H":
            return self._home()
        if line.startswith("$J="):
            if self.alarm:
                return "error:9\r\n"
            return self._gcode(line[3:], jog=True)
        match = _SET.fullmatch(line)
        if match:
            if not idle or self.alarm:
                return "error:8\r\n"
            key = int(match[1])
            if key not in self.settings:
                return "error:3\r\n"
            value = float(match[2])
            if key == 20 and value and not self.settings[22]:
                return "error:10\r\n"
            self.settings[key] = value
            return "ok\r\n"
        return "error:3\r\n"

    def _home(self) -> str:
        if not self.settings[22]:
            return "error:5\r\n"
        if self.planner.busy:
            return "error:8\r\n"
        now = self.clock()
        x, y, z = self.planner.position
        pull = -self.settings[27]
        seek = self.settings[25] / 60.0
        duration = abs(z - pull) / seek + max(abs(x - pull), abs(y - pull)) / seek
        home = Segment((x, y, z), (pull, pull, pull), seek, 1.0, kind="home",
                       dwell_s=duration)
        if self.in_contact:
            self.in_contact = False
            self._touch((x, y, z), False, now)
        home.announced = True
        self.planner.add(home, now)
        self.hold, self._waiting = None, home
        return ""

    def _gcode(self, line: str, jog: bool) -> str:
        words: dict[str, float] = {}
        codes: list[float] = []
        pos = 0
        for match in _WORD.finditer(line):
            if match.start() != pos:
                return "error:1\r\n" if not line[pos].isalpha() else "error:2\r\n"
            pos = match.end()
            letter, value = match[1], float(match[2])
            if letter in "GM":
                codes.append(value if letter == "G" else 1000 + value)
            elif letter in words:
                return "error:25\r\n"
            else:
                words[letter] = value
        if pos != len(line):
            return "error:1\r\n" if not line[pos].isalpha() else "error:2\r\n"
        motion = [c for c in codes if c in (0, 1)]
        if len(motion) > 1:
            return "error:21\r\n"
        unsupported = [c for c in codes if c not in G_CODES]
        if unsupported or set(words) - set("XYZFPN"):
            return "error:20\r\n" if unsupported else "error:36\r\n"
        if jog and (motion or 4 in codes):
            return "error:16\r\n"
        absolute, inches = self.absolute, self.inches
        for c in codes:
            if c in (90, 91):
                absolute = c == 90
            elif c in (20, 21):
                inches = c == 20
        if not jog:
            self.absolute, self.inches = absolute, inches
        scale = 25.4 if inches else 1.0
        feed = words["F"] * scale if "F" in words else (None if jog else self.feed)
        if not jog and "F" in words:
            self.feed = feed
        if 4 in codes:
            if "P" not in words:
                return "error:28\r\n"
            if words["P"] < 0:
                return "error:4\r\n"
            return self._dwell(words["P"])
        if "P" in words:
            return "error:36\r\n"
        axes = {k: words[k] * scale for k in "XYZ" if k in words}
        if motion and not jog:
            self.motion = int(motion[0])
        mode = 1 if jog else self.motion
        if 53 in codes and not jog and mode not in (0, 1):
            return "error:30\r\n"
        if not axes:
            return "error:26\r\n" if motion or jog else "ok\r\n"
        if mode == 1 and not feed:
            return "error:22\r\n"
        start = self.planner.ends_at() if not self._held else self._held[-1].end
        target = list(self._counted(start))  # as the controller counts
        for i, axis in enumerate("XYZ"):
            if axis in axes:
                target[i] = axes[axis] if (absolute or 53 in codes) else target[i] + axes[axis]
        if self.settings[20] and not self._within_travel(target):
            if jog:
                return "error:15\r\n"
            self.planner.flush(self.clock())
            self.critical, self.alarm = True, True
            return "ALARM:2\r\n[MSG:Reset to continue]\r\n"
        target = tuple(v + o for v, o in zip(target, self.offset, strict=True))  # the stage's
        self._queue_move(start, target, feed if mode == 1 else None, jog)
        return "ok\r\n"

    def _counted(self, pos) -> tuple[float, float, float]:
        """A position of the stage as the controller counts it (see `offset`)."""
        return tuple(v - o for v, o in zip(pos, self.offset, strict=True))

    def _within_travel(self, target) -> bool:
        return all(-self.settings[130 + i] - 1e-9 <= v <= 1e-9 for i, v in enumerate(target))

    def _queue_move(self, start, target, feed, jog: bool) -> None:
        delta = [b - a for a, b in zip(start, target, strict=True)]
        if not any(delta):
            return
        rates = [self.settings[110 + i] for i in range(3)]
        accels = [self.settings[120 + i] for i in range(3)]
        _, rate, accel = move_limits(delta, rates, accels, feed)
        segment = Segment(start, target, rate, accel, feed_mm_min=feed or rate * 60, jog=jog)
        if self.hold is not None:
            self._held.append(segment)
            return
        self.planner.add(segment, self.clock())
        self._announce()
        if self.schedule is not None and self._touching(target):
            queue = self.planner.queue
            t_end = queue[0].t0 + sum(q.duration_s for q in queue)
            self.schedule(t_end, lambda t, landing=segment: self._land(landing, t))

    def _land(self, segment: Segment, t: float) -> None:
        """A move to contact height ends (scheduled): the needles touch down, unless a
        hold or a reset took the move away meanwhile."""
        if segment in self.planner.queue and self.hold is None and not self.in_contact:
            self.in_contact = True
            self._touch(segment.end, True, t)

    def _dwell(self, seconds: float) -> str:
        if seconds == 0 and not self.planner.busy:
            return "ok\r\n"
        dwell = Segment(self.planner.ends_at(), self.planner.ends_at(), 1.0, 1.0,
                        kind="dwell", dwell_s=seconds)
        self.planner.add(dwell, self.clock())
        self._waiting = dwell
        return ""

    # --- checkpoints -----------------------------------------------------------------
    def snapshot(self) -> dict:
        """Where the stage ends up (moves queued are taken as done), its settings and the
        chuck's touchdown count (the seed of its next contact misses)."""
        return {"position": list(self.planner.ends_at()), "alarm": self.alarm,
                "offset": list(self.offset),
                "settings": {str(k): v for k, v in self.settings.items()},
                "touchdowns": self.chuck.touchdowns if self.chuck is not None else 0}

    def restore(self, state: dict) -> None:
        """Back at the checkpoint's position, out of contact as far as the chuck knows
        (every channel left open: a host that resumes lifts and touches down again)."""
        self.planner.queue.clear()
        self.planner.position = tuple(state["position"])
        self.alarm, self.critical, self.hold, self._waiting = state["alarm"], False, None, None
        self.offset = tuple(state.get("offset", (0.0, 0.0, 0.0)))
        self._held = []
        self.settings = {int(k): v for k, v in state["settings"].items()}
        self.in_contact = False
        if self.chuck is not None:
            self.chuck.touchdowns = state["touchdowns"]
            self.chuck.touch(*self.planner.position[:2], False)


def _fmt(key: int, value: float) -> str:
    """Integers for masks and booleans, three decimals for lengths and rates."""
    return f"{value:.3f}" if key in (11, 12, 24, 25, 27) or key >= 100 else f"{value:.0f}"
