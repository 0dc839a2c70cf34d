"""What ends every deposition run: its instruments made safe, power first, and what that
achieved (`SafeState`), for the engine (`runner`) and for a run's end outside it."""

from __future__ import annotations

from dataclasses import dataclass, field

from lipon_hw.errors import LiponError

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
        return f"the hardware was NOT all made safe: FAILED for {', '.join(self.failed)}{made}"
