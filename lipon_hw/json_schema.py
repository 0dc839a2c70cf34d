"""JSON Schema of recipes, cell-test protocols and station files, from the pydantic models.

`lipon-hw schema [sequence|recipe|protocol|station]` prints these, for editors: with the
YAML language server, a first line `# yaml-language-server: $schema=<file>` gives
completion, units and ranges while a recipe is typed. The schemas say what the models
say — every number's range and unit (`engine.ranges.Span`), every default, unknown keys
refused — plus what the models leave to the loaders: a step is a mapping with exactly one
step name, a station's roles and each built-in driver's limits. What values make together
(a setpoint inside the station's limits, a loop that ends) is still `lipon-hw validate`'s.

Numbers are YAML 1.2 numbers here (`3.0e6` is a float, as an editor reads it);
`load_yaml12` reads a file so, for checking one against a schema.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

DIALECT = "https://json-schema.org/draft/2020-12/schema"
KINDS = ("sequence", "recipe", "protocol", "station")


def _models_schema(models: list[type[BaseModel]]) -> tuple[dict, dict[type, dict]]:
    """The models' schemas with one shared `$defs`: ({name: def}, {model: its $ref})."""
    refs, top = models_json_schema([(m, "validation") for m in models],
                                   ref_template="#/$defs/{model}")
    return top.get("$defs", {}), {m: refs[(m, "validation")] for m in models}


def _step_schema(kinds: dict[str, type[BaseModel]], refs: dict[type, dict],
                  defs: dict, extra: dict[str, dict] | None = None) -> dict:
    """A step: a mapping with exactly one known step name, whose value is that step's
    parameters (null stands for {} when the step needs none)."""
    properties = {}
    for name, model in kinds.items():
        ref = refs[model]
        needs = defs[ref["$ref"].rsplit("/", 1)[1]].get("required")
        properties[name] = ref if needs else {"anyOf": [ref, {"type": "null"}]}
    properties.update(extra or {})
    return {"type": "object", "minProperties": 1, "maxProperties": 1,
            "properties": properties, "additionalProperties": False,
            "description": "one step: exactly one of " + ", ".join(properties)}


def recipe_schema() -> dict:
    """A deposition recipe (`kind: deposition`, the default)."""
    from lipon_hw.deposition import recipe as rc

    kinds = rc.STEP_KINDS
    defs, refs = _models_schema([rc._RecipeHead, *dict.fromkeys(kinds.values())])
    head = defs.pop(refs[rc._RecipeHead]["$ref"].rsplit("/", 1)[1])
    defs["Step"] = _step_schema(kinds, refs, defs)
    head["properties"]["steps"]["items"] = {"$ref": "#/$defs/Step"}
    head["properties"]["instruments"]["propertyNames"] = _roles()
    head["properties"]["interlocks"]["items"] = {"$ref": "#/$defs/InterlockSpec"}
    defs["InterlockSpec"]["properties"]["during"]["items"] = {"enum": list(kinds)}
    return _document("lipon-hw deposition recipe", rc.__doc__, head, defs)


def protocol_schema() -> dict:
    """A cell-test protocol (`kind: cycling`)."""
    from lipon_hw.celltest import protocol_schema as ps

    kinds = ps.STEP_KINDS
    defs, refs = _models_schema([ps._Head, ps.Loop, *kinds.values()])
    head = defs.pop(refs[ps._Head]["$ref"].rsplit("/", 1)[1])
    defs["Step"] = _step_schema(kinds, refs, defs, {
        "tag": {"type": "string", "minLength": 1,
                "description": "a name a loop or a goto jumps back to"},
        "loop": refs[ps.Loop]})
    for spec in (head, defs["ProtocolSpec"]):
        spec["properties"]["steps"]["items"] = {"$ref": "#/$defs/Step"}
    for model in kinds.values():  # a goto names one of the step's own end conditions
        goto = defs[model.__name__]["properties"]["goto"]
        goto["propertyNames"] = {"enum": list(ps.Until.model_fields)}
    return _document("lipon-hw cell-test protocol", None, head, defs)


def sequence_schema() -> dict:
    """Either, as `lipon-hw run` tells them apart: `kind: cycling` is a protocol."""
    recipe, protocol = _prefixed(recipe_schema(), "recipe."), _prefixed(
        protocol_schema(), "protocol.")
    defs = {**recipe.pop("$defs"), **protocol.pop("$defs")}
    for part in (recipe, protocol):
        del part["$schema"]
    defs["recipe"], defs["protocol"] = recipe, protocol
    return {"$schema": DIALECT, "title": "lipon-hw sequence (recipe or cell-test protocol)",
            "description": "A cell-test protocol when `kind: cycling`, else a deposition recipe.",
            "if": {"type": "object", "required": ["kind"],
                   "properties": {"kind": {"const": "cycling"}}},
            "then": {"$ref": "#/$defs/protocol"}, "else": {"$ref": "#/$defs/recipe"},
            "$defs": defs}


def station_schema() -> dict:
    """A station file; a built-in driver's `limits` keys and ranges, and its settings'
    names, come from the driver class."""
    from lipon_hw import station as st
    from lipon_hw.drivers import DRIVERS

    defs, refs = _models_schema([st.StationSpec])
    head = defs.pop("StationSpec")
    head["properties"]["tools"]["additionalProperties"]["propertyNames"] = _roles()
    inst = defs["InstrumentSpec"]
    inst["properties"]["driver"] = {
        "anyOf": [{"enum": sorted(DRIVERS)}, {"type": "string"}], "title": "Driver",
        "description": "a built-in driver, or a plug-in of the lipon_hw.drivers entry points"}
    inst["allOf"] = [_driver_rules(key, st.driver_class(key)) for key in sorted(DRIVERS)]
    return _document("lipon-hw station file", None, head, defs)


SCHEMAS = {"sequence": sequence_schema, "recipe": recipe_schema,
           "protocol": protocol_schema, "station": station_schema}


def schema(kind: str) -> dict:
    """The JSON Schema of `kind`, one of KINDS."""
    return SCHEMAS[kind]()


def _driver_rules(key: str, cls: type) -> dict:
    limits = {name: {"type": "number", "minimum": lo, "maximum": hi}
              for name, (lo, hi) in getattr(cls, "LIMITS", {}).items()}
    params = inspect.signature(cls.__init__).parameters
    kinds = {p: params[p].kind for p in list(params)[3:]}  # after self, name, link
    settings = [p for p, kind in kinds.items() if p not in limits
                and kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]
    rules = {"limits": {"properties": limits, "additionalProperties": False}}
    if inspect.Parameter.VAR_KEYWORD not in kinds.values():  # else it takes any setting
        rules["settings"] = {"propertyNames": {"enum": settings}}
    return {"if": {"required": ["driver"], "properties": {"driver": {"const": key}}},
            "then": {"properties": rules}}


def _roles() -> dict:
    from lipon_hw.station import ROLES

    return {"enum": list(ROLES)}


def _document(title: str, description: str | None, head: dict, defs: dict) -> dict:
    head = dict(head)
    head["title"] = title
    if description:
        head["description"] = description.strip().split("\n\n")[0].replace("\n", " ")
    return {"$schema": DIALECT, **head, "$defs": dict(sorted(defs.items()))}


def _prefixed(node: Any, prefix: str) -> Any:
    """`node` with its `$defs` names and the `$ref`s to them prefixed (to merge two)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and value.startswith("#/$defs/"):
                out[key] = "#/$defs/" + prefix + value[len("#/$defs/"):]
            elif key == "$defs":
                out[key] = {prefix + k: _prefixed(v, prefix) for k, v in value.items()}
            else:
                out[key] = _prefixed(value, prefix)
        return out
    if isinstance(node, list):
        return [_prefixed(v, prefix) for v in node]
    return node


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats (`3.0e6`, `1e-7`), as editors read them."""


_FLOAT12 = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$|"
                      r"^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$")
_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+.0123456789":
    _Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT12, [_first])
    # ints keep their own resolver, tried first: 20 stays an int


def load_yaml12(text: str) -> Any:
    """A YAML document as an editor's language server reads it (YAML 1.2 numbers)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
