"""Golden tests against Skywork-R1V4's released material (docs/formats.md, "Against the
released R1V4 material").

Sources, quoted verbatim below where a test pins them:

- REPORT: the R1V4 report, ``Skywork_R1V4.pdf`` in ``SkyworkAI/Skywork-R1V`` at b806cef:
  Table 1 (the system prompt for think-with-image and search tasks), Figures 5-7 (trajectories).
- PARSE_UTILS: ``r1v4/parse_utils.py`` at b806cef (``parse_full_response`` and its sample).
- DEEPRESEARCH: ``r1v4/inference/request_deepresearch.py`` at fdfbb84 (the search observations'
  JSON schemas; the file is gone by b806cef).

A failure here means our rendering or parsing drifted from the released texts. The ``r1v4``
protocol's own texts stay frozen (tests/agent/test_prompts_golden.py): where they differ from
these, the difference is listed in docs/formats.md, and ``r1v4-release`` carries the released
wording.
"""

import json

import pytest

from beam_pipelines.agent.protocols import get_protocol
from beam_pipelines.agent.records import LETTERS, ImageRef, Job, Observation, ToolCall, parse_choice
from tools.base import ToolContext
from tools.registry import tool_specs
from tools.search.results import ImageHit, TextHit, hits_json
from tools.search.search_tools import image_for

R1V4 = get_protocol("r1v4")
RELEASE = get_protocol("r1v4-release")
BOTH = pytest.mark.parametrize("protocol", [R1V4, RELEASE], ids=["r1v4", "r1v4-release"])
CODE, TEXT_SEARCH, IMAGE_SEARCH, WEB_VISIT = tool_specs(
    ["code", "text_search", "image_search", "web_visit"]
)
REF = ImageRef("images/ab.png", "ab", 10, 10)

# REPORT, Table 1, with the JSON braces its typesetting dropped (Figures 6 and 7 show them)
# and ASCII apostrophes.
TABLE_1 = """\
Answer the user's question based on the provided image. Here are some tools you can use if needed:
1. Image search. This will trigger a Google Lens search using the image to retrieve relevant information.
2. Text search. This will trigger a Google Search using a carefully crafted query.
3. Web content. This will fetch the detailed webpage content for you to use as additional information.
4. Code execution. You can write Python code inside <code>...</code> to perform image operations (such as cropping, resizing, rotating, color adjustment, denoising, enhancement, etc.) before further processing.
All search results, webpage contents, or code execution outputs will be placed within <observation>...</observation> and returned to you.
Output format options:
- <think>...</think><tool_call>{"name": "image_search", "arguments": {"image_paths": ["local image path 1", "local image path 2"]}}</tool_call>
- <think>...</think><tool_call>{"name": "text_search", "arguments": {"queries": ["your search query 1", "your search query 2"]}}</tool_call>
- <think>...</think><tool_call>{"name": "web_visit", "arguments": {"urls": ["target url 1", "target url 2"]}}</tool_call>
- <think>...</think><tool_call>{"name": "code", "arguments": {"code": "your python code here"}}</tool_call>
- <think>...</think><answer>your answer here</answer>
YOU MUST include your reasoning within <think>...</think> before taking any action."""  # noqa: E501

# PARSE_UTILS, the sample ``full_response`` of its ``__main__``.
PARSE_UTILS_SAMPLE = """\
<think>
I need to identify the rightmost child in the image and determine the color of their skirt.
</think>
<tool_call>{"name": "code", "arguments": {"code": "print('hello')"}}</tool_call>
<observation>{"result": "hello", "type": "code"}</observation>
<think>
The cropped image shows the rightmost child clearly.
</think>
<answer>
The rightmost child has a red/orange colored skirt.
</answer>"""


# -- the system prompt ------------------------------------------------------------------------


def test_release_system_prompt_is_table_1() -> None:
    # Given in our own order; Table 1 lists image_search, text_search, web_visit, code.
    assert RELEASE.system_prompt([CODE, TEXT_SEARCH, IMAGE_SEARCH, WEB_VISIT]) == TABLE_1


def test_release_system_prompt_keeps_table_1_lines_of_the_enabled_tools() -> None:
    lines = TABLE_1.split("\n")
    expected = [
        lines[0],
        "1. " + lines[4].removeprefix("4. "),
        *lines[5:7],
        lines[10],
        *lines[11:],
    ]
    assert RELEASE.system_prompt([CODE]) == "\n".join(expected)


def test_release_system_prompt_lists_a_tool_table_1_lacks_from_its_header() -> None:
    (zoom,) = tool_specs(["image_zoom_in_tool"])
    lines = RELEASE.system_prompt([zoom, CODE]).split("\n")
    assert lines[2] == f"2. {zoom.title} ({zoom.name}): {zoom.description}"
    call = lines[6].removeprefix("- <think>...</think><tool_call>").removesuffix("</tool_call>")
    assert json.loads(call)["name"] == zoom.name


def test_the_frozen_prompt_is_not_table_1() -> None:
    # r1v4 keeps the texts the tiny model learnt (test_prompts_golden.py); only the first line,
    # the observation line and the last line are Table 1's.
    ours = R1V4.system_prompt([CODE, TEXT_SEARCH, IMAGE_SEARCH, WEB_VISIT]).split("\n")
    table = TABLE_1.split("\n")
    assert ours != table
    assert ours[0] == table[0] and ours[5] == table[5] and ours[-1] == table[-1]
    assert [line.split(" (")[0] for line in ours[1:5]] == [
        "1. Code execution",
        "2. Text search",
        "3. Image search",
        "4. Web content",
    ]


@BOTH
def test_both_variants_share_the_turns(protocol) -> None:
    job = Job(id="1", image="a.png", question="What colour?", options=("red", "blue"))
    assert protocol.user_text(job) == R1V4.user_text(job)
    assert tuple(protocol.stop) == ("</tool_call>", "</answer>")
    assert get_protocol(protocol.name, **protocol.options()).name == protocol.name


# -- observations -----------------------------------------------------------------------------


@BOTH
def test_observation_wrapper_is_parse_utils_sample(protocol) -> None:
    observation = PARSE_UTILS_SAMPLE.split("\n")[4]
    assert observation == '<observation>{"result": "hello", "type": "code"}</observation>'
    assert protocol.render_observation([Observation(text="hello\n", tool="code")], 1) == (
        observation
    )


@BOTH
def test_sub_images_are_numbered_over_the_trajectory_as_in_figure_5(protocol) -> None:
    # REPORT, Figure 5: three crops come back as <sub-image 1>, <sub-image 2>, <sub-image 3>.
    rendered = [
        json.loads(
            protocol.render_observation([Observation(text="", images=(REF,), tool="code")], n)
            .removeprefix("<observation>")
            .removesuffix("</observation>")
        )
        for n in (1, 2, 3)
    ]
    assert [r["result"] for r in rendered] == ["<sub-image 1>", "<sub-image 2>", "<sub-image 3>"]


def test_image_search_reads_the_image_names_of_figures_6_and_7() -> None:
    # REPORT, Figure 6: {"image_paths": [<image>]}; Figure 7: {"image_paths": [<sub-image 1>]}.
    context = ToolContext(image=b"original", sub_images=(b"crop",))
    assert image_for("<image>", context) == b"original"
    assert image_for("<sub-image 1>", context) == b"crop"


def test_search_results_have_the_released_json_schemas() -> None:
    # DEEPRESEARCH: text_search [{"title", "url", "snippet"}], image_search [{"title",
    # "source", "link"}], "source" being the image's URL and "link" the page's.
    text = json.loads(hits_json([TextHit("t", "u", "s")]))
    image = json.loads(hits_json([ImageHit("t", "i", "p")]))
    assert [list(hit) for hit in text] == [["title", "url", "snippet"]]
    assert [list(hit) for hit in image] == [["title", "source", "link"]]


# -- turns and the final answer ---------------------------------------------------------------


@BOTH
def test_parse_utils_sample_reads_as_parse_utils_reads_it(protocol) -> None:
    # parse_full_response: the tool call is json.loads of <tool_call>; the answer is the first
    # <answer>...</answer>, stripped; each think is stripped.
    call_turn, _, rest = PARSE_UTILS_SAMPLE.partition("\n<observation>")
    answer_turn = rest.partition("</observation>\n")[2]
    call = protocol.parse(call_turn)
    assert call.error is None
    assert call.tool_calls == (ToolCall("code", {"code": "print('hello')"}),)
    assert call.think == (
        "I need to identify the rightmost child in the image and determine the color of their "
        "skirt."
    )
    final = protocol.parse(answer_turn)
    assert final.error is None
    assert final.think == "The cropped image shows the rightmost child clearly."
    assert final.answer == "The rightmost child has a red/orange colored skirt."


@BOTH
def test_figure_5_answer_names_its_option(protocol) -> None:
    # REPORT, Figure 5's last turn ends "<answer> D. Black and white </answer>".
    final = protocol.parse(
        "<think>The dog is white.</think>\n<answer> D. Black and white </answer>"
    )
    assert final.answer == "D. Black and white"
    options = ("Brown", "Black", "White", "Black and white")
    assert parse_choice(final.answer, options) == LETTERS[3]


@BOTH
def test_a_turn_opened_by_a_closing_think_tag_is_read(protocol) -> None:
    # REPORT, Figures 6 and 7: after an observation R1V4 opens its reasoning with </think>, e.g.
    # "</think> Perfect! Now I have clear information ... </think>\n<answer>\nWhen the crown
    # ... </answer>". parse_full_response still finds the answer; so do we.
    final = protocol.parse(
        "</think> Perfect! Now I have clear information. </think>\n<answer>\n"
        "It instantly initiates an Emergency SOS call. </answer>"
    )
    assert final.error is None
    assert final.think == "Perfect! Now I have clear information."
    assert final.answer == "It instantly initiates an Emergency SOS call."
    call = protocol.parse(
        '</think> The crop shows a street. </think><tool_call>{"name": "code", "arguments": '
        '{"code": "print(1)"}}</tool_call>'
    )
    assert call.tool_calls == (ToolCall("code", {"code": "print(1)"}),)


@BOTH
def test_a_lone_closing_think_tag_is_still_a_format_error(protocol) -> None:
    assert "start with <think>" in protocol.parse("</think><answer>A</answer>").error
    assert "start with <think>" in protocol.parse("</think> A").error
