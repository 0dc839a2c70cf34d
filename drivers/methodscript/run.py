"""A technique running on one MethodSCRIPT channel (`Run`): its output lines turned into
samples as they arrive, what the wire lost told as gaps, and why the script ended.

A stretch of data lines in a poll's bytes (`take`) is decoded at once into columns
(`samples.columns_from_block`) when every line is a plain one of one layout, the same
values, gaps and end as line by line; `poll_block` hands them over as a `SampleBlock`.

A `Sequence` runs its phases in one script, each phase's measurement loops one after the
other (`scripts.loop_counts`): a loop's start (its `M` marker, or, were that lost on the
wire, the first data line after the previous loop's `*`) tells where the next phase
begins; `poll_phases` hands each phase's samples over apart, `phase_end` says why a phase
ended (its last sample against its own limits, as `end_reason` does for the last).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from lipon_hw.column_rows import listed
from lipon_hw.drivers.methodscript.codec import DeviceError, decode_error, is_marker
from lipon_hw.drivers.methodscript.samples import (
    MANY_LINES,
    columns_from_block,
    sample_from_line,
)
from lipon_hw.drivers.methodscript.scripts import loop_counts
from lipon_hw.readings import Sample, SampleBlock
from lipon_hw.techniques import (
    EIS,
    MultisineEIS,
    Sequence,
    Technique,
    end_limits,
    recording_of,
)

#: where a stretch of data lines ends: a line after it that is not one
_DATA_ENDS = re.compile(rb"\n[^P]")

if TYPE_CHECKING:
    from lipon_hw.drivers.methodscript.driver import MethodScriptPotentiostat


class Run:
    """One technique running on one channel: its samples as they arrive.

    Iterating yields the samples received so far and stops; `finished` says whether
    the script has ended (normally, by `stop()`, or with an instrument error).

    No sample is lost silently. MethodSCRIPT cannot send a data line again, so what the
    wire lost is found and told in `gaps` (take them with `take_gaps()`), each
    `(from_s, to_s, why)` in the script's time, `to_s` None when the stretch runs to the
    script's end: data lines that arrived corrupted (kept in `corrupt_lines`), a stretch
    longer than the record rule allows between two samples (output the instrument sent
    while the line was silent: the rule sends one at least every `dt_s`), and the end of
    a script that went unseen (`stop()` finds nothing running).
    """

    #: the instrument measures, checks limits and buffers on its own: poll when convenient
    poll_interval_s: float | None = None

    def __init__(self, pstat: MethodScriptPotentiostat, channel: int, technique: Technique):
        self.channel = channel
        self.technique = technique
        self.finished = False
        #: the script ended while its end went unseen (`_end_unseen`): what it sent last
        #: is lost, and a Sequence is taken to have run its phases to the last
        self.end_lost = False
        self.aborted = False
        self.error: DeviceError | None = None
        self.last: Sample | None = None
        self.corrupt_lines: list[str] = []
        self.gaps: list[tuple[float, float | None, str]] = []
        self._garbled = 0  # corrupt lines since the last good sample
        self._max_spacing_s = _max_spacing_s(technique)
        self._open_loops = 0
        self._pending: list[Sample | SampleBlock] = []  # in order
        self._pstat = pstat
        #: the techniques the script runs one after the other (a Sequence's phases)
        self.phases: tuple = technique.phases if isinstance(technique, Sequence) else (
            technique,)
        self.phase = 0  # the phase whose loop runs (or ran last)
        self._phase_last: list[Sample | None] = [None] * len(self.phases)
        self._pending_phase: list[int] = []  # each pending chunk's phase
        self._loops_before = _loops_before(technique)  # loops of the phases before each
        self._loops_started = 0
        self._in_loop = False

    def poll(self) -> list[Sample]:
        """Read what the instrument has sent; return the samples not yet returned."""
        if not self.finished:
            self._pstat._poll(self.channel)
        out = []
        for chunk in self._pending:
            if isinstance(chunk, SampleBlock):
                out += chunk.samples()
            else:
                out.append(chunk)
        self._pending.clear()
        return out

    def poll_block(self) -> SampleBlock | list[Sample]:
        """As `poll`, in one SampleBlock when every sample that came has the same fields;
        else as a list of Samples."""
        if not self.finished:
            self._pstat._poll(self.channel)
        pending, self._pending = self._pending, []
        self._pending_phase.clear()
        return _joined(pending)

    def poll_phases(self) -> list[tuple[int, SampleBlock | list[Sample]]]:
        """As `poll_block`, each phase's samples apart: (phase, samples) pairs in order,
        phases counted from 0 (a technique of its own has phase 0 only), the phase
        running now last (with no samples if none of it came yet)."""
        if not self.finished:
            self._pstat._poll(self.channel)
        pending, self._pending = self._pending, []
        phases, self._pending_phase = self._pending_phase, []
        out, start = [], 0
        for k in range(1, len(pending) + 1):
            if k == len(pending) or phases[k] != phases[start]:
                out.append((phases[start], _joined(pending[start:k])))
                start = k
        if not out or out[-1][0] < self.phase:
            out.append((self.phase, []))
        return out

    def phase_end(self, phase: int) -> str:
        """Why a phase before the running one ended: the limit its last sample reached
        ('v_max', 'v_min', 'i_min'), or 'done' (its time ran out, or it sent nothing)."""
        last = self._phase_last[phase]
        if last is None:
            return "done"
        return end_limits(self.phases[phase]).reached(last) or "done"

    def __iter__(self):
        return iter(self.poll())

    def take_gaps(self) -> list[tuple[float, float | None, str]]:
        """The stretches of output lost on the wire found since the last call."""
        gaps, self.gaps = self.gaps, []
        return gaps

    def _sample(self, sample: Sample) -> None:
        last_t = self.last.t_s if self.last is not None and self.last.t_s is not None else 0.0
        t = sample.t_s
        if t is not None and sample.f_Hz is None:
            if self._garbled:
                self.gaps.append((last_t, t, f"{self._garbled} output line"
                                  f"{'s' * (self._garbled > 1)} garbled on the wire"))
            elif self._max_spacing_s is not None and t - last_t > self._max_spacing_s:
                self._spacing_gap(last_t, t)
        self._garbled = 0
        self.last = self._phase_last[self.phase] = sample
        self._pending.append(sample)
        self._pending_phase.append(self.phase)

    def take(self, data: bytes) -> int:
        """Output lines of this run's script given as one bytes object (each line with its
        LF, as `Link.read_block` gives them), in order, up to the script's end
        (`finished`; a data line never ends it); returns how many bytes it took. Each
        stretch of data lines of one layout (many of one length: as a matrix) is decoded
        at once from the bytes, without a bytes object a line; the lines around them (a
        loop's start and end markers, the script's end: a poll after a step has ended
        brings them all), and a stretch that is not all of one layout, one by one."""
        pos, size = 0, len(data)
        while pos < size and not self.finished:
            if data[pos:pos + 1] != b"P":
                end = data.index(b"\n", pos) + 1
                self._line(data[pos:end - 1].decode("ascii", "replace"))
                pos = end
                continue
            self._data()
            cut = _DATA_ENDS.search(data, pos)  # a data line never ends the script
            end = size if cut is None else cut.start() + 1
            count = data.count(b"\n", pos, end)
            columns = columns_from_block(data[pos:end], count) if count >= MANY_LINES else None
            if columns is not None:
                self._columns(columns)
            else:  # few, or not all of one layout: line by line
                for line in data[pos:end - 1].split(b"\n"):
                    self._line(line.decode("ascii", "replace"))
            pos = end
        return pos

    def _columns(self, columns: dict[str, list]) -> None:
        """Decoded data lines, as `_sample` takes them one by one."""
        block = SampleBlock(**columns)
        t = block.t_s
        if t is not None and block.f_Hz is None:
            last = self.last
            last_t = last.t_s if last is not None and last.t_s is not None else 0.0
            spacing = self._max_spacing_s
            if self._garbled:
                self.gaps.append((last_t, float(t[0]), f"{self._garbled} output line"
                                  f"{'s' * (self._garbled > 1)} garbled on the wire"))
                spacing_from = 1
            else:
                spacing_from = 0
            if spacing is not None:
                times = np.asarray(t, dtype=float)
                widest = float((times[1:] - times[:-1]).max()) if len(times) > 1 else 0.0
                if spacing_from == 0:  # from the sample before the block too
                    widest = max(widest, float(times[0]) - last_t)
                if widest > spacing:
                    before = [last_t, *listed(t)[:-1]]
                    for k in range(spacing_from, len(t)):  # rare: told one by one
                        if t[k] - before[k] > spacing:
                            self._spacing_gap(before[k], float(t[k]))
        self._garbled = 0
        self.last = self._phase_last[self.phase] = block.sample(len(block) - 1)
        self._pending.append(block)
        self._pending_phase.append(self.phase)

    def _data(self) -> None:
        """A data line comes: outside a loop, a loop has started whose marker was lost."""
        if not self._in_loop:
            self._loop_started()

    def _loop_started(self) -> None:
        """A measurement loop starts: the phase it belongs to runs from now on."""
        self._in_loop = True
        self._loops_started += 1
        while (self.phase + 1 < len(self.phases)
               and self._loops_started > self._loops_before[self.phase + 1]):
            self.phase += 1

    def _spacing_gap(self, last_t: float, t: float) -> None:
        self.gaps.append((last_t, t, f"no sample for {t - last_t:.0f} s where the record "
                          "rule sends one at least every "
                          f"{self._max_spacing_s:g} s (output lost on the wire)"))

    def _corrupt(self, line: str) -> None:
        self.corrupt_lines.append(line)
        self._garbled += 1

    def _end_unseen(self) -> None:
        """The script ended while its end went unseen: what it sent last was lost."""
        last_t = self.last.t_s if self.last is not None and self.last.t_s is not None else 0.0
        garbled = (f" ({self._garbled} line{'s' * (self._garbled > 1)} of it garbled)"
                   if self._garbled else "")
        self.gaps.append((last_t, None, f"the script's last output{garbled} and its end were "
                          "lost on the wire"))
        self._garbled = 0
        self.finished = self.end_lost = True  # on its own: why is judged from the last
        # sample seen; a Sequence's script ended after its last phase (or a window's
        # abort, which the lost output would have told)
        self.phase = len(self.phases) - 1

    @property
    def judges_window(self) -> bool:
        """Whether the instrument stops the technique at its safety window (`Window`): the
        script tests it at every measurement and aborts, sending that sample (E where a
        current is applied, I where a voltage is). A Sequence's: every phase that drives
        the cell has its window (a rest at open circuit drives nothing)."""
        if len(self.phases) == 1:
            return getattr(self.technique, "window", None) is not None
        driven = [phase for phase in self.phases if "window" in phase.__dataclass_fields__]
        return bool(driven) and all(phase.window is not None for phase in driven)

    @property
    def end_reason(self) -> str | None:
        """Why the script ended: 'aborted', 'error', 'window' (the last sample is at or
        past the technique's safety window, where the script aborts: `Window.reached`),
        the limit the last sample is past ('v_max', 'v_min', 'i_min'), or 'done' (its
        time or sweep ran out); None while it runs. A Sequence's: its last phase's (the
        one that ran last, where a safety window aborted it)."""
        if not self.finished:
            return None
        if self.aborted or self.error:
            return "aborted" if self.aborted else "error"
        last = self._phase_last[self.phase]
        if last is None:
            return "done"
        window = getattr(self.phases[self.phase], "window", None)
        if window is not None and window.reached(last) is not None:
            return "window"
        return self.phase_end(self.phase)

    def _line(self, line: str) -> None:
        """One output line of this run's script."""
        if line.startswith("P"):
            self._data()
            try:
                sample = sample_from_line(line)
            except (ValueError, TypeError):
                self._corrupt(line)
                return
            self._sample(sample)
        elif line == "" and self._open_loops == 0:  # else an LF was garbled into the data
            self.finished = True
            if self._garbled:
                self._end_unseen_after_garble()
        elif line in ("*", "+") or line[:1] in ("M", "L") and is_marker(line):
            # a loop's start marker lost with an upload's answer must not keep the run open
            self._open_loops = max(0, self._open_loops + (1 if line[:1] in ("M", "L") else -1))
            if line[:1] == "M":
                self._loop_started()
            elif line == "*":
                self._in_loop = False
        elif line == "Z":
            self.aborted = True
        elif (error := decode_error(line)) is not None:
            self.error, self.finished = error, True
            if self._garbled:
                self._end_unseen_after_garble()
        elif not (is_marker(line) or line.startswith("T") or line == "e"):
            self._corrupt(line)

    def _end_unseen_after_garble(self) -> None:
        last_t = self.last.t_s if self.last is not None and self.last.t_s is not None else 0.0
        self.gaps.append((last_t, None, f"{self._garbled} output line"
                          f"{'s' * (self._garbled > 1)} garbled on the wire before the "
                          "script's end"))
        self._garbled = 0


def _joined(chunks: list) -> SampleBlock | list[Sample]:
    """Samples and SampleBlocks in one SampleBlock where they have the same fields, else
    as a list of Samples."""
    if len(chunks) == 1 and isinstance(chunks[0], SampleBlock):
        return chunks[0]
    block = SampleBlock.join(chunks)
    if block is not None:
        return block
    return [s for chunk in chunks for s in (
        chunk.samples() if isinstance(chunk, SampleBlock) else (chunk,))]


def _loops_before(technique: Technique) -> list[int]:
    """For each phase, how many measurement loops the phases before it run."""
    if not isinstance(technique, Sequence):
        return [0]
    before, total = [], 0
    for loops in loop_counts(technique):
        before.append(total)
        total += loops
    return before


def _max_spacing_s(technique: Technique) -> float | None:
    """The longest stretch between two samples the technique's record rule allows (a
    sample on the first measurement at or past `dt_s` after the last one, so less than
    `dt_s` + one interval), with one interval to spare; None when only ΔV or ΔI rules
    send samples (no bound) or the technique has no measurement interval."""
    if isinstance(technique, Sequence):  # the loosest phase's
        spacings = [_max_spacing_s(phase) for phase in technique.phases]
        return None if None in spacings else max(spacings)
    interval = getattr(technique, "interval_s", None)
    if interval is None or isinstance(technique, EIS | MultisineEIS):
        return None
    rule = recording_of(technique)
    if rule.every_point:
        return 2 * interval + 1e-6
    return None if rule.dt_s is None else rule.dt_s + 2 * interval + 1e-6
