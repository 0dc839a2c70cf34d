"""A PalmSens EmStat4 / MultiEmStat4 on the wire: a MethodSCRIPT interpreter on cells.

Each channel is its own serial port with its own MethodSCRIPT session, as on the
MultiEmStat4: `MethodScriptEmulator(name, cells, clock)` is the instrument and
serves its first channel itself; `ports[channel]` serves each channel (give those
to `sim://` links or `serve()`). A single cell makes it an EmStat4 LR.

Online commands: `e` + script + empty line (echo `e`, output, empty line; a refused
script answers `e!XXXX: Line L, Col C`), `l` + script + empty line (load only: `l`),
and those of `online` (its docstring has the table and what is unverified): `t`
(firmware, two lines), `v`, `i`, `r` (run the script loaded), `Z` (abort: `Z`, the
loop's end marker, `on_finished:`, empty line; `Z!0006` if idle), `h`/`H` (halt and
resume), `Fmscr`/`Lmscr` (store to / load from flash), `G`/`S` (registers). Any other
command answers `<its first letter>!0003`; an empty line is ignored.

The script language is the subset the driver sends and PalmSens' loop examples use:
`var`, `store_var`, `copy_var`, `add/sub/mul/div_var`, `set_pgstat_chan/mode`,
`set_max_bandwidth`, `set_range`, `set_range_minmax`, `set_autoranging`,
`set_acquisition_frac_autoadjust`, `set_e`, `set_i`, `cell_on/off`,
`timer_start/get`, `wait`, `meas`, `meas_loop_ocp/ca/cp/eis/lsv/cv`, `loop`, `if`,
`elseif`, `else`, `breakloop`, `abort`, `pck_*`, `on_finished:`. Anything else is
refused with `!4001` when the script is loaded.

Virtual time: a script runs only as far as `clock()`; what it printed by then is the
reply to whatever the host sends next (the driver sends a bare LF to collect it).
A measurement loop whose body only tests its measured values, the timer and values
it does not itself change at the top level (the driver's limit and Δt/ΔV recording
blocks) is event-driven: it asks the cell's `next_crossing` for the first sample at
which a test can turn true and skips the samples before it, which changes nothing a
host can see. A measurement loop (OCP, chronopotentiometry, chronoamperometry) whose
body is exactly the driver's (limits on E or a current cutoff, then a Δt/ΔV/ΔI rule or
every sample) runs in bulk instead: the cell gives
its readings on the sampling grid a stretch at a time and `RecordLoop`
(sim/recording.py) applies the rule to them, the same bytes for far less work. Any
other body runs at every sample.

Assumptions, not read in the manual: a measurement loop's first sample is one
interval after it starts and its last at the run time; an EIS point takes three
periods plus 50 ms and carries Gaussian noise, 0.3 % of |Z| on each part (seeded per
channel; `eis_noise=0` gives the exact impedance); a run-time error prints
`!XXXX: Line L`, switches the cell off and ends the script without `on_finished:`;
`L`/`+` mark a plain loop's start and end once; a multi-scan CV prints no scan markers;
the current range reported is the smallest EmStat4 range at or above |I| within the
autoranging limits, with the overload bit set above 3× the highest range.

Hostile hosts (a choice: the reference does not say what a MultiEmStat4 does when its
host goes mid-upload, and a USB port may give it no sign). A script being uploaded
belongs to its connection (`ScriptSession`): a host that goes mid-upload takes it
along and the next host starts clean, as a terminal server starts a new session
per connection. A script already running is the instrument's and runs on, its
output going to whoever connects next (`Z` aborts it). A command byte outside ASCII
is answered `!0003` with no echo, since the output is ASCII only; a script over
64 KiB is refused with `e!0008` and skipped to its empty line.

The package, one job a module: `parser` (script text → a Program, refused with the
manual's codes), `interpreter` (statements and commands), `loops` (the measurement
loops of each technique), `events` (event-driven sampling), `bulk` (the driver's record
loops run by RecordLoop), `online` (the online commands besides the upload), `channel`
(the serial port: sessions, script upload, the script running against the clock).
`MethodScriptChannel.loops_served` counts which way each measurement loop was run
("bulk", "event", "sample" or "stepped").
"""

from __future__ import annotations

from lipon_hw.sim.emulators.methodscript.channel import (
    EIS_NOISE,
    MethodScriptChannel,
    MethodScriptEmulator,
    ScriptSession,
)
from lipon_hw.sim.emulators.methodscript.parser import Program, ScriptError, parse_script

__all__ = ["EIS_NOISE", "MethodScriptChannel", "MethodScriptEmulator", "Program",
           "ScriptError", "ScriptSession", "parse_script"]
