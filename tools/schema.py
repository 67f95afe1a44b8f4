"""A small JSON-schema subset: tool headers are checked against it, calls against them.

Tool parameters are JSON schemas (the shape function-calling servers take). Only the part of
JSON schema that tool headers use is supported (``type``, ``properties``, ``required``,
``additionalProperties``, ``items``, ``minItems``/``maxItems``, ``enum``, string and number
bounds, and ``description``), and problems with a call are phrased for the model to read and
fix, so this is a dozen lines rather than a dependency on a full validator.
``schema_problem`` keeps a header inside that subset (``tools.base.Tool`` runs it when a tool
class is defined), so no keyword is silently ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

_NAMES = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "null",
}


def _is(value: Any, name: str) -> bool:
    # JSON semantics: a bool is not a number, 3.0 is an integer, NaN and infinities are not
    # numbers at all.
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list | tuple)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if name == "number":
        return math.isfinite(value)
    if name == "integer":
        return isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())
    return True  # an unknown type name constrains nothing


def _json_kind(value: Any) -> str:
    for name in ("boolean", "null", "object", "array", "string", "integer", "number"):
        if _is(value, name):
            return _NAMES[name]
    if isinstance(value, float):
        return "a non-finite number"
    return type(value).__name__


def check_arguments(value: Any, schema: Mapping[str, Any], path: str = "arguments") -> str | None:
    """The first problem with ``value`` against ``schema``, as a phrase naming ``path``."""
    expected = schema.get("type")
    if expected is not None:
        names = [expected] if isinstance(expected, str) else list(expected)
        if not any(_is(value, n) for n in names):
            want = " or ".join(_NAMES.get(n, n) for n in names)
            return f"{path} must be {want}, not {_json_kind(value)}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path} must be one of {', '.join(json.dumps(c) for c in schema['enum'])}"
    if isinstance(value, dict):
        return _check_object(value, schema, path)
    if isinstance(value, list | tuple):
        return _check_array(value, schema, path)
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            return f"{path} must have at least {schema['minLength']} character(s)"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{path} must have at most {schema['maxLength']} characters"
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{path} must be at least {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{path} must be at most {schema['maximum']}"
    return None


def _check_object(value: dict, schema: Mapping[str, Any], path: str) -> str | None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    for key in schema.get("required", ()):
        if key not in value:
            return f"{path} is missing the required field {key!r}"
    if schema.get("additionalProperties") is False:
        extra = [k for k in value if k not in properties]
        if extra:
            allowed = ", ".join(repr(k) for k in properties) or "none"
            return f"{path} has an unknown field {extra[0]!r} (allowed: {allowed})"
    for key, sub in properties.items():
        if key in value:
            problem = check_arguments(value[key], sub, f"{path}.{key}")
            if problem:
                return problem
    return None


def _check_array(value: list | tuple, schema: Mapping[str, Any], path: str) -> str | None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        return f"{path} must have at least {schema['minItems']} item(s), not {len(value)}"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return f"{path} must have at most {schema['maxItems']} item(s), not {len(value)}"
    items = schema.get("items")
    if isinstance(items, Mapping):
        for i, item in enumerate(value):
            problem = check_arguments(item, items, f"{path}[{i}]")
            if problem:
                return problem
    return None


def example_arguments(schema: Mapping[str, Any], *, optional: bool = False) -> dict[str, Any]:
    """Placeholder arguments showing the shape a schema wants: its required fields, and with
    ``optional`` every field, in the schema's order."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    keys = list(properties) if optional else schema.get("required", list(properties))
    return {key: _example(properties.get(key, {})) for key in keys}


def _example(schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1)
        return [_example(schema.get("items", {}))] * count
    if kind == "object":
        return example_arguments(schema)
    return {"string": "...", "integer": 0, "number": 0, "boolean": False}.get(kind, "...")


_KEYWORDS = {
    "type",
    "description",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
}
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength")


def schema_problem(schema: Any, path: str = "parameters") -> str | None:
    """What keeps ``schema`` outside the subset ``check_arguments`` understands, else None."""
    if not isinstance(schema, Mapping):
        return f"{path} must be a JSON schema object"
    unknown = sorted(set(schema) - _KEYWORDS)
    if unknown:
        return f"{path} uses {unknown[0]!r}, which tool schemas do not support"
    kinds = schema.get("type")
    names = [kinds] if isinstance(kinds, str) else kinds
    if kinds is not None and not (
        isinstance(names, list) and names and all(n in _NAMES for n in names)
    ):
        return f"{path}.type must be one of {', '.join(_NAMES)} (or a list of them)"
    if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
        return f"{path}.enum must be a non-empty list"
    if "description" in schema and not isinstance(schema["description"], str):
        return f"{path}.description must be a string"
    for key in _COUNTS:
        value = schema.get(key)
        if key in schema and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            return f"{path}.{key} must be a whole number >= 0"
    for key in ("minimum", "maximum"):
        if key in schema and not _is(schema[key], "number"):
            return f"{path}.{key} must be a number"
    if "additionalProperties" in schema and not isinstance(schema["additionalProperties"], bool):
        return f"{path}.additionalProperties must be true or false"
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        return f"{path}.properties must be an object"
    required = schema.get("required", [])
    if not isinstance(required, list) or any(key not in properties for key in required):
        return f"{path}.required must list names of its properties"
    for key, sub in properties.items():
        problem = schema_problem(sub, f"{path}.properties.{key}")
        if problem:
            return problem
    if "items" in schema:
        return schema_problem(schema["items"], f"{path}.items")
    return None
