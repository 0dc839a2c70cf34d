"""Which of a cell test's steps a channel's instrument runs as one program (a
`techniques.Sequence`: one MethodSCRIPT script), without the host between them.

A cycle's steps, once each has run, go to the instrument together: two or more steps up
to the next loop (cycles are counted there), each judged by the instrument alone (no
capacity or dV/dt end, no `goto` on an end), each run before (its duration known, for
polling: a first run is polled as a step of its own), on an instrument that runs programs
(`Sequence` in its TECHNIQUES), on a channel whose every sample the host need not judge as
it comes (no interlock rule of its own or its potentiostat's: a `hold` acts between
steps), with no pause wanted and no step cut short to finish. The host sees each step's
samples and end as they were, told apart by the instrument's output (`channels`); it does
not stand between the steps, so there is no rest while it would start the next, and a
resume goes back to the program's start.
"""

from __future__ import annotations

from collections.abc import Callable

from lipon_hw.techniques import SEQUENCE_PHASES


def program_from(steps: list, pc: int, state, technique_of: Callable[[int], object]
                 ) -> list[int]:
    """The steps from `pc` the instrument runs as one program, or [pc]; `state` the
    channel's (`ChannelState`: its steps' durations), `technique_of(pc)` the technique the
    channel made for a step. The channel asks only where it may run programs at all."""
    pcs = []
    for k in range(pc, len(steps)):
        if steps[k].tag is not None:
            continue
        if steps[k].loop is not None or not judged_by_instrument(steps[k], technique_of(k)) \
                or str(k) not in state.durations:
            break
        pcs.append(k)
    return pcs if len(pcs) > 1 else [pc]


def judged_by_instrument(step, technique) -> bool:
    """Whether a step may run in a program: a recorded technique the instrument ends on
    its own (no host-judged end, no `goto` on an end)."""
    until = step.params.until
    return (type(technique) in SEQUENCE_PHASES and until.capacity_Ah is None
            and not until.dVdt_mV_h and not step.gotos)
