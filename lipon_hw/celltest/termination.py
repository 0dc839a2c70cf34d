"""Does a program end? The step-graph analysis behind `check_termination`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lipon_hw.yamlfile import Doc

if TYPE_CHECKING:
    from lipon_hw.celltest.protocol import Program

MAX_STEP_RUNS = 10_000_000  # technique steps one channel may run: with each step's time cap,
#                             the horizon within which every protocol ends


def check_termination(doc: Doc, base: tuple, program: Program) -> None:
    """Refuse a program that could run forever, or past MAX_STEP_RUNS steps.

    Every technique step ends, at the latest on its time limit (FOREVER_S without one),
    so a program runs forever only if it can come back to a step without bound. Its
    positions form a graph: each goes on to the next, a `goto` adds an edge to its tag, a
    `loop` an edge back to its tag. A loop's own back edge is bounded by its counter
    (`times`), which starts again only when the loop is left and entered anew, i.e. on
    another way back; so loops' back edges are left out. Every pass through a `loop`
    step closes a cycle of the cell, and `termination: {cycles: N}` stops the channel
    after N of them: with it, `loop` steps are cut out of the graph too (a way back
    through one is bounded). Whatever way back is left is a goto that can repeat with
    nothing counting it: refused, at the goto that closes it.

    Without such gotos the program's runs are bounded: a position runs at most the
    product of the `times` of the loops around it (with a cycle termination, at most
    once per cycle), which must stay within MAX_STEP_RUNS.
    """
    steps = program.steps
    counted = program.termination.cycles is not None
    n = len(steps)
    edges: list[list[int]] = [[] for _ in range(n)]
    for i, st in enumerate(steps):
        if counted and st.loop is not None:
            continue
        if i + 1 < n and not (counted and steps[i + 1].loop is not None):
            edges[i].append(i + 1)
        edges[i] += [t for t in st.gotos.values()
                     if not (counted and steps[t].loop is not None)]
    component = _components(edges)
    for i, st in enumerate(steps):
        for key, target in st.gotos.items():
            if target <= i and component[target] == component[i]:
                tag = steps[target].tag
                how = ("passes no `loop`" if counted else
                       "is counted by no loop and the protocol has no termination: {cycles}")
                raise doc.error(base + ("steps", i, st.kind, "goto", key),
                                f"jumps back to tag {tag!r} on a way that {how}, so the "
                                "program could run forever")
    runs = _runs_bound(program)
    if runs > MAX_STEP_RUNS:
        raise doc.error(base + ("steps",), f"the program could run {runs:.3g} steps on a "
                                           f"channel, more than {MAX_STEP_RUNS:.0e}: fewer "
                                           "loop times, or termination: {cycles}")


def _runs_bound(program: Program) -> float:
    """An upper bound on the technique steps one channel runs."""
    steps = program.steps
    techniques = sum(1 for st in steps if st.params is not None)
    if program.termination.cycles is not None:  # one pass of the program per cycle at most
        return float(techniques) * (program.termination.cycles + 1)
    log_mult = [0.0] * (len(steps) + 1)  # difference array of log(times) over loop bodies
    for i, st in enumerate(steps):
        if st.loop is not None:
            log_mult[st.target] += math.log(st.loop.times)
            log_mult[i + 1] -= math.log(st.loop.times)
    total, acc = 0.0, 0.0
    for i, st in enumerate(steps):
        acc += log_mult[i]
        if st.params is not None:
            total += math.exp(min(acc, 700.0))
    return total


def _components(edges: list[list[int]]) -> list[int]:
    """Strongly connected components (Tarjan's, iterative): node → component id."""
    n = len(edges)
    index, low, comp = [-1] * n, [0] * n, [-1] * n
    on_stack = [False] * n
    stack: list[int] = []
    counter = ncomp = 0
    for root in range(n):
        if index[root] >= 0:
            continue
        work = [(root, 0)]
        while work:
            v, k = work.pop()
            if k == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack[v] = True
            if k < len(edges[v]):
                work.append((v, k + 1))
                w = edges[v][k]
                if index[w] < 0:
                    work.append((w, 0))
                elif on_stack[w]:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                while True:
                    w = stack.pop()
                    on_stack[w] = False
                    comp[w] = ncomp
                    if w == v:
                        break
                ncomp += 1
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return comp


