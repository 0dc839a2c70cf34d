"""The driver's record loops run in bulk, as a mixin of the channel: a measurement loop
(OCP, chronopotentiometry, chronoamperometry) whose body is exactly the driver's (limits
on E or I that end the loop or abort the script, then a Δt/ΔV/ΔI rule or every sample) is
recognised here; the cell gives its readings on the sampling grid a stretch at a time
and `RecordLoop` (sim/recording.py) applies the rule to them, the same bytes for far less
work."""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

from lipon_hw.drivers.methodscript import encode_variable, parse_literal
from lipon_hw.sim.emulators.methodscript.interpreter import ScriptAborted
from lipon_hw.sim.emulators.methodscript.parser import Block, Cmd, IfChain
from lipon_hw.sim.package_values import encode_batch, encode_rows, encode_values
from lipon_hw.sim.recording import RecordLoop

FEW_ROWS = 2  # fewer rule samples are written line by line (a batch's set-up costs more)
MANY_ROWS = 16  # as many rule samples of one current are written as a matrix of bytes


class BulkLoops:
    """Recognise the driver's record loops and run them with RecordLoop."""

    # --- loops run in bulk ----------------------------------------------------------------
    def _recorded_body(self, st: Block, e_name: str, i_name: str | None) -> _RecordBody | None:
        """The body as a record rule RecordLoop can run, if it is one and the cell reads
        on a grid."""
        if not hasattr(self.cell, "readings_on_grid"):
            return None
        key = ("bulk", id(st))
        if key not in self._watches:
            self._watches[key] = _record_body(st.body, e_name, i_name)
        return self._watches[key]

    def _bulk(self, body: _RecordBody, e_name: str, i_name: str | None, e_type: str,
              t0: float, dt: float, n: int) -> Generator[float, None, None]:
        """Run a recognised loop with RecordLoop: at each wake, every sample up to the
        clock, the packages of those sent, and the variables as the body leaves them."""
        value = self._value
        steps = {kind: (var, value(token)) for kind, var, token in body.rule}
        start = {kind: value(var) for kind, (var, _) in steps.items()}
        loop = RecordLoop(
            self.cell, t0, dt, n, self.timer0,
            [_loop_limit(op, level, reason, value) for op, level, reason in body.limits],
            steps["t"][1] if "t" in steps else None, steps["eh"][1] if "eh" in steps else None,
            start.get("t", 0.0), start.get("eh", 0.0), start.get("el", 0.0),
            every_point=body.every_point, dI=steps["ih"][1] if "ih" in steps else None,
            ih=start.get("ih", 0.0), il=start.get("il", 0.0))
        fields = {body.timer: "eb{0}", e_name: e_type + "{1}", i_name: "{2}"}
        templates = {reason: "P" + ";".join([fields[x] for x in names]) + "\n"
                     for reason, names in [(None, body.names), *body.limit_names.items()]}
        currents: dict[float, str] = {}  # a current's field, with its range metadata
        metas: dict[float, tuple] = {}  # a current's range metadata

        def samples_by(now: float) -> int:
            """How many samples are due by `now` (t0 + k·dt ≤ now, at most n)."""
            k = max(0, int((now - t0) / dt))
            while k < n and t0 + (k + 1) * dt <= now:
                k += 1
            while k > 0 and t0 + k * dt > now:
                k -= 1
            return min(k, n)

        recorded = False
        try:
            while loop.end is None:
                # nothing is sent before the next sample the rules may send: sleep till then
                yield t0 + loop.next_sample() * dt
                sent = loop.run_to(max(loop.k + 1, samples_by(self.clock())))
                recorded = self._send_bulk(sent, templates, currents, metas) or recorded
                self.t = t0 + loop.k * dt
            if loop.end in body.aborts:  # the limit's `abort`: on to `on_finished:`
                raise ScriptAborted
        except ScriptAborted:  # the variables as sampling every point would have left them
            loop.run_to(samples_by(self.t))
            raise
        finally:
            self._bulk_variables(loop, body, steps, e_name, i_name, e_type, metas, recorded)

    def _send_bulk(self, sent, templates, currents, metas) -> bool:
        """The packages of the samples sent; True if one of them was sent by the rule.
        The rule's samples of one current are written at once: many as one matrix of
        bytes (`encode_rows`), a few in runs of one prefix (`encode_batch`); the rest
        line by line: the same bytes."""
        if not sent:
            return False
        ruled = len(sent) if sent[-1][3] is None else len(sent) - 1  # a limit's ends it
        if ruled >= MANY_ROWS:
            rows = sent[:ruled] if ruled < len(sent) else sent
            i = rows[0][2]
            if [x[2] for x in rows].count(i) == ruled:
                data = encode_rows(templates[None], {0: [x[0] for x in rows],
                                                     1: [x[1] for x in rows]},
                                   {2: self._current_field(i, currents, metas)})
                if ruled < len(sent):
                    data += self._lines(sent[ruled:], templates, currents, metas).encode(
                        "ascii")
                self._out += data
                return True
        times, volts, amps, _ = map(list, zip(*sent, strict=True))
        if amps.count(amps[0]) == len(amps):  # one current: a galvanostatic step's
            i_fields = [self._current_field(amps[0], currents, metas)] * len(amps)
        else:
            i_fields = [self._current_field(i, currents, metas) for i in amps]
        text = None
        if ruled > FEW_ROWS and i_fields[:ruled].count(i_fields[0]) == ruled:
            text = encode_batch(templates[None], {0: times[:ruled], 1: volts[:ruled]},
                                {2: i_fields[0]})
        rest = sent if text is None else sent[ruled:]
        if rest:
            text = (text or "") + self._lines(rest, templates, currents, metas,
                                              i_fields[-len(rest):])
        self._out += text.encode("ascii")
        return any(reason is None for *_, reason in sent)

    def _lines(self, rows, templates, currents, metas, i_fields=None) -> str:
        """The packages of these samples, line by line (each by its reason's template)."""
        if i_fields is None:
            i_fields = [self._current_field(x[2], currents, metas) for x in rows]
        values = encode_values([x[0] for x in rows] + [x[1] for x in rows])
        return "".join(templates[reason].format(t_field, e_field, i_field)
                       for (_, _, _, reason), t_field, e_field, i_field in zip(
                           rows, values[:len(rows)], values[len(rows):], i_fields,
                           strict=True))

    def _current_field(self, i: float, currents: dict, metas: dict) -> str:
        """A current's package variable, with its range metadata (kept by current)."""
        i_field = currents.get(i)
        if i_field is None:
            meta = metas[i] = metas.get(i) or self._range_meta(i)
            i_field = currents[i] = encode_variable("ba", i, False, *meta)
        return i_field

    def _bulk_variables(self, loop: RecordLoop, body: _RecordBody, steps: dict, e_name: str,
                        i_name: str | None, e_type: str, metas: dict, recorded: bool) -> None:
        """The variables as the body leaves them after the last sample measured."""
        if loop.last is None:
            return
        t, e, i = loop.last
        self._set(body.timer, t, "eb")
        self._set(e_name, e, e_type)
        if i_name is not None:
            self._set(i_name, i, "ba", metas.get(i) or self._range_meta(i))
        if recorded:  # copy_var then add_var/sub_var: the source's type, no metadata
            tn, eh, el, ih, il = loop.thresholds
            thresholds = {"t": (tn, "eb"), "eh": (eh, e_type), "el": (el, e_type),
                          "ih": (ih, "ba"), "il": (il, "ba")}
            for kind, (var, _) in steps.items():
                self._set(var, *thresholds[kind])


@dataclass(frozen=True)
class _RecordBody:
    """A loop body as the driver writes it: `timer_get`, limits that send a package and
    break (on E, or a current cutoff: `if i < a` holding `if i > b`), then a Δt/ΔV/ΔI
    rule (an if-chain whose branches all send and move their thresholds: `copy_var` +
    `add_var`/`sub_var`), every sample sent, or nothing more."""

    timer: str
    # (">=" | "<=" | ">" | "<", level, reason) on E, ("in", (b, a), "i_min") or
    # ("i>" | "i<", level, reason) on I, in body order
    limits: tuple[tuple[str, object, str], ...]
    limit_names: dict  # reason → the names its package sends
    names: tuple[str, ...]  # what the rule sends
    rule: tuple[tuple[str, str, str], ...]  # ("t" | "eh" | "el" | "ih" | "il", var, step)
    every_point: bool
    aborts: frozenset = frozenset()  # the limits that `abort` the script, not `breakloop`


def _loop_limit(op: str, level, reason: str, value) -> tuple[str, object, str]:
    """A body's limit as RecordLoop takes it, its levels' values read: a strict
    comparison as the inclusive one at the next float (for doubles, e > x exactly when
    e >= nextafter(x, +inf)), a bound on I as a band I must stay inside."""
    if op == "in":
        return op, (value(level[0]), value(level[1])), reason
    x = value(level)
    if op == ">":
        return ">=", math.nextafter(x, math.inf), reason
    if op == "<":
        return "<=", math.nextafter(x, -math.inf), reason
    if op == "i>":  # I > x: out of (−inf, next(x)); I < x: out of (prev(x), +inf)
        return "out", (-math.inf, math.nextafter(x, math.inf)), reason
    if op == "i<":
        return "out", (math.nextafter(x, -math.inf), math.inf), reason
    return op, x, reason


def _record_body(body: list, e_name: str, i_name: str | None) -> _RecordBody | None:
    if not body or not _is_cmd(body[0], "timer_get"):
        return None
    timer = body[0].args[0]
    probes = {timer, e_name, i_name} - {None}
    if len(probes) != (3 if i_name else 2):
        return None
    limits, limit_names, aborts, k = [], {}, set(), 1
    while k < len(body) and isinstance(body[k], IfChain) and _single(body[k]) is not None:
        limit = _limit(_single(body[k]), e_name, i_name)
        if limit is None:  # not a limit: a one-branch rule (Δt alone), or nothing known
            break
        op, level, reason, names, aborting = limit
        levels = level if op == "in" else (level,)
        if any(x in probes for x in levels) or reason in limit_names \
                or not set(names) <= probes:
            return None
        limits.append((op, level, reason))
        limit_names[reason] = names
        if aborting:
            aborts.add(reason)
        k += 1
    rest = body[k:]
    names = _package_names(rest)
    if names is not None or not rest:
        every = names is not None
        if every and not set(names) <= probes:
            return None
        return _RecordBody(timer, tuple(limits), limit_names, names or (), (), every,
                           frozenset(aborts))
    if len(rest) != 1 or not isinstance(rest[0], IfChain) or rest[0].else_body is not None:
        return None
    rule = _rule(rest[0], timer, e_name, i_name, probes)
    if rule is None:
        return None
    return _RecordBody(timer, tuple(limits), limit_names, rule[0], rule[1], False,
                       frozenset(aborts))


#: a limit on E or I by its comparison: its op for _RecordBody and the reason it ends with
_E_LIMITS = {">=": (">=", "v_max"), "<=": ("<=", "v_min"), ">": (">", "window_max_V"),
             "<": ("<", "window_min_V")}
_I_LIMITS = {">": ("i>", "window_max_I"), "<": ("i<", "window_min_I")}


def _limit(branch, e_name: str, i_name: str | None):
    """(op, level, reason, names sent, whether it aborts) of a limit's if (its one
    branch), else None: on E, `if e >= a`, `e <= a`, `e > a` or `e < a`; on I, `if i > a`
    or `if i < a`, or a cutoff `if i < a` holding only `if i > b` (or the other way
    round); each sending a package, then `breakloop` (the loop ends) or `abort` (the
    script goes on at `on_finished:`)."""
    (a, op, level), inner = branch
    if a == e_name and op in _E_LIMITS:
        op, reason = _E_LIMITS[op]
    elif a == i_name and i_name is not None and op in ("<", ">") and len(inner) == 1 and \
            isinstance(inner[0], IfChain) and _single(inner[0]) is not None:
        (a2, op2, level2), inner = _single(inner[0])
        if a2 != i_name or {op, op2} != {"<", ">"}:
            return None
        op, level, reason = "in", (level, level2) if op == ">" else (level2, level), "i_min"
    elif a == i_name and i_name is not None and op in _I_LIMITS:
        op, reason = _I_LIMITS[op]
    else:
        return None
    if not inner or not (_is_cmd(inner[-1], "breakloop") or _is_cmd(inner[-1], "abort")):
        return None
    names = _package_names(inner[:-1])
    return None if names is None else (op, level, reason, names, _is_cmd(inner[-1], "abort"))


def _rule(chain: IfChain, timer: str, e_name: str, i_name: str | None, probes: set):
    """(names sent, ((kind, threshold var, step), …)) of a Δt/ΔV/ΔI if-chain, else None."""
    shapes = {tuple((c.name, *c.args) if isinstance(c, Cmd) else None for c in body)
              for _, body in chain.branches}
    first = chain.branches[0][1]
    if len(shapes) != 1 or None in next(iter(shapes)):
        return None
    end = next((n for n, c in enumerate(first) if c.name == "pck_end"), None)
    names = _package_names(first[:end + 1]) if end is not None else None
    updates = first[end + 1:] if names is not None else []
    if names is None or not set(names) <= probes or len(updates) % 2:
        return None
    moves = {}  # threshold var → (source, command, step)
    for copy, step in zip(updates[::2], updates[1::2], strict=True):
        if copy.name != "copy_var" or step.name not in ("add_var", "sub_var") or \
                step.args[0] != copy.args[1] or copy.args[1] in moves:
            return None
        moves[copy.args[1]] = (copy.args[0], step.name, step.args[1])
    wanted = {(timer, ">=", "add_var"): "t", (e_name, ">=", "add_var"): "eh",
              (e_name, "<=", "sub_var"): "el"}
    if i_name is not None:
        wanted.update({(i_name, ">=", "add_var"): "ih", (i_name, "<=", "sub_var"): "il"})
    rule = {}
    for a, op, var in (condition for condition, _ in chain.branches):
        source, command, step = moves.get(var, (None, None, None))
        kind = wanted.get((a, op, command)) if source == a else None
        if kind is None or kind in rule or var in probes or not _is_literal(step):
            return None
        rule[kind] = (kind, var, step)
    for high, low in (("eh", "el"), ("ih", "il")):
        if (high in rule) != (low in rule) or (high in rule and rule[high][2] != rule[low][2]):
            return None
    if len(rule) != len(moves):
        return None
    return names, tuple(rule.values())


def _is_literal(token: str) -> bool:
    try:
        parse_literal(token)
    except ValueError:
        return False
    return True


def _is_cmd(st, name: str) -> bool:
    return isinstance(st, Cmd) and st.name == name


def _single(chain: IfChain):
    """The one branch of an if without elseif or else, or None."""
    return chain.branches[0] if len(chain.branches) == 1 and chain.else_body is None else None


def _package_names(statements: list) -> tuple[str, ...] | None:
    """The names a `pck_start`, `pck_add`…, `pck_end` sequence sends, else None."""
    if len(statements) < 2 or not _is_cmd(statements[0], "pck_start") or \
            not _is_cmd(statements[-1], "pck_end") or \
            not all(_is_cmd(c, "pck_add") for c in statements[1:-1]):
        return None
    return tuple(c.args[0] for c in statements[1:-1])

