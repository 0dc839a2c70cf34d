"""The JSON Schema of a cell-test protocol, from its pydantic models (`RunKind.schema`)."""

from __future__ import annotations

from lipon_hw.json_schema import document, models_schema, step_schema


def protocol_schema() -> dict:
    """A cell-test protocol (`kind: cycling`)."""
    from lipon_hw.celltest import protocol_schema as ps

    kinds = ps.STEP_KINDS
    defs, refs = models_schema([ps._Head, ps.Loop, *kinds.values()])
    head = defs.pop(refs[ps._Head]["$ref"].rsplit("/", 1)[1])
    defs["Step"] = step_schema(kinds, refs, defs, {
        "tag": {"type": "string", "minLength": 1,
                "description": "a name a loop or a goto jumps back to"},
        "loop": refs[ps.Loop]})
    for spec in (head, defs["ProtocolSpec"]):
        spec["properties"]["steps"]["items"] = {"$ref": "#/$defs/Step"}
    for model in kinds.values():  # a goto names one of the step's own end conditions
        goto = defs[model.__name__]["properties"]["goto"]
        goto["propertyNames"] = {"enum": list(ps.Until.model_fields)}
    return document("lipon-hw cell-test protocol", None, head, defs)
