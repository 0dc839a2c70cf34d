"""The motion of the emulated GRBL stage: straight moves with a trapezoid speed profile,
run one after another on the lab clock.

A segment goes from `start` to `end` (machine mm) entering at speed `v0` (0 from rest,
the speed at a feed hold for a deceleration) and ending at rest: it accelerates at
`accel` to `rate` (or a lower peak when too short to reach it), cruises, and decelerates
at `accel`. Rate and acceleration along the move are the axes' limits divided by their
share of the direction, the smallest of them (`lipon_hw.drivers.grbl.move_limits`).

Assumption (a simplification of GRBL's planner): every block ends at rest (exact stop);
GRBL blends consecutive blocks at junctions by `$11` junction deviation, which would make
a chain of moves a little faster. A prober's point-to-point steps stop anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Vec = tuple[float, float, float]


@dataclass
class Segment:
    start: Vec
    end: Vec
    rate: float  # mm/s, the cruise limit
    accel: float  # mm/s²
    kind: str = "move"  # "move", "dwell" (stands still for `dwell_s`) or "home"
    v0: float = 0.0  # mm/s on entry
    dwell_s: float = 0.0
    t0: float | None = None  # when it started (None: queued)
    feed_mm_min: float = 0.0  # the programmed feed (reported while it runs)
    announced: bool = False  # its start has been acted on (contact left)
    jog: bool = False  # a `$J=` jog (reported as Jog)

    @property
    def length(self) -> float:
        return math.dist(self.start, self.end)

    def _profile(self) -> tuple[float, float, float, float]:
        """(peak speed, acceleration, cruise, deceleration times)."""
        length, a, v0 = self.length, self.accel, self.v0
        vp = min(self.rate, math.sqrt(a * length + v0 * v0 / 2.0)) if length else v0
        vp = max(vp, v0)
        d_acc = (vp * vp - v0 * v0) / (2 * a)
        d_dec = vp * vp / (2 * a)
        cruise = max(0.0, length - d_acc - d_dec) / vp if vp > 0 else 0.0
        return vp, (vp - v0) / a, cruise, vp / a

    @property
    def duration_s(self) -> float:
        if self.kind != "move":
            return self.dwell_s
        if self.length == 0:
            return 0.0
        _, t_acc, t_cruise, t_dec = self._profile()
        return t_acc + t_cruise + t_dec

    def at(self, t: float) -> tuple[Vec, float]:
        """Position and speed (mm/s) at time t after the segment started."""
        if self.kind != "move" or self.length == 0:
            return (self.end if t >= self.duration_s else self.start), 0.0
        vp, t_acc, t_cruise, t_dec = self._profile()
        a, v0 = self.accel, self.v0
        if t <= 0:
            s, v = 0.0, v0
        elif t < t_acc:
            s, v = v0 * t + a * t * t / 2, v0 + a * t
        elif t < t_acc + t_cruise:
            s, v = (vp * vp - v0 * v0) / (2 * a) + vp * (t - t_acc), vp
        elif t < t_acc + t_cruise + t_dec:
            u = t_acc + t_cruise + t_dec - t
            s, v = self.length - a * u * u / 2, a * u
        else:
            return self.end, 0.0
        f = min(1.0, s / self.length)
        pos = tuple(p + (q - p) * f for p, q in zip(self.start, self.end, strict=True))
        return pos, v

    def stop_from(self, t: float) -> tuple[Segment, Segment]:
        """A feed hold at t: the deceleration to rest along the path, and what is left
        of this move from there (started from rest on resume)."""
        pos, v = self.at(t)
        length = self.length
        stop = v * v / (2 * self.accel)
        done = math.dist(self.start, pos) + stop
        f = min(1.0, done / length) if length else 1.0
        halt = tuple(p + (q - p) * f for p, q in zip(self.start, self.end, strict=True))
        decel = Segment(pos, halt, max(v, 1e-9), self.accel, v0=v,
                        feed_mm_min=self.feed_mm_min, jog=self.jog)
        rest = Segment(halt, self.end, self.rate, self.accel, feed_mm_min=self.feed_mm_min,
                       jog=self.jog)
        return decel, rest


class Planner:
    """Segments run back to back from the time they are queued on an idle machine."""

    def __init__(self, position: Vec):
        self.position = position
        self.queue: list[Segment] = []

    @property
    def busy(self) -> bool:
        return bool(self.queue)

    def add(self, segment: Segment, now: float) -> None:
        if not self.queue:
            segment.t0 = now
        self.queue.append(segment)

    def ends_at(self) -> Vec:
        return self.queue[-1].end if self.queue else self.position

    def advance(self, now: float):
        """Finish every segment that has ended by `now`, yielding (segment, end time); the
        next one starts when the previous one ends."""
        while self.queue:
            head = self.queue[0]
            end_t = head.t0 + head.duration_s
            if end_t > now:
                return
            self.queue.pop(0)
            self.position = head.end
            if self.queue:
                self.queue[0].t0 = end_t
            yield head, end_t

    def now_at(self, now: float) -> tuple[Vec, float]:
        """Position and speed at `now` (after `advance`)."""
        if not self.queue:
            return self.position, 0.0
        head = self.queue[0]
        return head.at(now - head.t0)

    def flush(self, now: float) -> Vec:
        """Stop dead where the machine is (a reset): the queue is dropped."""
        self.position = self.now_at(now)[0]
        self.queue.clear()
        return self.position
