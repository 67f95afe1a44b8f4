"""Tool registry: name -> tool factory, argument validation, and one safe way to call a tool.

``build_tools(["code", "image_zoom_in_tool"], code={"pool_size": 4})`` returns ready tool
objects keyed by name; settings are given per tool, and unknown tools or settings are errors
(a typo must not silently fall back to a default). ``run_tool`` is what a loop calls with the
model's call: it checks the name and the arguments against the tool's JSON schema and turns
every model-caused problem into a ``ToolResult`` whose error the model can read.

Validation covers the JSON-schema subset tool headers use: ``type`` (a name or a list),
``properties``, ``required``, ``additionalProperties: false``, ``items``, ``minItems``,
``maxItems``, ``enum``, ``minimum``, ``maximum``, ``minLength``, ``maxLength``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tools.base import Tool, ToolArgumentsError, ToolContext, ToolError, ToolResult

ToolFactory = Callable[..., Tool]


def _code_tool(**settings: Any) -> Tool:
    from tools.code import CodeTool

    return CodeTool(**settings)


def _zoom_tool(**settings: Any) -> Tool:
    from tools.zoom import ZoomTool

    return ZoomTool(**settings)


def _search_tool(name: str) -> ToolFactory:
    def build(**settings: Any) -> Tool:
        from tools.search import search_tools

        classes = {
            "text_search": search_tools.TextSearchTool,
            "image_search": search_tools.ImageSearchTool,
            "web_visit": search_tools.WebVisitTool,
        }
        return classes[name](**settings)

    return build


#: Known tools. Factories import lazily so that listing tools costs nothing.
TOOLS: dict[str, ToolFactory] = {
    "code": _code_tool,
    "image_zoom_in_tool": _zoom_tool,
    "text_search": _search_tool("text_search"),
    "image_search": _search_tool("image_search"),
    "web_visit": _search_tool("web_visit"),
}


def register_tool(name: str, factory: ToolFactory) -> None:
    """Make a tool buildable by name (search providers and the like register themselves)."""
    if name in TOOLS:
        raise ValueError(f"a tool named {name!r} is already registered")
    TOOLS[name] = factory


def build_tools(names: Iterable[str], **config: Mapping[str, Any]) -> dict[str, Tool]:
    """Tools by name, in the order given; ``config[name]`` holds that tool's settings."""
    names = list(names)
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise ValueError(f"unknown tool {unknown[0]!r}; known tools: {', '.join(sorted(TOOLS))}")
    stray = [n for n in config if n not in names]
    if stray:
        raise ValueError(f"settings given for tool {stray[0]!r}, which is not being built")
    tools: dict[str, Tool] = {}
    for name in names:
        settings = dict(config.get(name) or {})
        try:
            tools[name] = TOOLS[name](**settings)
        except TypeError as error:  # an unknown keyword: say which tool it was meant for
            raise ValueError(f"bad settings for tool {name!r}: {error}") from error
    return tools


def run_tool(
    tools: Mapping[str, Tool], name: str, arguments: Any, context: ToolContext
) -> ToolResult:
    """Call ``tools[name]`` with the model's arguments; model mistakes become error results."""
    tool = tools.get(name)
    if tool is None:
        available = ", ".join(tools) or "none"
        return ToolResult.failure(
            ToolArgumentsError(f"Unknown tool {name!r}. Available tools: {available}.")
        )
    problem = validate_arguments(tool, arguments)
    if problem is not None:
        return ToolResult.failure(ToolArgumentsError(problem))
    try:
        return tool.run(arguments, context)
    except ToolError as error:
        return ToolResult.failure(error)


def validate_arguments(tool: Tool, arguments: Any) -> str | None:
    """A message for the model when ``arguments`` do not fit ``tool.parameters``, else None."""
    problem = check_value(arguments, tool.parameters, "arguments")
    if problem is None:
        return None
    return (
        f"Invalid arguments for {tool.name!r}: {problem}. "
        f"Expected arguments like {json.dumps(example_arguments(tool.parameters))}."
    )


_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "null",
}


def _is_type(value: Any, name: str) -> bool:
    # JSON semantics: a bool is not a number, and 3.0 is an integer.
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
        if _is_type(value, name):
            return _TYPE_NAMES[name]
    if isinstance(value, float):
        return "a non-finite number"
    return type(value).__name__


def check_value(value: Any, schema: Mapping[str, Any], path: str) -> str | None:
    """The first way ``value`` breaks ``schema`` (as a phrase naming ``path``), or None."""
    expected = schema.get("type")
    if expected is not None:
        names = [expected] if isinstance(expected, str) else list(expected)
        if not any(_is_type(value, n) for n in names):
            want = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
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
            problem = check_value(value[key], sub, f"{path}.{key}")
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
            problem = check_value(item, items, f"{path}[{i}]")
            if problem:
                return problem
    return None


def example_arguments(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Placeholder arguments showing the shape a schema wants (required fields only)."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    required = schema.get("required", list(properties))
    return {key: _example(properties.get(key, {})) for key in required}


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
