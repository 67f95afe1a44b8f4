"""The r1v4 and zoom protocols: parsing every well- and malformed turn, rendering, prompts."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipelines.agent.protocols import (
    PROTOCOLS,
    ZOOM_TOOL,
    ParsedTurn,
    TaggedProtocol,
    get_protocol,
)
from beam_pipelines.agent.records import ImageRef, Job, Observation, ToolCall
from tools.base import ToolSpec
from tools.registry import tool_specs

R1V4 = get_protocol("r1v4")
ZOOM = get_protocol("zoom")
REF = ImageRef("images/x.png", "x", 64, 64)


def call(name: str, **arguments: object) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


def assert_error(parsed: ParsedTurn, *fragments: str) -> None:
    assert parsed.error is not None, parsed
    assert parsed.answer is None and parsed.tool_calls == ()
    for fragment in fragments:
        assert fragment in parsed.error, parsed.error


# -- never raises ---------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<tool_call>",
        "</tool_call>",
        "<answer>",
        "</answer>",
        "<code>",
        "</code>",
        "<text_search>",
        "<web_content>",
        '{"name": "code", ',
        '"arguments": {"code": "print(1)"}}',
        "{",
        "}",
        "[",
        "]",
        '"',
        "'",
        "\\",
        "\n",
        " ",
        "A",
        "<|im_end|>",
        "```",
        "null",
        "1e999",
        '{"name": 1}',
        "\x00",
        "\ud800",
    ]
)
_TEXTS = st.one_of(
    st.text(),
    st.lists(st.one_of(_PIECES, st.text(max_size=5)), max_size=30).map("".join),
)


@settings(max_examples=400, deadline=None)
@given(text=_TEXTS, protocol=st.sampled_from(sorted(PROTOCOLS)))
def test_parse_never_raises(text: str, protocol: str) -> None:
    parsed = get_protocol(protocol).parse(text)
    assert isinstance(parsed, ParsedTurn)
    # Exactly one of: an answer, tool calls, an error.
    assert sum([parsed.answer is not None, bool(parsed.tool_calls), parsed.error is not None]) == 1


_NO_TAGS = st.text().filter(lambda t: "<" not in t and t.strip() == t)
# Generation stops at the first "</tool_call>" (a stop string), so no turn holds one inside
# its call's JSON.
_CODE = st.text().filter(lambda t: "</tool_call>" not in t)


@settings(max_examples=200, deadline=None)
@given(think=_NO_TAGS, code=_CODE, answer=_NO_TAGS.filter(bool))
def test_well_formed_turns_parse_back_exactly(think: str, code: str, answer: str) -> None:
    for text in (
        f"<think>{think}</think>" + call("code", code=code),
        f"<think>{think}</think>\n<tool_call>"
        + json.dumps({"name": "code", "arguments": {"code": code}}, ensure_ascii=False)
        + "</tool_call>",
    ):
        parsed = R1V4.parse(text)
        assert parsed == ParsedTurn(think=think, tool_calls=(ToolCall("code", {"code": code}),))
    parsed = R1V4.parse(f"<think>{think}</think><answer>{answer}</answer>")
    assert parsed == ParsedTurn(think=think, answer=answer)


def test_parse_survives_pathological_inputs() -> None:
    for text in [
        "<think>x</think><tool_call>" + "[" * 100_000 + "</tool_call>",
        "<think>x</think><tool_call>" + "{'a': " * 5_000 + "</tool_call>",
        "<think>" + "x" * 1_000_000 + "</think><answer>A</answer>",
        None,
        b"<think>bytes</think>",
    ]:
        assert isinstance(R1V4.parse(text), ParsedTurn)  # type: ignore[arg-type]


# -- well-formed turns ----------------------------------------------------------------------


def test_answer() -> None:
    parsed = R1V4.parse("<think>The cup is red.</think><answer>B</answer>")
    assert parsed == ParsedTurn(think="The cup is red.", answer="B")


def test_tool_call() -> None:
    parsed = R1V4.parse("<think>zoom</think>" + call("code", code="print(1)"))
    assert parsed.error is None
    assert parsed.think == "zoom"
    assert parsed.tool_calls == (ToolCall("code", {"code": "print(1)"}),)


def test_whitespace_and_newlines_between_parts_are_fine() -> None:
    text = (
        "\n<think>\nlook\n</think>\n\n<tool_call>\n"
        + json.dumps({"name": "code", "arguments": {"code": "x"}})
        + "\n</tool_call>\n"
    )
    assert R1V4.parse(text).tool_calls == (ToolCall("code", {"code": "x"}),)


def test_stop_string_left_out_by_the_server_is_accepted() -> None:
    text = '<think>t</think><tool_call>{"name": "code", "arguments": {"code": "x"}}'
    assert R1V4.parse(text).tool_calls == (ToolCall("code", {"code": "x"}),)
    assert R1V4.parse("<think>t</think><answer>C").answer == "C"


def test_end_of_turn_token_after_the_action_is_ignored() -> None:
    assert R1V4.parse("<think>t</think><answer>C</answer><|im_end|>").answer == "C"


def test_literal_newlines_inside_json_strings_are_accepted() -> None:
    text = (
        '<think>t</think><tool_call>{"name": "code", "arguments": {"code": "a = 1\nprint(a)"}}'
        "</tool_call>"
    )
    assert R1V4.parse(text).tool_calls[0].arguments == {"code": "a = 1\nprint(a)"}


def test_all_r1v4_tools() -> None:
    for name, arguments in [
        ("text_search", {"queries": ["red cup brand"]}),
        ("image_search", {"image_paths": ["<sub-image 1>"]}),
        ("web_visit", {"urls": ["https://example.org"], "goal": "find the year"}),
        ("web_visit", {"urls": ["https://example.org"]}),
    ]:
        parsed = R1V4.parse("<think>t</think>" + call(name, **arguments))
        assert parsed.tool_calls == (ToolCall(name, arguments),), parsed.error


# -- one case per malformed form ------------------------------------------------------------


def test_malformed_json() -> None:
    parsed = R1V4.parse(
        '<think>t</think><tool_call>{"name": "code", "arguments": {"code": }}</tool_call>'
    )
    assert_error(parsed, "not valid JSON", '{"name"')
    assert parsed.think == "t"


def test_trailing_text_after_tool_call() -> None:
    assert_error(
        R1V4.parse("<think>t</think>" + call("code", code="x") + " Let me wait."),
        "after </tool_call>",
        "Let me wait.",
    )


def test_trailing_text_after_answer() -> None:
    assert_error(
        R1V4.parse("<think>t</think><answer>B</answer> because it is red"), "after </answer>"
    )


def test_single_quoted_pseudo_json() -> None:
    parsed = R1V4.parse(
        "<think>t</think><tool_call>{'name': 'code', 'arguments': {'code': 'x'}}</tool_call>"
    )
    assert_error(parsed, "single quotes", "double quotes")


def test_two_tool_calls_in_one_turn() -> None:
    text = "<think>t</think>" + call("code", code="a") + call("code", code="b")
    assert_error(R1V4.parse(text), "more than one tool call")
    assert_error(
        R1V4.parse(text.replace("</tool_call><tool_call>", "</tool_call>\n<tool_call>")), "one tool"
    )


def test_tool_call_and_answer_in_one_turn() -> None:
    assert_error(
        R1V4.parse("<think>t</think>" + call("code", code="a") + "<answer>A</answer>"), "not both"
    )
    assert_error(
        R1V4.parse("<think>t</think><answer>A</answer>" + call("code", code="a")), "not both"
    )


def test_missing_closing_think() -> None:
    assert_error(R1V4.parse("<think>t" + call("code", code="a")), "</think>")


def test_missing_opening_think() -> None:
    assert_error(R1V4.parse("t</think><answer>A</answer>"), "start with <think>")
    assert_error(R1V4.parse("<answer>A</answer>"), "start with <think>")


def test_unknown_tool() -> None:
    parsed = R1V4.parse("<think>t</think>" + call("calculator", x=1))
    assert_error(parsed, "Unknown tool 'calculator'", "code, text_search, image_search, web_visit")


def test_unknown_tool_is_checked_against_the_enabled_tools() -> None:
    text = "<think>t</think>" + call("text_search", queries=["a"])
    assert_error(
        R1V4.parse(text, tools=["code"]), "Unknown tool 'text_search'", "Available tools: code"
    )
    assert_error(R1V4.parse(text, tools=[]), "no tools are available")
    assert R1V4.parse(text, tools=["code", "text_search"]).error is None


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("code", {"code": ["print(1)"]}),
        ("text_search", {"queries": "red cup"}),
        ("code", {"source": "x"}),
        ("code", {"code": "x", "timeout": 3}),
    ],
)
def test_arguments_are_left_to_the_tool(name: str, arguments: dict) -> None:
    # A call is validated once, where it is run (tools.registry.run_tool): the parser only
    # reads the turn, so a bad call reaches the tool and comes back as its arguments error.
    parsed = R1V4.parse("<think>t</think>" + call(name, **arguments))
    assert parsed.tool_calls == (ToolCall(name, arguments),)


def test_arguments_must_be_an_object_and_name_present() -> None:
    assert_error(
        R1V4.parse('<think>t</think><tool_call>{"name": "code", "arguments": "x"}</tool_call>'),
        "must be a JSON object",
    )
    assert_error(
        R1V4.parse('<think>t</think><tool_call>{"name": "code"}</tool_call>'), '"arguments"'
    )
    assert_error(R1V4.parse('<think>t</think><tool_call>{"arguments": {}}</tool_call>'), '"name"')
    assert_error(R1V4.parse('<think>t</think><tool_call>["code"]</tool_call>'), "JSON object")


def test_a_given_tool_is_enabled_by_its_spec() -> None:
    tool = ToolSpec("ocr", "Read text.", {"type": "object"})
    ok = "<think>t</think>" + call("ocr", box=[1.5])
    assert R1V4.parse(ok, tools=[tool]).tool_calls == (ToolCall("ocr", {"box": [1.5]}),)
    assert_error(R1V4.parse(ok), "Unknown tool 'ocr'")


def test_neither_tool_call_nor_answer() -> None:
    assert_error(R1V4.parse("<think>t</think>"), "exactly one action")
    assert_error(
        R1V4.parse("<think>t</think>The answer is B."), "neither a <tool_call> nor an <answer>"
    )


def test_text_between_think_and_action() -> None:
    assert_error(R1V4.parse("<think>t</think>So:<answer>B</answer>"), "between </think>")


def test_empty_reply_and_empty_answer() -> None:
    assert_error(R1V4.parse("   "), "empty")
    assert_error(R1V4.parse("<think>t</think><answer> </answer>"), "<answer> is empty")


def test_error_messages_address_the_model() -> None:
    # Every message tells the model what to do next, in one or two sentences.
    for text in [
        "",
        "x",
        "<think>x",
        "<think>x</think>",
        "<think>x</think><tool_call>{</tool_call>",
    ]:
        error = R1V4.parse(text).error
        assert error and len(error) < 400 and "<" in error


# -- the older one-tag-per-tool format ------------------------------------------------------


def test_legacy_code_tag() -> None:
    parsed = R1V4.parse(
        "<think>crop</think><code>\ncrop = image.crop((0, 0, 10, 10))\nsave_image(crop)\n</code>"
    )
    assert parsed.tool_calls == (
        ToolCall("code", {"code": "crop = image.crop((0, 0, 10, 10))\nsave_image(crop)"}),
    )


def test_legacy_code_tag_with_fence() -> None:
    parsed = R1V4.parse("<think>t</think><code>```python\nprint(1)\n```</code>")
    assert parsed.tool_calls == (ToolCall("code", {"code": "print(1)"}),)


def test_legacy_search_and_visit_tags() -> None:
    assert R1V4.parse(
        "<think>t</think><text_search>red cup\nblue cup</text_search>"
    ).tool_calls == (ToolCall("text_search", {"queries": ["red cup", "blue cup"]}),)
    assert R1V4.parse('<think>t</think><text_search>["a b"]</text_search>').tool_calls == (
        ToolCall("text_search", {"queries": ["a b"]}),
    )
    assert R1V4.parse("<think>t</think><image_search><sub-image 2></image_search>").tool_calls == (
        ToolCall("image_search", {"image_paths": ["<sub-image 2>"]}),
    )
    assert R1V4.parse("<think>t</think><web_content>https://a.org</web_content>").tool_calls == (
        ToolCall("web_visit", {"urls": ["https://a.org"]}),
    )


def test_legacy_tag_for_a_disabled_tool_is_unknown() -> None:
    assert_error(
        R1V4.parse("<think>t</think><text_search>x</text_search>", tools=["code"]), "Unknown tool"
    )


# -- real R1V4-style multi-turn texts -------------------------------------------------------

R1V4_TURNS = [
    (
        "<think>The question asks for the color of the cup on the table at the far right. The "
        "image is large and the cup is small, so I should crop the right third of the image "
        "and look closer.</think>\n"
        '<tool_call>{"name": "code", "arguments": {"code": "w, h = image.size\\n'
        "crop = image.crop((int(w * 0.66), int(h * 0.4), w, int(h * 0.8)))\\n"
        "crop = crop.resize((crop.width * 2, crop.height * 2))\\n"
        'save_image(crop)\\nprint(crop.size)"}}</tool_call>',
        ToolCall(
            "code",
            {
                "code": "w, h = image.size\ncrop = image.crop((int(w * 0.66), int(h * 0.4), w, "
                "int(h * 0.8)))\ncrop = crop.resize((crop.width * 2, crop.height * 2))\n"
                "save_image(crop)\nprint(crop.size)"
            },
        ),
    ),
    (
        "<think>In <sub-image 1> the cup is visible next to a laptop; it is clearly red with a "
        "white logo. Let me check the logo text with another zoom on sub_image_1.</think>"
        '<tool_call>{"name": "code", "arguments": {"code": "c = sub_image_1.crop((100, 50, '
        '300, 200))\\nsave_image(c.resize((800, 600)))"}}</tool_call>',
        ToolCall(
            "code",
            {"code": "c = sub_image_1.crop((100, 50, 300, 200))\nsave_image(c.resize((800, 600)))"},
        ),
    ),
    (
        '<think>The logo reads "Café Nero". I want to confirm the brand color.</think>'
        '<tool_call>{"name": "text_search", "arguments": {"queries": ["Café Nero cup color", '
        '"Caffè Nero logo"]}}</tool_call>',
        ToolCall("text_search", {"queries": ["Café Nero cup color", "Caffè Nero logo"]}),
    ),
]
R1V4_FINAL = (
    "<think>Both the zoomed crop and the search results agree the cup is red, which is option "
    "B.</think>\n<answer>B</answer>"
)


def test_real_multi_turn_r1v4_texts() -> None:
    for text, expected in R1V4_TURNS:
        parsed = R1V4.parse(text)
        assert parsed.error is None, parsed.error
        assert parsed.tool_calls == (expected,)
        assert parsed.think and "</think>" not in parsed.think
    final = R1V4.parse(R1V4_FINAL)
    assert final.answer == "B" and final.think.startswith("Both")


def test_think_may_mention_tags() -> None:
    text = "<think>I will use <tool_call> with the code tool, then <answer>.</think>" + call(
        "code", code="x"
    )
    assert R1V4.parse(text).tool_calls == (ToolCall("code", {"code": "x"}),)


# -- observation rendering -------------------------------------------------------------------


def test_observation_numbering_and_search_results() -> None:
    results = [json.dumps([{"title": "t", "url": "u", "snippet": "s"}])]
    obs = Observation(text=results[0], tool="text_search")
    rendered = R1V4.render_observation([obs], 5)
    assert rendered.startswith("<observation>") and rendered.endswith("</observation>")
    payload = json.loads(rendered[len("<observation>") : -len("</observation>")])
    assert payload == {"result": results[0], "type": "text_search"}


def test_format_error_observation() -> None:
    rendered = R1V4.render_format_error("Bad JSON.")
    assert rendered == '<observation>{"error": "Bad JSON.", "type": "format"}</observation>'


def test_system_prompt_lists_only_enabled_tools_and_generic_ones() -> None:
    ocr = ToolSpec(
        "ocr",
        "Read the text in a region.",
        {
            "type": "object",
            "properties": {"box": {"type": "array", "items": {"type": "integer"}}},
            "required": ["box"],
        },
    )
    prompt = R1V4.system_prompt([ocr, *tool_specs(["text_search"])])
    assert "1. Text search (text_search)" in prompt
    assert "2. ocr: Read the text in a region." in prompt
    assert '<tool_call>{"name": "ocr", "arguments": {"box": [0]}}</tool_call>' in prompt
    assert "(code)" not in prompt and "web_visit" not in prompt


# -- zoom -------------------------------------------------------------------------------------


def zoom_call(**arguments: object) -> str:
    return (
        "<tool_call>\n" + json.dumps({"name": ZOOM_TOOL, "arguments": arguments}) + "\n</tool_call>"
    )


def test_zoom_tool_call() -> None:
    parsed = ZOOM.parse(
        "<think>the sign is top left</think>\n"
        + zoom_call(bbox_2d=[10, 20, 300, 400], label="sign")
    )
    assert parsed.tool_calls == (
        ToolCall(ZOOM_TOOL, {"bbox_2d": [10, 20, 300, 400], "label": "sign"}),
    )


def test_zoom_checks_the_tool_not_the_box() -> None:
    box = "<think>t</think>" + zoom_call(bbox_2d=[1, 2, 3])
    assert ZOOM.parse(box).tool_calls == (ToolCall(ZOOM_TOOL, {"bbox_2d": [1, 2, 3]}),)
    assert_error(
        ZOOM.parse("<think>t</think>" + call("code", code="x")), "Unknown tool 'code'", ZOOM_TOOL
    )


@pytest.mark.parametrize(
    ("coordinates", "stated", "not_stated"),
    [("relative", "0 to 1000", "absolute pixel"), ("absolute", "absolute pixel", "0 to 1000")],
)
def test_zoom_prompt_states_the_tools_coordinates(
    coordinates: str, stated: str, not_stated: str
) -> None:
    specs = tool_specs(["image_zoom_in_tool"], image_zoom_in_tool={"coordinates": coordinates})
    prompt = ZOOM.system_prompt(specs)
    assert stated in prompt and not_stated not in prompt
    assert ZOOM.options() == {}


def test_zoom_prompt_renders_the_headers_it_is_given() -> None:
    prompt = ZOOM.system_prompt([ToolSpec(ZOOM_TOOL, "whatever", {"type": "object"})])
    assert '"description": "whatever", "parameters": {"type": "object"}' in prompt


def test_zoom_observation_and_user_text() -> None:
    rendered = ZOOM.render_observation([Observation(text="", images=(REF,), tool=ZOOM_TOOL)], 2)
    assert rendered == "<tool_response>\n<sub-image 2>\n</tool_response>"
    error = ZOOM.render_observation([Observation(text="", error="box is empty", tool=ZOOM_TOOL)], 2)
    assert error == "<tool_response>\nError: box is empty\n</tool_response>"
    job = Job(id="1", image="a", question="Q?", options=("x", "y"))
    assert ZOOM.user_text(job).startswith("Q?\nOptions:\nA. x\nB. y\n")
    assert "image_zoom_in_tool" in ZOOM.user_text(job)


def test_get_protocol_rejects_unknowns() -> None:
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("react")
    with pytest.raises(ValueError):
        get_protocol("zoom", coordinates="relative")  # the tool's setting, not the protocol's
    with pytest.raises(ValueError):
        get_protocol("r1v4", colour="red")
    assert all(issubclass(cls, TaggedProtocol) for cls in PROTOCOLS.values())
