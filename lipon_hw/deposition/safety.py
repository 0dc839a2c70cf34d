"""What ends every deposition run: its instruments made safe, power first, and what that
achieved (`SafeState`), for the engine (`runner`) and for a run's end outside it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from lipon_hw.engine.lifecycle import unsafe_sentence
from lipon_hw.errors import LiponError
from lipon_hw.link_health import instrument_links
from lipon_hw.safe_retry import SAFE_PATIENCE_S, SafeCall, clock_moves_on, retry_safe_state

#: the order in which instruments are made safe: stop the power first
SAFE_ORDER = ("rf_supply", "source_supply", "deposition_controller", "shutter", "gas_flow")


def alarmed(error: LiponError) -> LiponError:
    """`error`, marked as told by an alarm already: the run's end adds none for it."""
    error.alarmed = True
    return error


def safe_order(roles: dict[str, str], names) -> list[str]:
    """Instrument names in the order they are made safe: power first (SAFE_ORDER)."""
    return sorted(names, key=lambda n: (SAFE_ORDER.index(roles[n]) if roles.get(n) in SAFE_ORDER
                                        else len(SAFE_ORDER)))


def recipe_roles(recipe) -> dict[str, str]:
    """Instrument → role, for every instrument of every tool the recipe uses."""
    return {inst: role for tool_roles in recipe.tool_roles.values()
            for role, inst in tool_roles.items()}


@dataclass
class SafeState:
    """What `make_safe` did: instruments made safe, and those that failed (with why)."""

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def sentence(self) -> str:
        if self.ok:
            return f"the hardware was made safe ({', '.join(self.done)})"
        made = f"; made safe: {', '.join(self.done)}" if self.done else ""
        return unsafe_sentence([f"FAILED for {', '.join(self.failed)}"]) + made


def make_run_safe(lab, roles: dict[str, str], store, run_id: int, env, reason: str = "",
                  resumed: bool = False) -> SafeState:
    """Every instrument in `roles` (the run's tools only: the station's others, a
    potentiostat testing cells for another run, are not this run's to switch off) to its
    safe state: each once, power first, then those that failed again, bounded, as the
    run's clock moves on (`safe_retry`). Never raises: an instrument that fails is
    reported, and so is an alarm the store will not take (it is reported at the run's end;
    the hardware came first, and the operator hears it through the store's listener)."""
    names = safe_order(roles, [n for n in lab.instruments if n in roles])

    def retrying(failed: dict[str, str]) -> None:  # the operator hears it at once
        with contextlib.suppress(LiponError):
            store.add_alarm(run_id, env.now, "error", "engine",
                            f"safe state: FAILED so far for {', '.join(failed)}; trying "
                            f"again for up to {SAFE_PATIENCE_S / 60:.0f} min",
                            reaction="safe state")

    failed = retry_safe_state([SafeCall(name, lab.instruments[name].make_safe,
                                        instrument_links(lab, name)) for name in names],
                              lambda s: clock_moves_on(env, s), on_retry=retrying,
                              answered_before=resumed)
    safe = SafeState([n for n in names if n not in failed],
                     [f"{n} ({failed[n]})" for n in names if n in failed])
    message = f"safe state: {', '.join(safe.done)} made safe"
    if safe.failed:
        message += f"; FAILED for {', '.join(safe.failed)}"
    message += f" after: {reason}" if reason else ""
    with contextlib.suppress(LiponError):
        store.add_alarm(run_id, env.now, "info" if safe.ok else "error", "engine", message,
                        reaction="safe state")
    return safe
