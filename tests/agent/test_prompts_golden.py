"""Pins the frozen r1v4 texts of docs/architecture.md verbatim.

The embedded tiny model was trained on exactly these strings. A failure here means a prompt
changed: either revert it, or retrain the tiny model and commit new weights together with the
new golden texts (docs/architecture.md, "Frozen texts").
"""

import json

from beam_pipelines.agent.protocols import get_protocol
from beam_pipelines.agent.records import ImageRef, Job, Observation
from tools.registry import tool_specs
from tools.search.results import TextHit, hits_json

# The headers the tools declare, at their default settings: the prompt is rendered from them.
CODE, TEXT_SEARCH, IMAGE_SEARCH, WEB_VISIT = tool_specs(
    ["code", "text_search", "image_search", "web_visit"]
)

SYSTEM_WITH_CODE = """\
Answer the user's question based on the provided image. Here are some tools you can use if needed:
1. Code execution (code): run Python on the full-resolution image. `image` is the original image as a PIL image, earlier sub-images are `sub_image_1`, `sub_image_2`, ...; call `save_image(img)` to see an image.
All search results, webpage contents, or code execution outputs will be placed within <observation>...</observation> and returned to you.
Output formats:
<think>...</think><tool_call>{"name": "code", "arguments": {"code": "..."}}</tool_call>
<think>...</think><answer>...</answer>
YOU MUST include your reasoning within <think>...</think> before taking any action."""  # noqa: E501

SYSTEM_WITH_CODE_AND_TEXT_SEARCH = """\
Answer the user's question based on the provided image. Here are some tools you can use if needed:
1. Code execution (code): run Python on the full-resolution image. `image` is the original image as a PIL image, earlier sub-images are `sub_image_1`, `sub_image_2`, ...; call `save_image(img)` to see an image.
2. Text search (text_search): search the web for one or more text queries; each result has a title, url and snippet.
All search results, webpage contents, or code execution outputs will be placed within <observation>...</observation> and returned to you.
Output formats:
<think>...</think><tool_call>{"name": "code", "arguments": {"code": "..."}}</tool_call>
<think>...</think><tool_call>{"name": "text_search", "arguments": {"queries": ["..."]}}</tool_call>
<think>...</think><answer>...</answer>
YOU MUST include your reasoning within <think>...</think> before taking any action."""  # noqa: E501

SYSTEM_NO_TOOLS = """\
Answer the user's question based on the provided image.
Output format:
<think>...</think><answer>...</answer>
YOU MUST include your reasoning within <think>...</think> before giving the answer."""

USER_WITH_OPTIONS = """\
What is the color of the cup?
Options:
A. white
B. red
C. blue
D. black
Answer with the option's letter."""

R1V4 = get_protocol("r1v4")
REF = ImageRef("images/ab.png", "ab", 10, 10)


def test_system_prompt_with_code_tool() -> None:
    assert R1V4.system_prompt([CODE]) == SYSTEM_WITH_CODE


def test_system_prompt_with_code_and_text_search() -> None:
    assert R1V4.system_prompt([TEXT_SEARCH, CODE]) == SYSTEM_WITH_CODE_AND_TEXT_SEARCH


def test_system_prompt_without_tools() -> None:
    assert R1V4.system_prompt([]) == SYSTEM_NO_TOOLS


def test_system_prompt_with_several_tools_follows_the_fixed_order() -> None:
    # Given out of order; the prompt lists code, text_search, image_search, web_visit.
    prompt = R1V4.system_prompt([WEB_VISIT, IMAGE_SEARCH, CODE, TEXT_SEARCH])
    lines = prompt.split("\n")
    assert lines[0] == SYSTEM_WITH_CODE.split("\n")[0]
    assert lines[1] == SYSTEM_WITH_CODE.split("\n")[1]
    assert [line.split(" ")[0] for line in lines[1:5]] == ["1.", "2.", "3.", "4."]
    assert "(text_search)" in lines[2]
    assert "(image_search)" in lines[3]
    assert "(web_visit)" in lines[4]
    assert lines[5] == SYSTEM_WITH_CODE.split("\n")[2]
    assert lines[6] == "Output formats:"
    names = [
        json.loads(line[len("<think>...</think><tool_call>") : -len("</tool_call>")])["name"]
        for line in lines[7:11]
    ]
    assert names == ["code", "text_search", "image_search", "web_visit"]
    assert lines[11:] == SYSTEM_WITH_CODE.split("\n")[-2:]


def test_user_text_without_options_is_the_question() -> None:
    job = Job(id="1", image="a.png", question="What is written on the sign?")
    assert R1V4.user_text(job) == "What is written on the sign?"


def test_user_text_with_options() -> None:
    job = Job(
        id="1",
        image="a.png",
        question="What is the color of the cup?",
        options=("white", "red", "blue", "black"),
    )
    assert R1V4.user_text(job) == USER_WITH_OPTIONS


def test_code_observation_with_stdout_and_images() -> None:
    obs = Observation(text="crop saved\n", images=(REF, REF), tool="code")
    expected = (
        "<observation>"
        + json.dumps({"result": "crop saved\n<sub-image 3>\n<sub-image 4>", "type": "code"})
        + "</observation>"
    )
    assert R1V4.render_observation([obs], 3) == expected
    assert expected == (
        '<observation>{"result": "crop saved\\n<sub-image 3>\\n<sub-image 4>", '
        '"type": "code"}</observation>'
    )


def test_code_observation_without_stdout() -> None:
    obs = Observation(text="  \n", images=(REF,), tool="code")
    assert R1V4.render_observation([obs], 1) == (
        '<observation>{"result": "<sub-image 1>", "type": "code"}</observation>'
    )


def test_code_observation_keeps_unicode() -> None:
    obs = Observation(text="température 20°C", tool="code")
    assert R1V4.render_observation([obs], 1) == (
        '<observation>{"result": "température 20°C", "type": "code"}</observation>'
    )


def test_failing_code_observation() -> None:
    obs = Observation(
        text="", images=(REF,), error="NameError: name 'x' is not defined", tool="code"
    )
    assert R1V4.render_observation([obs], 1) == (
        "<observation>"
        + json.dumps({"error": "NameError: name 'x' is not defined", "type": "code"})
        + "</observation>"
    )


def test_text_search_observation() -> None:
    hit = TextHit("Codebook entry: symbol T", "http://corpus.invalid/codebook/t.html", "... T ...")
    obs = Observation(text=hits_json([hit]), tool="text_search")
    assert R1V4.render_observation([obs], 2) == (
        '<observation>{"result": "[{\\"title\\": \\"Codebook entry: symbol T\\", '
        '\\"url\\": \\"http://corpus.invalid/codebook/t.html\\", '
        '\\"snippet\\": \\"... T ...\\"}]", "type": "text_search"}</observation>'
    )


def test_stop_strings() -> None:
    assert tuple(R1V4.stop) == ("</tool_call>", "</answer>")
