"""The MethodSCRIPT potentiostat driver: uploads a technique's script to a channel and
turns its output lines into a Run's samples; online commands (`t`, `Z`) and the
zero-time scripts that switch a cell on or off.

Link recovery (`Link.exchange`'s retry rule). Not idempotent, read back before resending:
the upload of a technique's script (`e`, lines, empty line): sent twice it runs twice (or
is refused `e!0006` while the first runs). After a failed attempt the driver asks whether
a script runs (`_running`: `e` and an empty line) and uploads again only if none does.
Idempotent, resent as they are: `t`, `Z` (abort; a repeat finds nothing running and
answers `Z!0006`, the same end state), the bare LF that collects output, and the zero-time
scripts of `cell_on`/`cell_off` (mode, range, level and cell state set absolutely).
Unverified on an instrument: that an EmStat4 refuses an upload with `!0006` while a script
runs, and runs an empty script as a no-op (both as the emulator does). A start lost with
its link while the upload may have taken is remembered: the same start asked again (a
caller riding out the outage) reads back first and adopts the running script.

Streamed output and the wire. An output line is never asked for twice (the protocol has
no way to), and a retried exchange flushes what was left of a garbled reply: a `Run`
reads every line of a poll's reply before anything can fail, and what the wire still lost
is told in `Run.gaps` (garbled lines; a stretch between samples longer than the record
rule allows, i.e. output sent while the line was silent; an end that went unseen), never
dropped without a word. Output the instrument sent while its port was unplugged is not
lost: it waits in the instrument and comes with the next poll. A poll takes what has
arrived and waits for nothing, neither a reply timeout (a script's output has no end to
wait for) nor a first byte or a pause on the line: a line still on its way is the next
poll's. A host polls every channel of a bank in turn, so any wait is paid per channel:
128 channels polled every 2 s that each waited 50 ms for a first byte that was not coming
(a channel recording every 30 s has nothing most times) spent 3.2 s of every second
waiting.

A technique's safety window (`techniques.Window`) is written into its script, tested at
every measurement before the step's own limits: the sample past it is sent and the script
`abort`s (on to `on_finished:`, the cell off), and the run ends with 'window' (`Run`).
Unverified on an instrument: what an EmStat4 prints after a script's own `abort` (the
emulator prints the loop's end marker and the script's end, as after the host's `Z`
without the `Z`; were it to print a `Z`, the run would end 'aborted', which the host also
takes as a trip, its sample past the window having tripped it first).

Multisine impedance (`MultisineEIS`) is a lipon-hw extension, not in the MethodSCRIPT
manual v1.8 (which has no multisine): `meas_loop_eis` with the option `multisine(k1,k2,…)`
(the tones' harmonic numbers of f_start, in MethodSCRIPT's parenthesised-option style, as
`nscans(n)` of `meas_loop_cv`). The emulator runs it; a PalmSens firmware would refuse it
(`!4008`, an option the command does not take). So the driver sends it only where the
station says the instrument takes it (`settings: {multisine: true}`), and otherwise
refuses the technique in one sentence before anything is sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from lipon_hw.drivers.methodscript.codec import (
    CURRENT_RANGES_A,
    TERMINATOR,
    Firmware,
    decode_error,
    decode_firmware,
    is_marker,
    script_bytes,
)
from lipon_hw.drivers.methodscript.run import Run
from lipon_hw.drivers.methodscript.scripts import (
    SCRIPT_BUILDERS,
    potentiostat_lines,
    script_bytes_for,
)
from lipon_hw.errors import FrameError, InputError, InstrumentError, LinkLost
from lipon_hw.links import Link
from lipon_hw.techniques import MultisineEIS, Technique


class MethodScriptPotentiostat:
    """A MethodSCRIPT potentiostat with one or more channels.

    `link` is the Link of an EmStat4, or a sequence of Links, one per MultiEmStat4
    channel port (channel k on `link[k-1]`); `channels`, if given, must match.
    Channels are numbered from 1. `start(channel, technique)` sends the script and
    returns a `Run` to poll; `stop`, `cell_on`, `cell_off` act on one channel.
    `multisine` (a station setting, default false): the instrument takes the lipon-hw
    multisine extension of `meas_loop_eis` (see the module's docstring).
    """

    SERIAL_DEFAULTS: dict = {"baudrate": 921600, "bytesize": 8, "parity": "N", "stopbits": 1}
    #: the channel window and current limit a station may set: an EmStat4 applies at
    #: most ±10 V (compliance) and ±30 mA, down to its 1 nA range
    LIMITS = {"min_V": (-10.0, 10.0), "max_V": (-10.0, 10.0), "max_current_A": (1e-9, 0.03)}
    #: every technique runs on the instrument, limits included
    TECHNIQUES = tuple(SCRIPT_BUILDERS)

    def __init__(self, name: str, link: Link | Sequence[Link], channels: int | None = None,
                 multisine: bool = False):
        if not isinstance(multisine, bool):
            raise InputError(f"{name}: the setting multisine is true or false, not "
                             f"{multisine!r}")
        self.multisine = multisine
        links = list(link) if isinstance(link, list | tuple) else [link]
        if channels is not None and int(channels) != len(links):
            raise InputError(f"{name}: {channels} channels need {channels} links, one per "
                             f"channel port (a MultiEmStat4 has one serial port per channel); "
                             f"got {len(links)}")
        self.name = name
        self.links = links
        self.runs: dict[int, Run | None] = {ch: None for ch in range(1, len(links) + 1)}
        #: a start whose upload may have taken unseen (the link was lost): its Run
        self._unsure: dict[int, Run] = {}

    @property
    def channels(self) -> int:
        return len(self.links)

    # --- potentiostat -------------------------------------------------------------
    def start(self, channel: int, technique: Technique) -> Run:
        """Send the technique's script; InstrumentError if the channel refuses it."""
        if isinstance(technique, MultisineEIS) and not self.multisine:
            raise InputError(f"{self.name} (MethodSCRIPT) cannot run MultisineEIS: multisine "
                             "is a lipon-hw extension of meas_loop_eis that PalmSens firmware "
                             "does not take; set `multisine: true` in the station's settings "
                             f"of {self.name} only if this instrument runs it")
        self._check_idle(channel)
        pending = self._unsure.pop(channel, None)
        if pending is not None and pending.technique == technique and self._link(
                channel).exchange(lambda link: self._running(link, pending)):
            self.runs[channel] = pending  # the upload whose answer was lost took after all
            return pending
        script = script_bytes_for(technique)
        run = Run(self, channel, technique)

        def upload(link: Link) -> None:
            link.write(script)
            while True:
                line = self._read_line(link)
                if line == "e":
                    return
                error = decode_error(line)
                if error is not None and line.startswith("e"):
                    raise InstrumentError(f"{self.name} channel {channel} refused the "
                                          f"{type(technique).__name__} script with {error}")
                if not (line.startswith("P") or is_marker(line)):
                    raise FrameError(f"{self.name} channel {channel} answered the script "
                                     f"{script[:40]!r}… with {line!r} instead of its echo 'e'")
                run._line(line)  # the echo was lost but the script is running
                return

        try:
            self._link(channel).exchange(upload, verify=lambda link: self._running(link, run))
        except LinkLost as exc:
            if getattr(exc, "maybe_took", False):  # the same start again reads back first
                self._unsure[channel] = run
            raise
        self.runs[channel] = run
        return run

    def stop(self, channel: int) -> None:
        """Abort the channel's script (`Z`); its `on_finished:` turns the cell off."""
        run = self.runs.get(channel)
        self._link(channel).exchange(lambda link: self._sync(link, run))

    def cell_on(self, channel: int, voltage_V: float | None = None) -> None:
        """Hold `voltage_V`; if None, connect the cell at zero current (galvanostat),
        so that its potential stays at open circuit. Takes no time on the instrument."""
        self._check_idle(channel)
        if voltage_V is None:
            lines = ["set_pgstat_chan 0", "set_pgstat_mode 6", "set_range db 1u", "set_i 0"]
        else:
            lines = ["set_pgstat_chan 0", *potentiostat_lines(voltage_V)[:-1]]
        self._script(channel, [*lines, "cell_on"])

    def cell_off(self, channel: int) -> None:
        self._check_idle(channel)
        self._script(channel, ["set_pgstat_chan 0", "cell_off"])

    def current_ranges_A(self) -> tuple[float, ...]:
        return tuple(sorted(CURRENT_RANGES_A.values()))

    def identify(self) -> str:
        """`t` on the first channel: model, firmware version and build."""
        def ask(link: Link) -> Firmware:
            link.write(b"t\n")
            first = self._read_line(link, dispatch=self.runs.get(1))
            second = self._read_line(link)
            try:
                return decode_firmware(first, second)
            except ValueError as exc:
                raise FrameError(f"{self.name} answered b't\\n' with {first!r}, {second!r}: "
                                 f"{exc}") from None

        fw = self._link(1).exchange(ask)
        return (f"PalmSens {fw.model} firmware {fw.version} ({fw.build}), "
                f"{self.channels} channel{'s' * (self.channels > 1)}")

    def make_safe(self) -> None:
        """Abort and switch the cell off on every channel, even if one of them fails."""
        failure: Exception | None = None
        for channel in self.runs:
            try:
                self.stop(channel)
                self._script(channel, ["set_pgstat_chan 0", "cell_off"])
            except Exception as exc:  # every channel is tried; the first failure is raised
                failure = failure or exc
        if failure is not None:
            raise failure

    # --- protocol -----------------------------------------------------------------
    def _link(self, channel: int) -> Link:
        if channel not in self.runs:
            raise InputError(f"{self.name} has channels 1–{self.channels}, not {channel}")
        return self.links[channel - 1]

    def _check_idle(self, channel: int) -> None:
        self._link(channel)  # checks the channel number
        run = self.runs[channel]
        if run is not None and not run.finished:
            run.poll()
            if not run.finished:
                raise InstrumentError(f"{self.name} channel {channel} is still running "
                                      f"{type(run.technique).__name__}; stop() it first")

    def _poll(self, channel: int) -> None:
        """Send a bare LF and read every complete line that has arrived, without waiting.
        PalmSens' own resync sends one as a harmless flush; here it also makes the
        in-process link (sim://) hand over what the instrument printed meanwhile (the
        served lab pushes it unasked as well, as the instrument does on its port)."""
        run = self.runs[channel]

        def read(link: Link) -> None:
            link.write(TERMINATOR)
            data = link.read_arrived(TERMINATOR, first_s=0.0, gap_s=0.0)
            if data:
                taken = run.take(data)
                if run.finished:  # what follows the script's end is not the run's
                    link.unread(data[taken:])

        self._link(channel).exchange(read)

    def _script(self, channel: int, lines: list[str]) -> None:
        """Run a script that takes no time and wait for its end."""
        def execute(link: Link) -> None:
            link.write(script_bytes(lines))
            while (line := self._read_line(link)) != "":
                error = decode_error(line)
                if error is not None:
                    raise InstrumentError(f"{self.name} channel {channel} refused "
                                          f"{lines!r} with {error}")

        self._link(channel).exchange(execute)

    def _running(self, link: Link, run: Run) -> bool:
        """The read-back of a script upload whose answer was lost: is a script running?

        `e` and an empty line: while a script runs the channel refuses a new one with
        `e!0006` (a command not allowed now) and skips to the empty line; idle, it runs the
        empty script, which does nothing and answers `e` and an empty line. Output of the
        uploaded script met on the way (its late echo, markers, packages) goes to `run` and
        also says that it runs. Unverified on hardware: the emulator refuses a second
        upload so; the manual's wording was not available."""
        link.write(b"e\n\n")
        seen = False
        while True:
            line = self._read_line(link)
            if _is_output(line):
                run._line(line)
                seen = True
            elif line == "e":
                continue  # the probe's echo, or the upload's own arriving late
            elif line == "":
                return seen  # the empty script ran: nothing else was running
            elif (error := decode_error(line)) is not None and not line.startswith("e"):
                run._line(line)  # the uploaded script's own end on an error: it ran
                seen = True
            elif error is not None and error.code == 0x0006:
                return True
            elif error is not None:
                raise InstrumentError(f"{self.name} refused the read-back of a script upload "
                                      f"(`e` and an empty line) with {error}")
            else:
                raise FrameError(f"{self.name} answered the read-back b'e\\n\\n' with "
                                 f"{line!r}")

    def _sync(self, link: Link, run: Run | None) -> None:
        """`Z`: `Z!0006` if nothing runs, else `Z`, the script's last lines, an empty line."""
        link.write(b"Z\n")
        while True:
            line = self._read_line(link, dispatch=run)
            if line == "Z!0006":  # nothing runs: a run whose end went unseen is over too
                if run is not None and not run.finished:
                    run._end_unseen()
                return
            if line.startswith("Z!"):  # refused (a channel in fault): said, never waited on
                if (error := decode_error(line)) is None:  # a garbled refusal: asked again
                    raise FrameError(f"{link.address} answered Z with {line!r}")
                raise InstrumentError(f"{link.address} refused to abort its script (Z) with "
                                      f"{error}")
            if line == "Z":
                break
            if run is not None and not run.finished and (line == "" or not line.startswith(
                    ("Z", "e", "t"))):
                run._line(line)  # the script's own end (or error) came before the answer
        while (line := self._read_line(link, dispatch=run)) != "":
            if decode_error(line) is not None:
                break
        if run is not None:
            run.aborted = run.finished = True

    def _read_line(self, link: Link, dispatch: Run | None = None) -> str:
        """The next line that is not script output; output goes to `dispatch`'s run."""
        while True:
            line = link.read_until(TERMINATOR)[:-1].decode("ascii", "replace")
            if dispatch is None or dispatch.finished or not _is_output(line):
                return line
            dispatch._line(line)


def _is_output(line: str) -> bool:
    return line.startswith(("P", "T")) or is_marker(line)
