"""The step function: start / advance / observe through every way a job ends."""

import json

import pytest

from beam_pipelines.agent import loop
from beam_pipelines.agent.protocols import ZOOM_TOOL, get_protocol
from beam_pipelines.agent.records import (
    ImageRef,
    Job,
    Observation,
    ToolCall,
    ToolSpec,
    Trajectory,
    Usage,
    answer_row,
)
from tools.registry import tool_specs

JOB = Job.from_dict(
    {
        "id": "vstar-7",
        "image": "gs://b/7.jpg",
        "question": "What is the color of the cup?",
        "options": ["white", "red"],
        "answer": "B",
    }
)
ORIGINAL = ImageRef("gs://out/images/orig.png", "o" * 64, 4000, 3000)
VIEW = ImageRef("gs://out/images/view.png", "v" * 64, 128, 96)
CODE = ToolSpec("code", "Run Python.")
USAGE = {"prompt_tokens": 100, "completion_tokens": 20}
T0 = 1_700_000_000.0


def crop(n: int) -> ImageRef:
    return ImageRef(f"gs://out/images/crop{n}.png", f"{n}" * 64, 800, 600)


def crop_view(n: int) -> ImageRef:
    return ImageRef(f"gs://out/images/crop{n}-view.png", f"v{n}" * 32, 128, 96)


def code_turn(code: str = "save_image(image.crop((0, 0, 100, 100)))") -> str:
    body = json.dumps({"name": "code", "arguments": {"code": code}})
    return f"<think>I need a closer look.</think><tool_call>{body}</tool_call>"


def started(**options) -> Trajectory:
    return loop.start(
        JOB,
        "r1v4",
        [CODE],
        ORIGINAL,
        VIEW,
        model="tiny",
        sampling={"temperature": 0.2, "max_tokens": 256},
        now=T0,
        **options,
    )


def step(traj: Trajectory, text: str, finish_reason: str = "stop", latency_s: float = 0.5):
    return loop.advance(
        traj, text, finish_reason=finish_reason, usage=USAGE, latency_s=latency_s, now=T0 + 3
    )


def resumed(traj: Trajectory) -> Trajectory:
    """The trajectory as another worker would see it: through its JSON trace."""
    back = loop.from_trace(json.loads(json.dumps(loop.to_trace(traj))))
    assert back == traj
    return back


def test_start_builds_system_and_user_turns() -> None:
    traj = started()
    system, user = traj.messages
    assert system == {"role": "system", "content": get_protocol("r1v4").system_prompt([CODE])}
    assert user["role"] == "user"
    assert user["content"][0] == {"type": "image_url", "image_url": {"url": VIEW.uri}}
    assert user["content"][1]["text"].startswith("What is the color of the cup?\nOptions:\nA.")
    assert len(user["content"]) == 2
    assert traj.status == "running" and traj.turns == 0 and not traj.done
    assert traj.sampling["stop"] == ["</tool_call>", "</answer>"]
    assert traj.started_at == "2023-11-14T22:13:20+00:00"
    assert (traj.original, traj.view, traj.tools) == (ORIGINAL, VIEW, (CODE,))


def test_sampling_stop_strings_given_by_the_caller_are_kept() -> None:
    traj = loop.start(JOB, "r1v4", [], ORIGINAL, VIEW, model="m", sampling={"stop": ["X"]})
    assert traj.sampling["stop"] == ["X"]


def test_tool_calls_then_answer() -> None:
    traj = started()
    traj, calls = step(traj, code_turn())
    assert calls == [ToolCall("code", {"code": "save_image(image.crop((0, 0, 100, 100)))"})]
    assert loop.pending_calls(traj) == calls
    assert traj.messages[-1] == {"role": "assistant", "content": code_turn()}
    traj = resumed(traj)

    traj = loop.observe(
        traj, calls, [Observation("cropped\n", (crop(1), crop(2)), tool="code")],
        [[crop_view(1), crop_view(2)]],
    )  # fmt: skip
    observation = traj.messages[-1]
    assert observation["role"] == "user"
    assert observation["content"][0]["text"] == (
        '<observation>{"result": "cropped\\n<sub-image 1>\\n<sub-image 2>", "type": "code"}'
        "</observation>"
    )
    assert [p["image_url"]["url"] for p in observation["content"][1:]] == [
        crop_view(1).uri,
        crop_view(2).uri,
    ]
    assert loop.pending_calls(traj) == []
    assert loop.next_image_index(traj) == 3
    traj = resumed(traj)

    # A failing call shows no images and does not advance the numbering.
    traj, calls = step(traj, code_turn("1/0"))
    traj = loop.observe(
        traj, calls, [Observation("", (crop(9),), "ZeroDivisionError", "code")], [[]]
    )
    assert traj.messages[-1]["content"] == [
        {
            "type": "text",
            "text": '<observation>{"error": "ZeroDivisionError", "type": "code"}</observation>',
        }
    ]
    assert loop.next_image_index(traj) == 3

    # Numbering continues across turns.
    traj, calls = step(traj, code_turn("save_image(sub_image_2)"))
    traj = loop.observe(traj, calls, [Observation("", (crop(3),))], [[crop_view(3)]])
    assert "<sub-image 3>" in traj.messages[-1]["content"][0]["text"]
    assert loop.sub_images(traj) == [crop(1), crop(2), crop(3)]
    assert traj.steps[-1].observation.tool == "code"  # filled in from the call

    traj, calls = step(resumed(traj), "<think>It is red.</think><answer>B</answer>")
    assert calls == [] and traj.status == "answered" and traj.done
    assert traj.final.answer == "B" and traj.final.think == "It is red."
    assert traj.turns == 4 and len(traj.steps) == 3
    assert traj.usage == Usage(400, 80)
    assert [s.latency_s for s in traj.steps] == [0.5, 0.5, 0.5]
    assert [s.tokens for s in traj.steps] == [20, 20, 20]

    row = answer_row(traj, "gs://out/traces/part-0.jsonl.gz")
    assert row["choice"] == "B" and row["correct"] is True
    assert (row["turns"], row["tool_calls"], row["latency_s"]) == (4, 3, 3.0)

    trace = loop.to_trace(traj)
    assert trace["id"] == "vstar-7" and trace["status"] == "answered"
    assert trace["final"] == {"think": "It is red.", "answer": "B"}
    assert trace["finished_at"] == "2023-11-14T22:13:23+00:00"
    assert loop.from_trace(json.loads(json.dumps(trace))) == traj


def test_format_errors_are_sent_back_then_capped() -> None:
    traj = started()
    traj, calls = step(traj, "<think>hmm")
    assert calls == [] and traj.status == "running" and traj.format_errors == 1
    feedback = traj.messages[-1]["content"][0]["text"]
    assert feedback.startswith('<observation>{"error": "Your reasoning was not closed')
    assert '"type": "format"' in feedback
    assert traj.steps[-1].error and traj.steps[-1].tool_call is None

    traj, _ = step(resumed(traj), "<think>t</think>" + '<tool_call>{"name": "cod"}</tool_call>')
    assert traj.format_errors == 2 and traj.status == "running"

    traj, calls = step(resumed(traj), "no tags at all")
    assert calls == [] and traj.status == "failed" and traj.error_class == "format"
    assert "3 malformed turns" in traj.error
    assert traj.messages[-1]["role"] == "assistant"  # nothing more is sent to the model
    assert traj.steps[-1].observation is None
    assert answer_row(traj, None)["status"] == "failed"


def test_a_format_error_can_be_recovered_from() -> None:
    traj, _ = step(started(), "<think>t</think><answer>B</answer> trailing")
    traj, _ = step(traj, "<think>t</think><answer>B</answer>")
    assert traj.status == "answered" and traj.format_errors == 1


def test_format_error_cap_is_configurable() -> None:
    traj, _ = step(started(max_format_errors=1), "oops")
    assert traj.status == "failed" and traj.error_class == "format"


def test_max_turns_ends_the_job() -> None:
    traj = started(max_turns=2)
    traj, calls = step(traj, code_turn())
    traj = loop.observe(traj, calls, [Observation("ok")], [[]])
    traj, calls = step(traj, code_turn())
    assert calls == [] and traj.status == "max_turns" and traj.error_class == "max_turns"
    assert traj.steps[-1].observation is None and traj.steps[-1].error
    row = answer_row(traj, None)
    assert (row["turns"], row["tool_calls"], row["answer"]) == (2, 1, None)


def test_an_answer_on_the_last_turn_counts() -> None:
    traj, _ = step(started(max_turns=1), "<think>t</think><answer>A</answer>")
    assert traj.status == "answered"


def test_a_format_error_on_the_last_turn_ends_as_max_turns() -> None:
    traj, _ = step(started(max_turns=1), "oops")
    assert traj.status == "max_turns" and traj.format_errors == 1


def test_cut_off_at_the_token_limit() -> None:
    traj, calls = step(started(), "<think>a very long thought", finish_reason="length")
    assert calls == [] and traj.format_errors == 1
    assert "cut off at the token limit" in traj.messages[-1]["content"][0]["text"]
    # Parsable but unterminated (the lenient parser would take it) is still cut off.
    traj, calls = step(traj, "<think>t</think><answer>The cup is re", finish_reason="length")
    assert traj.format_errors == 2 and traj.status == "running"
    # A complete action that happens to end at the limit is fine.
    traj, _ = step(traj, "<think>t</think><answer>B</answer>", finish_reason="length")
    assert traj.status == "answered"


def test_model_server_error_fails_the_job() -> None:
    traj, calls = step(started(), "", finish_reason="error")
    assert traj.status == "failed" and traj.error_class == "model" and calls == []


def test_fail_for_reasons_outside_the_loop() -> None:
    traj = loop.fail(started(), "tool_infrastructure", "sandbox pool down", now=T0)
    assert (traj.status, traj.error_class, traj.error) == (
        "failed",
        "tool_infrastructure",
        "sandbox pool down",
    )
    with pytest.raises(ValueError):
        loop.fail(traj, "x", "y")


def test_a_call_with_bad_arguments_goes_to_the_tool() -> None:
    # Not a format error: the tool's run_tool checks the arguments, once, and says what is wrong.
    body = json.dumps({"name": "code", "arguments": {"code": 1}})
    traj, calls = step(started(), f"<think>t</think><tool_call>{body}</tool_call>")
    assert calls == [ToolCall("code", {"code": 1})] and traj.format_errors == 0


def test_misuse_is_a_programming_error() -> None:
    traj, calls = step(started(), code_turn())
    with pytest.raises(ValueError, match="observe first"):
        step(traj, code_turn())
    with pytest.raises(ValueError, match="not the calls"):
        loop.observe(traj, [ToolCall("code", {"code": "x"})], [Observation("")], [[]])
    with pytest.raises(ValueError, match="expected 1"):
        loop.observe(traj, calls, [], [])
    with pytest.raises(ValueError, match="views"):
        loop.observe(traj, calls, [Observation("", (crop(1),))], [[]])
    done, _ = step(started(), "<think>t</think><answer>A</answer>")
    with pytest.raises(ValueError, match="already answered"):
        step(done, "x")
    with pytest.raises(ValueError, match="no tool calls"):
        loop.observe(done, [], [], [])
    with pytest.raises(ValueError):
        started(max_turns=0)


def test_zoom_protocol_runs_through_the_same_loop() -> None:
    zoom = tool_specs([ZOOM_TOOL], image_zoom_in_tool={"coordinates": "absolute"})
    traj = loop.start(JOB, "zoom", zoom, ORIGINAL, VIEW, model="deepeyes", sampling={})
    assert traj.protocol == "zoom" and traj.protocol_options == {}
    assert traj.tools == zoom and zoom[0].settings == {"coordinates": "absolute"}
    assert "absolute pixel" in traj.messages[0]["content"]
    body = json.dumps({"name": ZOOM_TOOL, "arguments": {"bbox_2d": [1, 2, 50, 60]}})
    traj, calls = step(resumed(traj), f"<think>zoom</think>\n<tool_call>\n{body}\n</tool_call>")
    assert calls == [ToolCall(ZOOM_TOOL, {"bbox_2d": [1, 2, 50, 60]})]
    traj = loop.observe(traj, calls, [Observation("", (crop(1),))], [[crop_view(1)]])
    assert traj.messages[-1]["content"][0]["text"] == (
        "<tool_response>\n<sub-image 1>\n</tool_response>"
    )
    traj, _ = step(traj, "<think>t</think>" + '<tool_call>{"name": "code"}</tool_call>')
    assert traj.messages[-1]["content"][0]["text"].startswith("<tool_response>\nError:")
    traj, _ = step(traj, "<think>t</think><answer>B</answer>")
    assert traj.status == "answered"


# -- multi-image jobs -------------------------------------------------------------------------

PAIR = Job.from_dict({"id": "pair", "images": ["gs://b/1.jpg", "gs://b/2.jpg"], "question": "Q?"})
SECOND = ImageRef("gs://b/2.jpg", "s" * 64, 640, 480)
SECOND_VIEW = ImageRef("gs://out/images/view2.png", "w" * 64, 128, 96)


def test_a_multi_image_job_shows_every_view_in_order_then_the_text() -> None:
    specs = tool_specs(["code"])
    traj = loop.start(
        PAIR, "r1v4", specs, ORIGINAL, VIEW, model="m", sampling={},
        more_originals=[SECOND], more_views=[SECOND_VIEW],
    )  # fmt: skip
    user = traj.messages[1]["content"]
    assert [p.get("image_url", {}).get("url") for p in user] == [VIEW.uri, SECOND_VIEW.uri, None]
    assert user[2] == {"type": "text", "text": "Q?"}  # no labels: the order names them
    system = traj.messages[0]["content"]
    assert system.startswith("Answer the user's question based on the provided images. Here")
    assert "`images` is the list of the 2 images as PIL images" in system
    assert traj.tools == tool_specs(["code"], 2) != specs  # the trace says what was shown
    assert traj.originals == (ORIGINAL, SECOND) and traj.views == (VIEW, SECOND_VIEW)
    assert loop.from_trace(json.loads(json.dumps(loop.to_trace(traj)))) == traj
    # Tool images are numbered from 1 as ever: job images are not sub-images.
    traj, calls = step(traj, code_turn("save_image(images[1])"))
    traj = loop.observe(traj, calls, [Observation("", (crop(1),))], [[crop_view(1)]])
    assert "<sub-image 1>" in traj.messages[-1]["content"][0]["text"]
    assert loop.sub_images(traj) == [crop(1)]


def test_a_job_listing_one_image_is_prompted_as_a_single_image_job() -> None:
    one = Job.from_dict({"id": "one", "images": ["gs://b/7.jpg"], "question": "Q?"})
    single = Job.from_dict({"id": "one", "image": "gs://b/7.jpg", "question": "Q?"})
    specs = tool_specs(["code"])
    listed, plain = (
        loop.start(job, "r1v4", specs, ORIGINAL, VIEW, model="m", sampling={}, now=T0)
        for job in (one, single)
    )
    assert listed.messages == plain.messages and listed.tools == plain.tools
    assert listed.to_dict()["job"]["images"] == ["gs://b/7.jpg"]


def test_the_images_must_match_the_job() -> None:
    with pytest.raises(ValueError, match="has 2 images"):
        loop.start(PAIR, "r1v4", [CODE], ORIGINAL, VIEW, model="m", sampling={})
    with pytest.raises(ValueError, match="has 1 images"):
        loop.start(
            JOB, "r1v4", [CODE], ORIGINAL, VIEW, model="m", sampling={},
            more_originals=[SECOND], more_views=[SECOND_VIEW],
        )  # fmt: skip


def test_a_multi_image_zoom_prompt_offers_the_image_index() -> None:
    zoom = tool_specs([ZOOM_TOOL], image_zoom_in_tool={"coordinates": "absolute"})
    traj = loop.start(
        PAIR, "zoom", zoom, ORIGINAL, VIEW, model="m", sampling={},
        more_originals=[SECOND], more_views=[SECOND_VIEW],
    )  # fmt: skip
    (spec,) = traj.tools
    assert spec.settings == {"coordinates": "absolute"}
    assert spec.parameters["properties"]["image_index"]["maximum"] == 1
    assert "There are 2 images: image_index chooses" in spec.description
    assert '"image_index"' in traj.messages[0]["content"]
    single = loop.start(JOB, "zoom", zoom, ORIGINAL, VIEW, model="m", sampling={})
    assert "image_index" not in single.messages[0]["content"]


def test_tool_context_carries_every_original_and_its_view_size() -> None:
    traj = loop.start(
        PAIR, "r1v4", [CODE], ORIGINAL, VIEW, model="m", sampling={},
        more_originals=[SECOND], more_views=[ImageRef("v", "x" * 64, 100, 75)],
    )  # fmt: skip
    context = loop.tool_context(traj, [b"one", b"two"], [b"crop"], timeout_s=3.0)
    assert context.image == b"one" and context.images == (b"one", b"two")
    assert context.sub_images == (b"crop",) and context.timeout_s == 3.0
    assert [context.view_size_of(i) for i in range(3)] == [(128, 96), (100, 75), None]
    with pytest.raises(ValueError, match="2 originals expected"):
        loop.tool_context(traj, [b"one"], [])
