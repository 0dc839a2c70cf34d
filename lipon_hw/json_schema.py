"""JSON Schema of sequence files and station files, from the pydantic models.

`lipon-hw schema [sequence|station|KIND]` prints these (each run kind supplies its
own: `RunKind.schema`), for editors: with the
YAML language server, a first line `# yaml-language-server: $schema=<file>` gives
completion, units and ranges while a recipe is typed. The schemas say what the models
say — every number's range and unit (`ranges.Span`), every default, unknown keys
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


def models_schema(models: list[type[BaseModel]]) -> tuple[dict, dict[type, dict]]:
    """The models' schemas with one shared `$defs`: ({name: def}, {model: its $ref})."""
    refs, top = models_json_schema([(m, "validation") for m in models],
                                   ref_template="#/$defs/{model}")
    return top.get("$defs", {}), {m: refs[(m, "validation")] for m in models}


def step_schema(kinds: dict[str, type[BaseModel]], refs: dict[type, dict],
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


def sequence_schema() -> dict:
    """Any sequence file, as `lipon-hw run` tells them apart: each run kind's schema when
    `kind:` names it; a file without `kind:` is a recipe (`kinds.UNTYPED`)."""
    from lipon_hw.kinds import UNTYPED, all_kinds

    kinds = sorted(all_kinds().values(), key=lambda k: k.document_kind != UNTYPED)
    defs: dict = {}
    for kind in kinds:
        part = prefixed(kind.schema(), f"{kind.document_kind}.")
        defs.update(part.pop("$defs", {}))
        part.pop("$schema", None)
        defs[kind.document_kind] = part
    chain: dict = {"$ref": f"#/$defs/{UNTYPED}"}
    for kind in kinds:
        if kind.document_kind != UNTYPED:
            chain = {"if": {"type": "object", "required": ["kind"],
                            "properties": {"kind": {"const": kind.document_kind}}},
                     "then": {"$ref": f"#/$defs/{kind.document_kind}"}, "else": chain}
    names = ", ".join(f"`kind: {k.document_kind}`" for k in kinds)
    return {"$schema": DIALECT, "title": "lipon-hw sequence",
            "description": f"A sequence of one kind of run ({names}); without `kind:` a "
                           f"{UNTYPED} recipe.", **chain, "$defs": defs}


def station_schema() -> dict:
    """A station file; a built-in driver's `limits` keys and ranges, and its settings'
    names, come from the driver class."""
    from lipon_hw import station as st
    from lipon_hw.drivers import DRIVERS

    defs, refs = models_schema([st.StationSpec])
    head = defs.pop("StationSpec")
    head["properties"]["tools"]["additionalProperties"]["propertyNames"] = roles()
    inst = defs["InstrumentSpec"]
    inst["properties"]["driver"] = {
        "anyOf": [{"enum": sorted(DRIVERS)}, {"type": "string"}], "title": "Driver",
        "description": "a built-in driver, or a plug-in of the lipon_hw.drivers entry points"}
    inst["allOf"] = [_driver_rules(key, st.driver_class(key)) for key in sorted(DRIVERS)]
    return document("lipon-hw station file", None, head, defs)


#: other names of a kind's schema, as `lipon-hw schema` took them before kinds had their own
ALIASES = {"recipe": "deposition", "protocol": "cycling"}


def names() -> list[str]:
    """What `lipon-hw schema` can print: sequence, station, and each run kind's sequences."""
    from lipon_hw.kinds import all_kinds

    return ["sequence", "station", *sorted(k.document_kind for k in all_kinds().values()),
            *ALIASES]


def schema(name: str) -> dict:
    """The JSON Schema of `name`, one of `names()`."""
    from lipon_hw.kinds import all_kinds

    if name == "sequence":
        return sequence_schema()
    if name == "station":
        return station_schema()
    by_document = {k.document_kind: k for k in all_kinds().values()}
    return by_document[ALIASES.get(name, name)].schema()


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


def roles() -> dict:
    from lipon_hw.station import ROLES

    return {"enum": list(ROLES)}


def document(title: str, description: str | None, head: dict, defs: dict) -> dict:
    head = dict(head)
    head["title"] = title
    if description:
        head["description"] = description.strip().split("\n\n")[0].replace("\n", " ")
    return {"$schema": DIALECT, **head, "$defs": dict(sorted(defs.items()))}


def prefixed(node: Any, prefix: str) -> Any:
    """`node` with its `$defs` names and the `$ref`s to them prefixed (to merge two)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and value.startswith("#/$defs/"):
                out[key] = "#/$defs/" + prefix + value[len("#/$defs/"):]
            elif key == "$defs":
                out[key] = {prefix + k: prefixed(v, prefix) for k, v in value.items()}
            else:
                out[key] = prefixed(value, prefix)
        return out
    if isinstance(node, list):
        return [prefixed(v, prefix) for v in node]
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
