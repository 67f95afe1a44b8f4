"""A small JSON-schema subset for checking tool-call arguments inside the parser.

Tool parameters are JSON schemas (the shape function-calling servers take). The parser only
needs the part of JSON schema that tool headers use (``type``, ``properties``, ``required``,
``additionalProperties``, ``items``, ``minItems``/``maxItems``, ``enum``), and it needs the
problems phrased for the model to read and fix, so this is a dozen lines rather than a
dependency on a full validator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
    "null": (type(None),),
}
_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def _is(value: Any, type_name: str) -> bool:
    # JSON has no separate bool: keep true/false out of the numeric types.
    if isinstance(value, bool) and type_name in ("integer", "number"):
        return False
    if type_name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(type_name, object))


def _json_kind(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is(value, name):
            return _NAMES[name]
    return type(value).__name__


def check_arguments(value: Any, schema: Mapping[str, Any], path: str = "arguments") -> str | None:
    """The first problem with ``value`` against ``schema``, as a sentence, or None if it fits."""
    expected = schema.get("type")
    if expected is not None:
        names = [expected] if isinstance(expected, str) else list(expected)
        if not any(_is(value, n) for n in names):
            want = " or ".join(_NAMES.get(n, n) for n in names)
            return f"{path} must be {want}, not {_json_kind(value)}"
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(repr(c) for c in schema["enum"])
        return f"{path} must be one of {choices}"
    if isinstance(value, dict):
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
    if isinstance(value, list | tuple):
        if "minItems" in schema and len(value) < schema["minItems"]:
            return f"{path} must have at least {schema['minItems']} item(s), got {len(value)}"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{path} must have at most {schema['maxItems']} item(s), got {len(value)}"
        items = schema.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                problem = check_arguments(item, items, f"{path}[{i}]")
                if problem:
                    return problem
    return None


def example_arguments(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Placeholder arguments for a prompt's format line, from a tool's parameter schema."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    keys = list(schema.get("required") or properties)
    return {k: _placeholder(properties.get(k, {})) for k in keys}


def _placeholder(schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    if kind == "array":
        return [_placeholder(schema.get("items", {"type": "string"}))]
    if kind == "object":
        return {}
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return True
    return "..."
