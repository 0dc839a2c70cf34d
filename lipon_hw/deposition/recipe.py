"""Deposition recipes: schema, and validation against the station before anything moves.

A recipe names a tool of the station and lists steps, each a one-key mapping
(`- rf: {power_W: 50}`). Validation checks the schema, then the station: the
tool exists, every role a step needs is played by an instrument, every
setpoint is inside that instrument's limits, every film is known to the
thickness monitor, and every interlock names real quantities. The first
problem found is raised as one sentence with file, line and field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from lipon_hw import ranges as r
from lipon_hw.deposition.link_watch import link_quantities
from lipon_hw.engine import interlocks as il
from lipon_hw.station import ROLES, Station
from lipon_hw.yamlfile import Doc, load, loads, pydantic_error

#: quantities the engine records for each role, as `<instrument>.<quantity>`
ROLE_QUANTITIES: dict[str, tuple[str, ...]] = {
    "rf_supply": ("forward_power_W", "reflected_power_W", "load_power_W", "dc_bias_V"),
    "thickness_monitor": ("rate_A_s", "thickness_nm", "frequency_Hz", "crystal_life_pct"),
    "base_gauge": ("pressure_torr",),
    "process_gauge": ("pressure_torr",),
    "gas_flow": ("flow_sccm",),
    "source_supply": ("current_A", "voltage_V"),
    "deposition_controller": ("rate_A_s", "thickness_nm", "output_pct"),
    "substrate_thermometer": ("temperature_C",),
}


class _Step(BaseModel):
    model_config = r.MODEL_CONFIG
    #: roles of the current tool this step drives
    NEEDS: ClassVar[tuple[str, ...]] = ()

    def needs(self) -> tuple[str, ...]:
        return self.NEEDS

    def films(self) -> list[tuple[str, str]]:
        """(role, film) pairs the station must define for this step."""
        return []


class PumpDown(_Step):
    NEEDS = ("valves", "base_gauge")
    below_torr: r.PRESSURE_TORR
    timeout_min: r.TIMEOUT_MIN = 180


class Gas(_Step):
    NEEDS = ("gas_flow", "process_gauge")
    n2_sccm: r.FLOW_SCCM
    pressure_mtorr: r.PRESSURE_MTORR | None = None
    tolerance_pct: r.PERCENT = 5
    settle_s: r.SHORT_S = 20
    timeout_min: r.TIMEOUT_MIN = 10


class RF(_Step):
    NEEDS = ("rf_supply",)
    power_W: r.POWER_W
    ramp_W_per_s: r.RAMP_W_S = 1.0
    regulation: Literal["forward", "load"] | None = None
    ignite_timeout_s: r.IGNITE_S = 10
    max_reflected_pct: r.PERCENT = 5


class Presputter(_Step):
    NEEDS = ("shutter", "rf_supply")
    for_min: r.PROCESS_MIN


class Deposit(_Step):
    NEEDS = ("shutter", "thickness_monitor", "rf_supply")
    film: str = Field(max_length=64)
    until_thickness_nm: r.THICKNESS_NM | None = None
    for_min: r.PROCESS_MIN | None = None
    max_h: r.MAX_H = 24

    @model_validator(mode="after")
    def _one_end(self):
        if (self.until_thickness_nm is None) == (self.for_min is None):
            raise ValueError("give exactly one of until_thickness_nm or for_min")
        return self

    def films(self):
        return [("thickness_monitor", self.film)]


class Wait(_Step):
    for_min: r.WAIT_MIN


class Vent(_Step):
    NEEDS = ("valves", "base_gauge")
    timeout_min: r.TIMEOUT_MIN = 30


class Transfer(_Step):
    """Move the sample to another tool of the station (through its load lock)."""

    to: str = Field(max_length=64)


class Source(_Step):
    """Route the source supply to a boat and load that film into the monitors."""

    NEEDS = ("source_selector", "thickness_monitor")
    boat: r.BOAT
    film: str = Field(max_length=64)

    def films(self):
        return [("thickness_monitor", self.film)]


class Precondition(_Step):
    """Ramp the source current, then soak: melt and outgas the charge, shutter closed."""

    NEEDS = ("source_supply", "shutter", "base_gauge")
    ramp_to_A: r.SOURCE_A
    ramp_s: r.SHORT_S = 60
    soak_s: r.SHORT_S = 60


class PID(BaseModel):
    """Gains on the relative rate error: kp_A amperes for a 100 % error."""

    model_config = r.MODEL_CONFIG
    kp_A: r.real(1e-3, 1_000, "A", "a source-current gain") = 4.0
    ti_s: r.real(0.01, 3_600, "s", "an integral time") = 8.0
    td_s: r.SHORT_S = 0.0


class ControllerPID(BaseModel):
    """The deposition controller's own gains (in its units: % output per unit error)."""

    model_config = r.MODEL_CONFIG
    p_gain: r.GAIN = 8.0
    i_time_s: r.SHORT_S = 40.0
    d_time_s: r.SHORT_S = 0.0


class Evaporate(_Step):
    """Rate-controlled deposition: stabilise on the rate with the shutter closed, open,
    close on time at the target thickness. `control: controller` runs the loop in the
    deposition controller, `host` in the engine over the monitor and the supply."""

    rate_A_s: r.RATE_A_S
    until_thickness_nm: r.THICKNESS_NM
    control: Literal["host", "controller"] = "host"
    tolerance_pct: r.PERCENT = 5
    stable_s: r.SHORT_S = 10
    max_min: r.PROCESS_MIN = 180
    max_current_A: r.SOURCE_A | None = None
    pid: PID = PID()
    controller_pid: ControllerPID = ControllerPID()
    on_crystal_failure: Literal["time_power", "stop"] = "stop"

    def needs(self):
        loop = ("thickness_monitor",) if self.control == "host" else ("deposition_controller",)
        return ("source_supply", "shutter", "base_gauge") + loop


class SourceOff(_Step):
    NEEDS = ("source_supply",)
    ramp_s: r.SHORT_S = 20


class CalibrateTooling(_Step):
    """New tooling from a reference measurement of the last layer of `film`:
    tooling × measured / monitor reading. Without `measured_nm`, the simulated lab's
    profilometer measures the layer (on hardware the measurement is required)."""

    NEEDS = ("thickness_monitor",)
    film: str = Field(max_length=64)
    measured_nm: r.THICKNESS_NM | None = None

    def films(self):
        return [("thickness_monitor", self.film)]


STEP_KINDS: dict[str, type[_Step]] = {
    "pump_down": PumpDown, "gas": Gas, "rf": RF, "presputter": Presputter,
    "deposit": Deposit, "wait": Wait, "vent": Vent, "transfer": Transfer, "source": Source,
    "precondition": Precondition, "evaporate": Evaporate, "source_off": SourceOff,
    "calibrate_tooling": CalibrateTooling,
}


class SampleSpec(BaseModel):
    model_config = r.MODEL_CONFIG
    id: r.SAMPLE_ID
    substrate: str = Field(default="", max_length=200)


class _RecipeHead(BaseModel):
    model_config = r.MODEL_CONFIG
    name: str = Field(max_length=200)
    kind: Literal["deposition"] = "deposition"
    tool: str = "sputter"
    sample: SampleSpec | None = None
    instruments: dict[str, str] = {}
    record_every_s: r.DEP_RECORD_S = 5
    checkpoint_every_s: r.CHECKPOINT_S = 60
    steps: list[dict] = Field(min_length=1, max_length=r.MAX_STEPS)
    interlocks: list[il.RuleSpec] = Field(default=[], max_length=r.MAX_INTERLOCKS)


@dataclass
class PlannedStep:
    kind: str
    params: _Step
    line: int
    tool: str = ""

    def describe(self) -> dict:
        return {self.kind: self.params.model_dump(exclude_none=True)}


@dataclass
class Recipe:
    """A validated recipe, bound to the roles of the station tools its steps use."""

    path: str
    text: str
    name: str
    tool: str  # where the sample starts
    sample: SampleSpec | None
    tool_roles: dict[str, dict[str, str]]  # tool → role → instrument
    steps: list[PlannedStep]
    interlocks: list[il.Rule]  # the station's rules for its tools, then its own
    record_every_s: float
    checkpoint_every_s: float

    @property
    def deposited_films(self) -> set[str]:
        """The films the recipe lays down (deposited or evaporated from a source)."""
        return {step.params.film for step in self.steps
                if isinstance(step.params, Deposit | Source)}

    @property
    def roles(self) -> dict[str, str]:
        """Roles of the tool the recipe starts on."""
        return self.tool_roles[self.tool]

    def quantities(self) -> dict[str, str]:
        """Every recorded quantity name → the role that produces it, over all tools; with
        each instrument's `link_health` (deposition.link_watch)."""
        return {**{f"{inst}.{q}": role for roles in self.tool_roles.values()
                   for role, inst in roles.items() for q in ROLE_QUANTITIES.get(role, ())},
                **link_quantities(self.tool_roles)}


def load_recipe(path: str, station: Station, text: str | None = None) -> Recipe:
    """Parse and validate; `text` (a run's stored copy) stands in for the file."""
    doc = load(path) if text is None else loads(text, path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "a recipe must be a mapping with name, tool and steps")
    try:
        head = _RecipeHead.model_validate(doc.data)
    except ValidationError as exc:
        raise pydantic_error(doc, exc) from None
    roles = _bind_roles(doc, head, station)
    steps = [_parse_step(doc, i, raw) for i, raw in enumerate(head.steps)]
    tool_roles = {head.tool: roles}
    tool = head.tool
    for i, step in enumerate(steps):
        step.tool = tool
        if isinstance(step.params, Transfer):
            tool = step.params.to
            if tool not in station.spec.tools:
                raise doc.error(("steps", i, "transfer", "to"),
                                f"station {station.spec.name!r} has no tool {tool!r} "
                                f"(it has {', '.join(station.spec.tools)})")
            tool_roles.setdefault(tool, dict(station.spec.tools[tool]))
    if text is None:
        text = doc.text  # the bounded read, not a second one of a file that may change
    recipe = Recipe(
        path=path, text=text, name=head.name, tool=head.tool,
        sample=head.sample, tool_roles=tool_roles, steps=steps, interlocks=[],
        record_every_s=head.record_every_s, checkpoint_every_s=head.checkpoint_every_s)
    for i, step in enumerate(steps):
        _check_against_station(doc, i, step, recipe, station)
    _check_ramps(doc, steps)
    known, phases = recipe.quantities(), list(STEP_KINDS)
    for tool in dict.fromkeys(step.tool for step in steps):  # the station's, for its tools
        if tool in station.interlocks:
            recipe.interlocks += il.bind(station.interlocks[tool], known, phases, "station",
                                         f"{tool} ")
    recipe.interlocks += il.bind(il.declare(doc, ("interlocks",), head.interlocks), known,
                                 phases, path)
    return recipe


MAX_RAMP_S = 4 * 3600.0  # an RF ramp that takes longer is a typo in ramp_W_per_s


def _check_ramps(doc: Doc, steps: list[PlannedStep]) -> None:
    """Every RF ramp ends within MAX_RAMP_S: from the power the step before left (per
    tool) to its own setpoint, at its ramp rate."""
    power: dict[str, float] = {}
    for i, step in enumerate(steps):
        p = step.params
        if not isinstance(p, RF):
            continue
        delta = abs(p.power_W - power.get(step.tool, 0.0))
        if delta / p.ramp_W_per_s > MAX_RAMP_S:
            raise doc.error(("steps", i, step.kind, "ramp_W_per_s"),
                            f"{p.ramp_W_per_s:g} W/s takes {delta / p.ramp_W_per_s / 3600:.3g} h "
                            f"to ramp {delta:g} W, longer than {MAX_RAMP_S / 3600:g} h")
        power[step.tool] = p.power_W


def _bind_roles(doc: Doc, head: _RecipeHead, station: Station) -> dict[str, str]:
    tools = station.spec.tools
    if head.tool not in tools:
        raise doc.error(("tool",), f"station {station.spec.name!r} has no tool {head.tool!r} "
                                   f"(it has {', '.join(tools) or 'none'})")
    roles = dict(tools[head.tool])
    for role, inst in head.instruments.items():
        loc = ("instruments", role)
        if role not in ROLES:
            raise doc.error(loc, f"role {role!r} is unknown (known: {', '.join(ROLES)})")
        if inst not in station.spec.instruments:
            raise doc.error(loc, f"instrument {inst!r} is not in station {station.spec.name!r} "
                                 f"(it has {', '.join(station.spec.instruments)})")
        roles[role] = inst
    return roles


def _parse_step(doc: Doc, i: int, raw) -> PlannedStep:
    loc = ("steps", i)
    if not isinstance(raw, dict) or len(raw) != 1:
        raise doc.error(loc, "each step is a mapping with exactly one step name, "
                             "e.g. `- rf: {power_W: 50}`")
    kind, params = next(iter(raw.items()))
    if kind not in STEP_KINDS:
        raise doc.error(loc + (kind,), f"unknown step {kind!r} "
                                       f"(known: {', '.join(STEP_KINDS)})")
    try:
        model = STEP_KINDS[kind].model_validate(params or {})
    except ValidationError as exc:
        raise pydantic_error(doc, exc, loc + (kind,)) from None
    return PlannedStep(kind, model, doc.line(loc))


def _check_against_station(doc: Doc, i: int, step: PlannedStep, recipe: Recipe,
                           station: Station) -> None:
    loc = ("steps", i, step.kind)
    roles = recipe.tool_roles[step.tool]
    for role in step.params.needs():
        if role not in roles:
            raise doc.error(loc, f"needs a {role} but tool {step.tool!r} of station "
                                 f"{station.spec.name!r} has none")
    p = step.params
    checks: list[tuple[str, str, float | None, str]] = []
    if isinstance(p, RF):
        checks.append(("rf_supply", "max_power_W", p.power_W, "power_W"))
    elif isinstance(p, Gas):
        checks.append(("gas_flow", "max_flow_sccm", p.n2_sccm, "n2_sccm"))
    elif isinstance(p, Precondition):
        checks.append(("source_supply", "max_current_A", p.ramp_to_A, "ramp_to_A"))
    elif isinstance(p, Evaporate):
        checks.append(("source_supply", "max_current_A", p.max_current_A, "max_current_A"))
    for role, key, value, field in checks:
        inst = roles[role]
        limit = station.limit(inst, key)
        if limit is not None and value is not None and value > limit:
            raise doc.error(loc + (field,), f"{value:g} is above the station limit "
                                            f"{key} = {limit:g} of {inst}")
    if isinstance(p, Source):
        selector = roles["source_selector"]
        boats = _boats(station, selector)
        if p.boat > boats:
            raise doc.error(loc + ("boat",), f"boat {p.boat} does not exist: {selector} "
                                             f"selects boats 1–{boats}")
    if isinstance(p, CalibrateTooling) and p.measured_nm is None and not station.measures_films:
        raise doc.error(loc + ("measured_nm",), "is required: nothing of this station "
                                                "measures a film's thickness (no profilometer)")
    for role, film in p.films():
        monitors = [roles[r] for r in (role, "deposition_controller") if r in roles]
        for monitor in monitors:
            films = station.instrument(monitor).films
            if film not in films:
                raise doc.error(loc + ("film",), f"film {film!r} is not defined for {monitor} "
                                                 f"(station films: {', '.join(films) or 'none'})")


def _boats(station: Station, selector: str) -> int:
    """How many boats the source selector switches: its `boats` setting, or its driver's
    default."""
    import inspect

    from lipon_hw.station import driver_class

    inst = station.instrument(selector)
    if "boats" in inst.settings:
        return int(inst.settings["boats"])
    param = inspect.signature(driver_class(inst.driver)).parameters.get("boats")
    return param.default if param is not None and isinstance(param.default, int) else 1
