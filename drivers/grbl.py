"""A prober's XYZ stage on a GRBL v1.1 motion controller: line-based G-code over serial.

Source: the GRBL v1.1 interface documents of gnea/grbl (doc/markdown/interface.md,
doc/markdown/commands.md, doc/csv/error_codes_en_US.csv, doc/csv/alarm_codes_en_US.csv).
What the driver relies on, as documented there:

- A line (a G-code block or a `$` command) ends with a return; Grbl answers `ok` once
  it has parsed it (a motion is then queued in the planner, not finished) or `error:N`
  (nothing of the line executed). Push messages may come before it: `ALARM:N`,
  feedback in brackets (`[MSG:…]`, `[VER:…]`), settings `$N=value` (after `$$`).
- Real-time commands are single bytes that never enter the line buffer and get no `ok`:
  `?` (status report `<State|MPos:x,y,z|FS:feed,speed|…>`, the first two fields always
  there), `!` feed hold, `~` resume, 0x18 soft reset (answered by the start-up banner
  `Grbl 1.1x ['$' for help]`).
- A G0/G1 target outside the machine travel with soft limits on (`$20=1`) throws
  `ALARM:2` followed by `[MSG:Reset to continue]`: Grbl then waits for a soft reset,
  after which it is in the Alarm state (G-code locked, `error:9`) until `$X` unlocks it
  (`[MSG:Caution: Unlocked]`, `ok`); the doc says the position is retained and the
  alarm may be safely unlocked. A jog (`$J=`) beyond travel is `error:15` instead.
- `$$` prints the settings ($110–$112 maximum rates, mm/min; $120–$122 accelerations,
  mm/s²; $130–$132 maximum travel, mm; $20 soft limits) then `ok`; `$I` prints
  `[VER:…]` and `[OPT:…]` then `ok`.

Unverified (not in those documents, taken as GRBL's source behaves by common account):
machine coordinates run from −max travel to 0 on every axis (homing to the positive
end, HOMING_FORCE_SET_ORIGIN off); `?` is not answered while Grbl waits for the reset
after a limit alarm.

The stage's frame. Moves are sent in machine coordinates (`G53`, so no work offset on
the controller can shift them). Station settings give `origin_mm` (the machine XY at
which cell (1, 1) of the sheet sits under site (1, 1) of the probe card), the card's
geometry (`card: {rows, cols, pitch_mm: [x, y]}`: site (i, j) touches the sheet
(j−1)·x, (i−1)·y mm from site (1, 1)), `contact_z_mm` and `clear_z_mm` (machine Z of
the needles on the pads and lifted clear of them) and `feed_mm_min` (the Z approach).
`move_to_mm(x, y)` puts the sheet point (x, y) — cell (r, c) is at ((c−1)·x, (r−1)·y) —
under site (1, 1), always with the needles lifted first.

Waiting. `move_to_mm` and `contact` send their moves and return the seconds they take
by GRBL's trapezoid (distance, rate, acceleration read from `$$`): a host on a simulated
clock waits that long on its own clock, then asks `moving()` (one status report) until
it says False. Moves queue behind one still running, as GRBL's planner takes them.
`wait_until_stopped(expected_s)` does that waiting with the driver's `sleep` and `clock`
(wall time unless a host replaces them), up to 1.5× the time + 2 s.

Link recovery (`Link.exchange`'s retry rule). Idempotent: `?`, `$$`, `$I`, `$X`, and
absolute moves (`G53` targets: sent twice they end where sent once). A soft reset is
sent only alone, by `_recover`, never retried blind: the link flushes and the next
status report says where things are. A host that rode out a lost link asks
`still_where_left()` before it moves on: a board reset meanwhile has lost its frame.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from lipon_hw.errors import FrameError, InputError, InstrumentError, NeedsPerson
from lipon_hw.interfaces import ProbeCard
from lipon_hw.links import Link

EOL = b"\n"
REPLY_END = b"\n"
STATUS = b"?"
FEED_HOLD = b"!"
CYCLE_START = b"~"
SOFT_RESET = b"\x18"

#: error:N meanings (doc/csv/error_codes_en_US.csv, GRBL v1.1), those a stage meets
ERROR_CODES = {
    1: "a G-code word has no letter", 2: "a number is malformed or missing",
    3: "an unknown $ command", 8: "$ commands only while Idle",
    9: "G-code is locked out during an alarm or jog", 11: "the line is too long",
    15: "the jog target exceeds machine travel", 16: "an invalid jog command",
    20: "an unsupported G-code", 22: "no feed rate set", 26: "no axis words",
    28: "a required P or L word is missing", 30: "G53 needs G0 or G1",
    33: "the motion target is invalid",
}
#: ALARM:N meanings (doc/csv/alarm_codes_en_US.csv)
ALARM_CODES = {
    1: "hard limit triggered, position likely lost",
    2: "soft limit: the target exceeds machine travel; position retained",
    3: "reset while in motion, position likely lost",
    4: "probe fail (initial state)", 5: "probe fail (no contact)",
    6: "homing fail (reset)", 7: "homing fail (door)", 8: "homing fail (pull-off)",
    9: "homing fail (switch not found)",
}
STATES = ("Idle", "Run", "Hold", "Jog", "Alarm", "Door", "Check", "Home", "Sleep")
#: settings the driver reads (`$$`): index → name
SETTINGS = {20: "soft_limits", 110: "x_rate_mm_min", 111: "y_rate_mm_min",
            112: "z_rate_mm_min", 120: "x_accel_mm_s2", 121: "y_accel_mm_s2",
            122: "z_accel_mm_s2", 130: "x_travel_mm", 131: "y_travel_mm", 132: "z_travel_mm"}
POSITION_TOLERANCE_MM = 0.0015  # reports carry three decimals

_NUM = r"[+-]?\d+(?:\.\d*)?"
_STATUS = re.compile(r"<([A-Za-z]+)(?::(\d))?\|(MPos|WPos):(" + _NUM + r"),(" + _NUM +
                     r"),(" + _NUM + r")((?:\|[^|<>]*)*)>")
_SETTING = re.compile(r"\$(\d+)=(" + _NUM + r")")
_VERSION = re.compile(r"\[VER:([^:\]]+)")


@dataclass(frozen=True)
class Status:
    state: str  # one of STATES
    substate: int | None
    mpos: tuple[float, float, float]
    fields: dict[str, str]


# --- codec (shared with the emulator) -------------------------------------------------
def format_status(state: str, mpos, feed: float, speed: float = 0.0,
                  substate: int | None = None) -> bytes:
    """`<Idle|MPos:0.000,0.000,0.000|FS:0,0>` + CR LF, as interface.md shows it."""
    head = state if substate is None else f"{state}:{substate}"
    x, y, z = mpos
    return (f"<{head}|MPos:{x:.3f},{y:.3f},{z:.3f}|FS:{feed:.0f},{speed:.0f}>\r\n"
            .encode("ascii"))


def parse_status(line: str) -> Status:
    """One status report (no CR LF) → Status; ValueError for anything else."""
    match = _STATUS.fullmatch(line)
    if not match or match[1] not in STATES:
        raise ValueError("not a <State|MPos:x,y,z|…> status report")
    if match[3] != "MPos":
        raise ValueError("it reports WPos; set $10=1 for machine positions")
    fields = {}
    for item in filter(None, match[7].split("|")):
        key, _, value = item.partition(":")
        fields[key] = value
    sub = int(match[2]) if match[2] is not None else None
    return Status(match[1], sub, (float(match[4]), float(match[5]), float(match[6])), fields)


def move_line(x: float | None = None, y: float | None = None, z: float | None = None,
              feed_mm_min: float | None = None) -> bytes:
    """A machine-coordinate move: `G53 G0 X.. Y..` (rapid) or `G53 G1 Z.. F..` (feed)."""
    words = [f"{axis}{value:.3f}" for axis, value in (("X", x), ("Y", y), ("Z", z))
             if value is not None]
    motion = "G0" if feed_mm_min is None else "G1"
    feed = [] if feed_mm_min is None else [f"F{feed_mm_min:.0f}"]
    return " ".join(["G53", motion, *words, *feed]).encode("ascii") + EOL


def trapezoid_s(distance_mm: float, rate_mm_s: float, accel_mm_s2: float) -> float:
    """The time of one move that starts and ends at rest: accelerate at `accel` to
    `rate`, cruise, decelerate (a triangle when the move is too short to cruise)."""
    if distance_mm <= 0:
        return 0.0
    if distance_mm >= rate_mm_s ** 2 / accel_mm_s2:
        return distance_mm / rate_mm_s + rate_mm_s / accel_mm_s2
    return 2.0 * math.sqrt(distance_mm / accel_mm_s2)


def move_limits(delta, rates_mm_min, accels_mm_s2, feed_mm_min: float | None):
    """Rate (mm/s) and acceleration (mm/s²) along a straight move: each axis's limit
    divided by its share of the unit vector, the smallest of them (GRBL's planner),
    and the programmed feed for a G1."""
    length = math.sqrt(sum(d * d for d in delta))
    rate, accel = math.inf, math.inf
    for d, r, a in zip(delta, rates_mm_min, accels_mm_s2, strict=True):
        if d:
            share = abs(d) / length
            rate, accel = min(rate, r / 60.0 / share), min(accel, a / share)
    if feed_mm_min is not None:
        rate = min(rate, feed_mm_min / 60.0)
    return length, rate, accel


# --- driver ---------------------------------------------------------------------------
class GrblStage:
    """The XYZ stage that carries a sheet under a prober's probe card."""

    SERIAL_DEFAULTS = {"baudrate": 115200, "bytesize": 8, "parity": "N", "stopbits": 1}
    POLL_S = 0.05

    def __init__(self, name: str, link: Link, card: dict | None = None,
                 origin_mm: tuple = (0.0, 0.0), contact_z_mm: float = -5.0,
                 clear_z_mm: float = -2.0, feed_mm_min: float = 300.0):
        self.name = name
        self.link = link
        self.card = _card(name, card or {"rows": 1, "cols": 1, "pitch_mm": [1.0, 1.0]})
        origin = tuple(float(v) for v in origin_mm)
        if len(origin) != 2:
            raise InputError(f"{name}: origin_mm must be [x, y] in machine millimetres")
        self.origin_mm = origin
        self.contact_z_mm, self.clear_z_mm = float(contact_z_mm), float(clear_z_mm)
        if not self.contact_z_mm < self.clear_z_mm:
            raise InputError(f"{name}: contact_z_mm ({contact_z_mm}) must lie below "
                             f"clear_z_mm ({clear_z_mm}): Z down is contact")
        if not 0 < float(feed_mm_min) <= 100_000:
            raise InputError(f"{name}: feed_mm_min must be within 0-100000 mm/min")
        self.feed_mm_min = float(feed_mm_min)
        #: how this driver waits: wall time unless a host on another clock replaces them
        self.clock, self.sleep = time.monotonic, time.sleep
        self._settings: dict[str, float] | None = None
        self._target: tuple[float, float, float] | None = None
        self._last_mpos: tuple[float, float, float] | None = None
        #: why the controller's position can no longer be trusted (a reset while the
        #: link was lost), once seen; only homing, a person's act, would mend it
        self._position_lost: str | None = None

    # --- capability ---------------------------------------------------------------
    def identify(self) -> str:
        lines = self._command(b"$I")
        version = next((m[1] for m in map(_VERSION.match, lines) if m), None)
        if version is None:
            raise InstrumentError(f"{self.name} answered $I without a [VER:…] line: {lines}")
        return f"GRBL {version} motion controller (prober stage)"

    def position_mm(self) -> tuple[float, float, float]:
        """(x, y) of the sheet point under site (1, 1), and the machine Z."""
        x, y, z = self.status().mpos
        return (round(x - self.origin_mm[0], 3), round(y - self.origin_mm[1], 3), z)

    def move_to_mm(self, x_mm: float, y_mm: float) -> float:
        """Lift the needles if they are below clear height, then a rapid to the sheet
        point (x, y) under site (1, 1); the seconds the moves take."""
        mx, my = x_mm + self.origin_mm[0], y_mm + self.origin_mm[1]
        here = self._ready()
        plan = []
        if here[2] < self.clear_z_mm - POSITION_TOLERANCE_MM:
            plan.append(((here[0], here[1], self.clear_z_mm), self.feed_mm_min))
        plan.append(((mx, my, max(here[2], self.clear_z_mm)), None))
        return self._send_moves(here, plan)

    def contact(self, down: bool) -> float:
        """Z to contact height (down) or clear height (up) at `feed_mm_min`; the seconds
        the move takes (the contact is made, or broken, when it ends)."""
        here = self._ready()
        z = self.contact_z_mm if down else self.clear_z_mm
        return self._send_moves(here, [((here[0], here[1], z), self.feed_mm_min)])

    def moving(self) -> bool:
        """One status report: True while the stage moves, False once it rests at its last
        target; InstrumentError for an alarm, a hold or a stop short of the target."""
        status = self.status()
        if status.state in ("Run", "Jog", "Home"):
            return True
        if status.state != "Idle":
            raise InstrumentError(f"{self.name} stopped in state {status.state} at machine "
                                  f"{_xyz(status.mpos)} before reaching its target")
        if self._target is not None and any(
                abs(a - b) > POSITION_TOLERANCE_MM for a, b in zip(status.mpos, self._target,
                                                                   strict=True)):
            raise InstrumentError(f"{self.name} is Idle at machine {_xyz(status.mpos)}, not at "
                                  f"its target {_xyz(self._target)}")
        return False

    def still_where_left(self) -> None:
        """After the link was lost and came back: one status report, which must not be an
        alarm and must not put the stage at rest away from both the last target sent and
        the position last reported (a move lost with the link never started); else
        InstrumentError. A reconnect resets an Arduino-based board (the port's DTR): it
        then starts in Alarm (homing enabled) or Idle at a position that is not this one.
        Unverified on hardware: which of the two a given board does."""
        known = self._known()
        lost = self._judge(self.status(), known)
        if lost is not None:
            raise InstrumentError(f"{lost}; home it, then resume the run")

    def _known(self) -> list[tuple[float, float, float]]:
        """Where the driver left the stage: the last target sent, the position last
        reported (read before the next status report replaces it)."""
        return [p for p in (self._target, self._last_mpos) if p is not None]

    def _judge(self, status: Status, known: list) -> str | None:
        """Why the controller's position is not to be trusted, if it is not: in Alarm (the
        driver unlocks its own resets at once, so an Alarm it finds is a power-up with
        homing on, a limit, or a reset it did not make: GRBL's position is then lost), or
        at rest away from everywhere the driver left it (a board reset without homing).
        Remembered: once lost, the needles may be anywhere until a person homes the stage.
        A driver that has not moved the stage yet (a resumed run's, the guard's) knows no
        position to compare: an Alarm is enough."""
        if self._position_lost is not None:
            return self._position_lost
        away = status.state == "Idle" and known and not any(
            all(abs(a - b) <= POSITION_TOLERANCE_MM for a, b in zip(status.mpos, p, strict=True))
            for p in known)
        if status.state == "Alarm" or away:
            left = f"not where it was left ({_xyz(known[0])})" if known else \
                "in a state GRBL enters after a reset or a limit"
            self._position_lost = (
                f"{self.name} reports {status.state} at machine {_xyz(status.mpos)}, {left}: "
                "its controller was reset, and its position is not known")
        return self._position_lost

    def wait_until_stopped(self, expected_s: float) -> None:
        """Sleep the expected time, then poll `moving()` (every `POLL_S`) until it rests;
        InstrumentError after 1.5× the time + 2 s."""
        deadline = self.clock() + 1.5 * expected_s + 2.0
        if expected_s > 0:
            self.sleep(expected_s)
        while self.moving():
            if self.clock() > deadline:
                raise InstrumentError(
                    f"{self.name} did not reach {_xyz(self._target)} within "
                    f"{1.5 * expected_s + 2.0:.1f} s (it is at {_xyz(self._last_mpos)})")
            self.sleep(self.POLL_S)

    def make_safe(self) -> None:
        """Needles up: the cells disconnected from the probes. A stage in motion is
        reset at once (GRBL: ALARM:3, unlocked at once: the driver's own reset) and Z sent
        to clear height; the lift is commanded, not waited for. A controller whose
        position is lost (found in Alarm, or at rest away from where the driver left it:
        see `_judge`) is neither unlocked nor moved: its coordinates no longer say where
        the needles are, so a lift to clear height may not lift them; NeedsPerson says so
        (homing, Z first on GRBL's default build, is a person's act)."""
        known = self._known()
        status = self.status()
        lost = self._judge(status, known)
        if lost is not None:
            raise NeedsPerson(f"{lost}, so the needles may still be down: home it ($H) "
                              "before anything moves under them")
        if status.state in ("Run", "Jog", "Hold", "Home"):
            self._recover()
        self._target = None
        here = self.status().mpos
        if here[2] < self.clear_z_mm - POSITION_TOLERANCE_MM:
            self._send_moves(here, [((here[0], here[1], self.clear_z_mm), self.feed_mm_min)])

    # --- protocol -----------------------------------------------------------------
    def status(self) -> Status:
        status = self.link.exchange(self._status_exchange)
        self._last_mpos = status.mpos
        return status

    def controller_settings(self) -> dict[str, float]:
        """The `$$` values the driver plans with (read once)."""
        if self._settings is None:
            found = {}
            for line in self._command(b"$$"):
                match = _SETTING.fullmatch(line)
                if match and int(match[1]) in SETTINGS:
                    found[SETTINGS[int(match[1])]] = float(match[2])
            missing = [SETTINGS[k] for k in SETTINGS if SETTINGS[k] not in found]
            if missing:
                raise InstrumentError(f"{self.name} listed no {', '.join(missing)} in $$")
            self._settings = found
        return self._settings

    def _ready(self) -> tuple[float, float, float]:
        """Where the next move starts: the position at rest, or the last target while
        moving (GRBL queues the move behind it). An alarm is refused (its cause needs a
        person), and so is a hold."""
        status = self.status()
        if status.state == "Alarm":
            raise InstrumentError(f"{self.name} is in alarm (G-code locked): home it ($H) "
                                  "or, if its position is known, unlock it ($X)")
        if status.state == "Run" and self._target is not None:
            self.controller_settings()
            return self._target
        if status.state != "Idle":
            raise InstrumentError(f"{self.name} is {status.state}: a move is sent at rest "
                                  "or behind the driver's own moves")
        self.controller_settings()
        return status.mpos

    def _send_moves(self, here, plan) -> float:
        cfg = self.controller_settings()
        rates = (cfg["x_rate_mm_min"], cfg["y_rate_mm_min"], cfg["z_rate_mm_min"])
        accels = (cfg["x_accel_mm_s2"], cfg["y_accel_mm_s2"], cfg["z_accel_mm_s2"])
        total, start = 0.0, here
        for target, feed in plan:
            target = tuple(round(v, 3) for v in target)
            delta = [b - a for a, b in zip(start, target, strict=True)]
            if any(abs(d) > POSITION_TOLERANCE_MM for d in delta):
                self._move(target, feed)
                length, rate, accel = move_limits(delta, rates, accels, feed)
                total += trapezoid_s(length, rate, accel)
            start = target
        self._target = start
        return total

    def _move(self, target, feed) -> None:
        line = move_line(*target, feed_mm_min=feed)
        lines = self.link.exchange(lambda link: self._line_exchange(link, line))
        alarm = next((s for s in lines if s.startswith("ALARM:")), None)
        if alarm is not None:
            code = int(alarm.partition(":")[2] or 0)
            self._recover()
            raise InstrumentError(
                f"{self.name} refused the move to machine {_xyz(target)} with {alarm} "
                f"({ALARM_CODES.get(code, 'unlisted alarm')}); it was reset and unlocked, "
                f"and stands at {_xyz(self.status().mpos)}")

    def _recover(self) -> None:
        """Soft reset (flushes the planner; the banner answers), then unlock."""
        def reset(link: Link) -> None:
            link.write(SOFT_RESET)
            while not link.read_until(REPLY_END).startswith(b"Grbl "):
                pass
        self.link.exchange(reset)
        self._unlock()

    def _unlock(self) -> None:
        self._command(b"$X")

    def _command(self, command: bytes) -> list[str]:
        """A `$` command: the lines before its `ok`; InstrumentError for `error:N`."""
        lines = self.link.exchange(lambda link: self._line_exchange(link, command + EOL))
        return lines

    def _line_exchange(self, link: Link, line: bytes) -> list[str]:
        """Send one line; the push lines before its `ok`. An `ALARM:` (and the message
        after it) ends the reply: Grbl answers nothing more until reset."""
        link.write(line)
        got: list[str] = []
        while True:
            raw = link.read_until(REPLY_END)
            text = raw.decode("ascii", errors="replace").strip()
            if text == "ok":
                return got
            if text.startswith("error:"):
                code = text[6:]
                meaning = ERROR_CODES.get(int(code), "unlisted code") if code.isdigit() \
                    else "malformed code"
                raise InstrumentError(f"{self.name} refused {line.strip().decode()!r} with "
                                      f"{text} ({meaning})")
            if text.startswith("ALARM:"):
                got.append(text)
                if link.read_until(REPLY_END).strip() != b"[MSG:Reset to continue]":
                    raise FrameError(f"{self.name} sent {text} without [MSG:Reset to "
                                     "continue]")
                return got
            if text and text[0] not in "[$>" and not text.startswith("Grbl "):
                raise FrameError(f"{self.name} answered {line.strip()!r} with {raw!r}, which "
                                 "is not a GRBL reply")
            got.append(text)

    def _status_exchange(self, link: Link) -> Status:
        link.write(STATUS)
        raw = link.read_until(REPLY_END)
        try:
            return parse_status(raw.decode("ascii", errors="replace").strip())
        except ValueError as exc:
            raise FrameError(f"{self.name} answered ? with {raw!r} ({exc})") from None


def _xyz(p) -> str:
    return "(unknown)" if p is None else "({:.3f}, {:.3f}, {:.3f}) mm".format(*p)


def _card(name: str, card) -> ProbeCard:
    if not isinstance(card, dict):
        raise InputError(f"{name}: card must be {{rows, cols, pitch_mm: [x, y]}}")
    unknown = set(card) - {"rows", "cols", "pitch_mm", "channels"}
    if unknown:
        raise InputError(f"{name}: card has unknown keys {sorted(unknown)} (it takes rows, "
                         "cols, pitch_mm, channels)")
    try:
        pitch = tuple(float(v) for v in card.get("pitch_mm", ()))
        rows, cols = int(card["rows"]), int(card["cols"])
        channels = tuple(int(c) for c in card.get("channels",
                                                   range(1, rows * cols + 1)))
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{name}: card needs whole rows and cols and pitch_mm: [x, y] in "
                         "millimetres") from None
    if rows < 1 or cols < 1 or len(pitch) != 2 or min(pitch) <= 0:
        raise InputError(f"{name}: card needs rows, cols ≥ 1 and two positive pitches")
    if len(channels) != rows * cols or len(set(channels)) != len(channels) or \
            min(channels) < 1:
        raise InputError(f"{name}: card channels must name {rows * cols} distinct "
                         "potentiostat channels (from 1), one per site")
    return ProbeCard(rows, cols, pitch, channels)
