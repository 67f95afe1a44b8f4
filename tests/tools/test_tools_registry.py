"""Registry and argument validation: unit tests (no sandbox process is started)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from tools.base import (
    Tool,
    ToolArgumentsError,
    ToolContext,
    ToolExecutionError,
    ToolResult,
    ToolSpec,
)
from tools.code import CodeTool
from tools.registry import (
    TOOLS,
    build_tools,
    register_tool,
    run_tool,
    specs_for_images,
    tool_specs,
    validate_arguments,
)
from tools.schema import check_arguments, example_arguments
from tools.search.search_tools import ImageSearchTool, TextSearchTool, WebVisitTool
from tools.zoom import ZoomTool


class Echo(Tool):
    """A minimal tool: returns its text, or fails the way it is told to."""

    name = "echo"
    title = "Echo"
    description = "Echo the text."
    kind = "io"
    parameters: dict[str, Any] = {  # noqa: RUF012
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1},
            "times": {"type": "integer", "minimum": 1, "maximum": 3},
            "mode": {"enum": ["plain", "loud"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        },
        "required": ["text"],
        "additionalProperties": False,
    }

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        if arguments["text"] == "fail":
            raise ToolExecutionError("the echo failed")
        return ToolResult(text=arguments["text"] * arguments.get("times", 1))


CONTEXT = ToolContext(image=b"")


def test_tools_declare_their_headers():
    for cls in (Echo, CodeTool, ZoomTool, TextSearchTool, ImageSearchTool, WebVisitTool):
        tool = cls()
        assert tool.spec() == ToolSpec(cls.name, cls.description, cls.parameters, cls.title)


def _declare(**header: Any) -> type[Tool]:
    attributes = {
        "name": "probe",
        "title": "Probe",
        "description": "Probe.",
        "kind": "io",
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
        "run": Echo.run,
        **header,
    }
    return type("Probe", (Tool,), attributes)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ({"name": "probe tool"}, "name 'probe tool' is not an identifier"),
        ({"title": ""}, "title must be a non-empty string"),
        ({"kind": "gpu"}, "kind must be one of"),
        ({"parameters": {"type": "array"}}, '"type": "object"'),
        (
            {"parameters": {"type": "object", "properties": {"x": {"type": "strng"}}}},
            "parameters.properties.x.type must be one of",
        ),
        (
            {"parameters": {"type": "object", "properties": {"x": {"maxitems": 2}}}},
            "parameters.properties.x uses 'maxitems', which tool schemas do not support",
        ),
        (
            {"parameters": {"type": "object", "properties": {}, "required": ["x"]}},
            "parameters.required must list names of its properties",
        ),
        (
            {"parameters": {"type": "object", "properties": {"x": {"minItems": -1}}}},
            "parameters.properties.x.minItems must be a whole number >= 0",
        ),
    ],
)
def test_a_bad_header_is_refused_when_the_class_is_defined(header, problem):
    assert _declare().name == "probe"
    with pytest.raises(TypeError, match="tool class Probe: ") as refused:
        _declare(**header)
    assert problem in str(refused.value)


def test_tool_specs_are_the_headers_shaped_by_the_settings():
    zoom, search = tool_specs(
        ["image_zoom_in_tool", "text_search"],
        image_zoom_in_tool={"coordinates": "absolute"},
        text_search={"max_queries": 2},
    )
    assert "absolute pixel coordinates" in zoom.description
    assert zoom.settings == {"coordinates": "absolute"} and zoom.title == ZoomTool.title
    assert search.parameters["properties"]["queries"]["maxItems"] == 2
    assert TextSearchTool.parameters["properties"]["queries"]["maxItems"] == 5
    assert ToolSpec.from_dict(zoom.to_dict()) == zoom


def test_a_multi_image_job_gets_headers_for_its_images():
    single = tool_specs(["code", "image_zoom_in_tool", "image_search", "text_search"])
    assert single == tool_specs(
        ["code", "image_zoom_in_tool", "image_search", "text_search"], images=1
    )
    assert specs_for_images(single, 1) == single
    code, zoom, image_search, text_search = specs_for_images(single, 3)
    assert code.description.startswith("run Python on the full-resolution images. `images` is")
    assert "`image` is `images[0]`" in code.description
    assert zoom.parameters["properties"]["image_index"] == {
        "type": "integer", "minimum": 0, "maximum": 2,
        "description": "Which image to zoom in on: 0 for the first image shown, 1 for the "
        "second, and so on (default 0).",
    }  # fmt: skip
    assert '"images[0]", "images[1]"' in image_search.description
    assert text_search == single[3]  # a tool that reads no image is told the same
    # Settings carry over; a tool nobody registered is kept as it is.
    absolute = tool_specs(["image_zoom_in_tool"], image_zoom_in_tool={"coordinates": "absolute"})
    (zoom,) = specs_for_images(absolute, 2)
    assert zoom.settings == {"coordinates": "absolute"} and "absolute pixel" in zoom.description
    ocr = ToolSpec("ocr", "read text")
    assert specs_for_images([ocr], 2) == (ocr,)


def test_calls_are_checked_against_the_schema_for_the_jobs_images():
    tools = build_tools(["image_zoom_in_tool"])
    call = {"bbox_2d": [0, 0, 10, 10], "image_index": 1}
    refused = run_tool(tools, "image_zoom_in_tool", call, CONTEXT)
    assert refused.error_type == "arguments" and "image_index" in refused.error
    two = ToolContext(image=b"", more_images=(b"",))
    out_of_range = run_tool(tools, "image_zoom_in_tool", {**call, "image_index": 2}, two)
    assert out_of_range.error_type == "arguments" and "at most 1" in out_of_range.error


def test_records_are_frozen():
    result = ToolResult(text="x")
    with pytest.raises(FrozenInstanceError):
        result.text = "y"  # type: ignore[misc]
    assert result.ok and result.images == () and result.error_type is None
    with pytest.raises(FrozenInstanceError):
        CONTEXT.image = b"x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"text": "hi"}, None),
        ({"text": "hi", "times": 3.0}, None),  # JSON 3.0 is an integer
        ("hi", "arguments must be an object, not a string"),
        ({}, "missing the required field 'text'"),
        ({"text": "hi", "colour": "red"}, "unknown field 'colour' (allowed: 'text', 'times'"),
        ({"text": 5}, "arguments.text must be a string, not an integer"),
        ({"text": ""}, "at least 1 character"),
        ({"text": "hi", "times": True}, "arguments.times must be an integer, not true or false"),
        ({"text": "hi", "times": 1.5}, "must be an integer, not a number"),
        ({"text": "hi", "times": 9}, "arguments.times must be at most 3"),
        ({"text": "hi", "mode": "quiet"}, 'must be one of "plain", "loud"'),
        ({"text": "hi", "tags": ["a", 1]}, "arguments.tags[1] must be a string"),
        ({"text": "hi", "tags": ["a", "b", "c"]}, "at most 2 item(s), not 3"),
        ({"text": "hi", "times": float("nan")}, "must be an integer, not a non-finite number"),
    ],
)
def test_validate_arguments(arguments, fragment):
    message = validate_arguments(Echo(), arguments)
    if fragment is None:
        assert message is None
    else:
        assert message is not None and fragment in message
        # Written for the model: names the tool and shows the expected shape.
        assert message.startswith("Invalid arguments for 'echo':")
        assert 'Expected arguments like {"text": "..."}' in message


def test_check_arguments_accepts_type_lists_and_null():
    schema = {"type": ["string", "null"]}
    assert check_arguments(None, schema, "x") is None
    assert check_arguments("a", schema, "x") is None
    assert check_arguments(1, schema, "x") == "x must be a string or null, not an integer"


def test_example_arguments():
    assert example_arguments(CodeTool.parameters) == {"code": "..."}
    assert example_arguments(ZoomTool().parameters) == {"bbox_2d": [0, 0, 0, 0]}
    every = example_arguments(WebVisitTool.parameters, optional=True)
    assert every == {"urls": ["..."], "goal": "..."}


def test_run_tool_keeps_bad_calls_and_failures_apart():
    tools = {"echo": Echo()}
    assert run_tool(tools, "echo", {"text": "ab", "times": 2}, CONTEXT) == ToolResult("abab")

    unknown = run_tool(tools, "shout", {}, CONTEXT)
    assert unknown.error == "Unknown tool 'shout'. Available tools: echo."
    assert unknown.error_type == "arguments"

    bad = run_tool(tools, "echo", {"txt": "x"}, CONTEXT)
    assert bad.error_type == "arguments" and "missing the required field 'text'" in bad.error

    failed = run_tool(tools, "echo", {"text": "fail"}, CONTEXT)
    assert failed.error == "the echo failed" and failed.error_type == "execution"
    assert not failed.ok


def test_error_classes_carry_their_kind():
    assert ToolResult.failure(ToolArgumentsError("x")).error_type == "arguments"
    assert ToolResult.failure(ToolExecutionError("y"), text="out").text == "out"


def test_build_tools_by_name_with_settings():
    tools = build_tools(
        ["image_zoom_in_tool", "code"],
        image_zoom_in_tool={"coordinates": "absolute"},
        code={"wall_s": 3, "pool_size": 0},
    )
    assert list(tools) == ["image_zoom_in_tool", "code"]
    assert "absolute pixel coordinates" in tools["image_zoom_in_tool"].description
    assert tools["code"]._config.limits.wall_s == 3  # type: ignore[attr-defined]


def test_build_tools_rejects_mistakes():
    with pytest.raises(ValueError, match="unknown tool 'cod'; known tools: code"):
        build_tools(["cod"])
    with pytest.raises(ValueError, match="settings given for tool 'code'"):
        build_tools(["image_zoom_in_tool"], code={"wall_s": 1})
    with pytest.raises(ValueError, match="bad settings for tool 'code': unknown sandbox setting"):
        build_tools(["code"], code={"wall_seconds": 1})
    with pytest.raises(ValueError, match="bad settings for tool 'image_zoom_in_tool'"):
        build_tools(["image_zoom_in_tool"], image_zoom_in_tool={"coords": "relative"})
    with pytest.raises(ValueError, match="coordinates must be one of"):
        build_tools(["image_zoom_in_tool"], image_zoom_in_tool={"coordinates": "pixels"})


def test_register_tool():
    register_tool("echo_test", Echo)
    try:
        assert isinstance(build_tools(["echo_test"])["echo_test"], Echo)
        with pytest.raises(ValueError, match="already registered"):
            register_tool("echo_test", Echo)
    finally:
        del TOOLS["echo_test"]


def test_code_tool_is_cheap_to_build_and_pickles_without_its_pool():
    tool = CodeTool(wall_s=2, max_images=3)
    assert tool._sandbox is None  # nothing started by construction
    copy = pickle.loads(pickle.dumps(tool))
    assert copy._config == tool._config and copy.description == tool.description


def test_code_tool_rejects_bad_calls_before_starting_anything():
    tools = {"code": CodeTool()}
    result = run_tool(tools, "code", {"code": 1}, CONTEXT)
    assert result.error_type == "arguments" and "arguments.code must be a string" in result.error
    empty = run_tool(tools, "code", {"code": "  \n"}, CONTEXT)
    assert empty.error == "The code is empty: write some Python."
    assert tools["code"]._sandbox is None


@pytest.mark.parametrize("module", ["tools.code", "tools.zoom", "tools.search.search_tools"])
def test_tools_do_not_import_the_registry(module):
    # The registry imports the tools (lazily); a tool importing the registry made a circle.
    code = f"import sys, {module}\nprint('tools.registry' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tools_import_neither_beam_nor_triton_nor_the_pipeline():
    code = (
        "import sys, tools.registry, tools.code, tools.zoom, tools.sandbox\n"
        "print([m for m in sys.modules if m.split('.')[0] in "
        "('apache_beam', 'tritonclient', 'beam_pipelines', 'torch')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
