"""The JSON Schema of a deposition recipe, from its pydantic models (`RunKind.schema`)."""

from __future__ import annotations

from lipon_hw.json_schema import document, models_schema, roles, step_schema


def recipe_schema() -> dict:
    """A deposition recipe (`kind: deposition`, the default)."""
    from lipon_hw.deposition import recipe as rc

    kinds = rc.STEP_KINDS
    defs, refs = models_schema([rc._RecipeHead, *dict.fromkeys(kinds.values())])
    head = defs.pop(refs[rc._RecipeHead]["$ref"].rsplit("/", 1)[1])
    defs["Step"] = step_schema(kinds, refs, defs)
    head["properties"]["steps"]["items"] = {"$ref": "#/$defs/Step"}
    head["properties"]["instruments"]["propertyNames"] = roles()
    head["properties"]["interlocks"]["items"] = {"$ref": "#/$defs/RuleSpec"}
    defs["RuleSpec"]["properties"]["during"]["items"] = {"enum": list(kinds)}
    return document("lipon-hw deposition recipe", rc.__doc__, head, defs)
