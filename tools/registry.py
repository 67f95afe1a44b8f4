"""Tool registry: name -> tool factory, the tools' headers, and one safe way to call a tool.

``build_tools(["code", "image_zoom_in_tool"], code={"pool_size": 4})`` returns ready tool
objects keyed by name; settings are given per tool, and unknown tools or settings are errors
(a typo must not silently fall back to a default). ``tool_specs`` takes the same arguments and
returns the tools' headers (``ToolSpec``), shaped by those settings: what protocols render
prompts from. ``run_tool`` is what a loop calls with the model's call: it is the one place a
call is validated (the name, then the arguments against the tool's JSON schema), and it turns
every model-caused problem into a ``ToolResult`` whose error the model can read.

Validation covers the JSON-schema subset tool headers use: ``type`` (a name or a list),
``properties``, ``required``, ``additionalProperties: false``, ``items``, ``minItems``,
``maxItems``, ``enum``, ``minimum``, ``maximum``, ``minLength``, ``maxLength``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tools.base import Tool, ToolArgumentsError, ToolContext, ToolError, ToolResult, ToolSpec
from tools.schema import check_arguments, example_arguments

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
        except (TypeError, ValueError) as error:  # unknown or bad settings: say for which tool
            raise ValueError(f"bad settings for tool {name!r}: {error}") from error
    return tools


def tool_specs(
    names: Iterable[str], images: int = 1, **config: Mapping[str, Any]
) -> tuple[ToolSpec, ...]:
    """The headers of the tools ``build_tools(names, **config)`` builds, with their settings,
    as a job of ``images`` images is told them (``Tool.spec``)."""
    return tuple(
        dataclasses.replace(tool.spec(images), settings=dict(config.get(name) or {}))
        for name, tool in build_tools(names, **config).items()
    )


@functools.lru_cache(maxsize=256)
def _specs_for_images(key: str, images: int) -> tuple[ToolSpec, ...]:
    specs = [ToolSpec.from_dict(d) for d in json.loads(key)]
    return tuple(
        tool_specs([spec.name], images, **{spec.name: spec.settings})[0]
        if spec.name in TOOLS
        else spec
        for spec in specs
    )


def specs_for_images(specs: Sequence[ToolSpec], images: int) -> tuple[ToolSpec, ...]:
    """The headers ``specs`` become for a job of ``images`` images.

    For one image, ``specs`` themselves. Otherwise each known tool is built again with the
    settings its spec records and gives its header for that many images (a tool that can work
    on any of them says how to choose one); a spec of a tool not registered here is kept.
    """
    if images == 1:
        return tuple(specs)
    key = json.dumps([spec.to_dict() for spec in specs], sort_keys=True)
    return _specs_for_images(key, images)


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
    problem = validate_arguments(tool, arguments, len(context.images))
    if problem is not None:
        return ToolResult.failure(ToolArgumentsError(problem))
    try:
        return tool.run(arguments, context)
    except ToolError as error:
        return ToolResult.failure(error)


def validate_arguments(tool: Tool, arguments: Any, images: int = 1) -> str | None:
    """A message for the model when ``arguments`` do not fit the tool's schema for a job of
    ``images`` images (``tool.parameters`` for one), else None."""
    parameters = tool.parameters_for(images)
    problem = check_arguments(arguments, parameters)
    if problem is None:
        return None
    return (
        f"Invalid arguments for {tool.name!r}: {problem}. "
        f"Expected arguments like {json.dumps(example_arguments(parameters))}."
    )
