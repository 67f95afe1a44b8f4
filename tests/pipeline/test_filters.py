"""The regenerate filters, one by one and chained, on trajectories built with the real loop."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import pytest
from PIL import Image

from beam_pipelines.agent import loop
from beam_pipelines.agent.images import encode_png, sha256_hex
from beam_pipelines.agent.records import ImageRef, Job, Observation, ToolSpec, Trajectory
from beam_pipelines.filters import (
    AnswerMatches,
    FilterChain,
    FinalThinkAgrees,
    FormatValid,
    ImageReasoningConsistency,
    MarkerJudge,
    NoRepeatedCrop,
    NoToolError,
    ToolReplay,
    TrajectoryFilter,
    build_chain,
    image_claims,
    parse_verdict,
)
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.transforms.execute_tools import ToolRuntime, run_turn
from beam_pipelines.transforms.images import ImageStore

from .helpers import answered, code_call, started

USAGE = {"prompt_tokens": 1, "completion_tokens": 1}


def say(traj: Trajectory, text: str) -> Trajectory:
    out, _ = loop.advance(traj, text, finish_reason="stop", usage=USAGE, latency_s=0.0)
    return out


def call(traj: Trajectory, code: str, think: str = "look closer") -> Trajectory:
    body = json.dumps({"name": "code", "arguments": {"code": code}})
    return say(traj, f"<think>{think}</think><tool_call>{body}</tool_call>")


def observe(traj: Trajectory, *images: ImageRef, error: str | None = None) -> Trajectory:
    calls = loop.pending_calls(traj)
    obs = Observation(text="", images=images, error=error, tool="code")
    return loop.observe(traj, calls, [obs], [list(images) if error is None else []])


def stored(tmp_path: Path, image: Image.Image, name: str) -> ImageRef:
    data = encode_png(image)
    path = tmp_path / f"{name}.png"
    path.write_bytes(data)
    return ImageRef(str(path), sha256_hex(data), image.width, image.height)


# -- cheap filters -----------------------------------------------------------------------------


def test_answer_filter(tmp_path: Path) -> None:
    f = AnswerMatches()
    assert f.check(answered(started(tmp_path), "B")) is None
    assert f.check(answered(started(tmp_path), "y")) is None  # the option's text
    assert f.check(answered(started(tmp_path), "A")) == "answered A, the ground truth is B"
    assert "no ground truth" in f.check(answered(started(tmp_path, answer=None), "B"))
    unfinished = loop.fail(started(tmp_path), "max_turns", "out of turns")
    assert f.check(unfinished) == "no answer (status failed)"
    free = dataclasses.replace(
        started(tmp_path), job=Job(id="f", image="i", question="Capital?", answer="Paris")
    )
    assert f.check(say(free, "<think>It is Paris.</think><answer>paris.</answer>")) is None
    assert "ground truth is 'Paris'" in f.check(say(free, "<think>x</think><answer>Rome</answer>"))


def test_format_filter(tmp_path: Path) -> None:
    good = answered(started(tmp_path))
    assert FormatValid().check(good) is None
    bad = say(started(tmp_path), "no tags at all")
    assert bad.format_errors == 1
    assert FormatValid().check(answered(bad)) == "1 malformed turn(s) during the run"
    # A turn that parses but reasons about nothing.
    empty = say(started(tmp_path), "<think></think><answer>B</answer>")
    assert FormatValid().check(empty) == "turn 1: empty reasoning"


def test_tool_error_and_recrop_filters(tmp_path: Path) -> None:
    crop = stored(tmp_path, Image.new("RGB", (8, 8), (1, 2, 3)), "crop")
    ok = answered(observe(call(started(tmp_path), "save_image(image)"), crop))
    assert NoToolError().check(ok) is None and NoRepeatedCrop().check(ok) is None
    failed = answered(observe(call(started(tmp_path), "1/0"), error="ZeroDivisionError"))
    assert NoToolError().check(failed) == "step 1: code failed: ZeroDivisionError"
    twice = observe(call(ok_prefix := observe(call(started(tmp_path), "a"), crop), "b"), crop)
    assert NoRepeatedCrop().check(answered(twice)) == "step 2 produced the same image as step 1"
    same_call = observe(call(ok_prefix, "a"), stored(tmp_path, Image.new("RGB", (9, 9)), "o"))
    assert NoRepeatedCrop().check(answered(same_call)) == "step 2 repeats the call of step 1"


def test_final_think_filter(tmp_path: Path) -> None:
    f = FinalThinkAgrees()
    assert f.check(say(started(tmp_path), "<think>It is y.</think><answer>B</answer>")) is None
    assert f.check(say(started(tmp_path), "<think>So B.</think><answer>B</answer>")) is None
    disagree = say(started(tmp_path), "<think>It is x.</think><answer>B</answer>")
    assert f.check(disagree) == "the final reasoning does not name the answer B ('y')"
    # "y" inside another word does not count.
    assert f.check(say(started(tmp_path), "<think>yes, yellow</think><answer>B</answer>"))


def test_a_chain_stops_at_the_first_rejection_and_dedup_keeps_the_first_sample(
    tmp_path: Path,
) -> None:
    def sample(k: int, letter: str) -> Trajectory:
        traj = started(tmp_path, job_id=f"j#{k}")
        meta = {"source_id": "j", "sample": k, "seed": k}
        traj = dataclasses.replace(traj, job=dataclasses.replace(traj.job, meta=meta))
        return say(
            traj, f"<think>It is {'y' if letter == 'B' else 'x'}.</think><answer>{letter}</answer>"
        )

    chain = build_chain(["answer", "format", "final_think", "dedup"])
    verdicts = chain.apply([sample(2, "B"), sample(1, "A"), sample(0, "B")])
    assert [v.trajectory.id for v in verdicts] == ["j#0", "j#1", "j#2"]
    assert verdicts[0].kept
    assert verdicts[1].rejection.filter == "answer"
    assert verdicts[2].rejection.filter == "dedup"
    assert verdicts[2].rejection.reason == "the same turns as j#0"
    assert chain.names == ("answer", "format", "final_think", "dedup")


def test_a_check_that_fails_rejects_under_its_name(tmp_path: Path) -> None:
    class Broken(TrajectoryFilter):
        name = "broken"

        def check(self, traj: Trajectory) -> str | None:
            raise OSError("storage is down")

    rejection = FilterChain([Broken()], dedup=False).check(answered(started(tmp_path)))
    assert rejection.filter == "broken" and "OSError: storage is down" in rejection.reason


def test_unknown_filters_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown filter"):
        build_chain(["answer", "vibes"])


# -- replay ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_replay_matches_recorded_crops_and_catches_a_changed_one(tmp_path: Path) -> None:
    runtime = ToolRuntime(["code"], workers=1)
    store = ImageStore(OutputLayout(str(tmp_path / "out"), "r"), max_pixels=32 * 32)
    traj = code_call(started(tmp_path), "print(image.size)\nsave_image(image.crop((0, 0, 20, 10)))")
    observed = run_turn(traj, runtime, store, timeout_s=60).outcome
    again = code_call(observed, "save_image(sub_image_1.resize((10, 5)))")
    observed = run_turn(again, runtime, store, timeout_s=60).outcome
    done = answered(observed)
    replay = ToolReplay()
    try:
        assert replay.check(done) is None  # both calls, the second reading sub_image_1

        # A recorded image that is not what the call makes is caught by its hash...
        step = done.steps[0]
        other = dataclasses.replace(step.observation.images[0], sha256="0" * 64)
        tampered = dataclasses.replace(
            done,
            steps=(
                dataclasses.replace(
                    step, observation=dataclasses.replace(step.observation, images=(other,))
                ),
                *done.steps[1:],
            ),
        )
        assert replay.check(tampered) == "step 1 (code): image 1 differs (content hash)"
        # ...while the perceptual comparison looks at the pixels stored at its URI (the same).
        assert ToolReplay(compare="perceptual").check(tampered) is None
        # Recorded text that the code does not print is caught too.
        wrong_text = dataclasses.replace(
            done,
            steps=(
                dataclasses.replace(
                    step, observation=dataclasses.replace(step.observation, text="(1, 1)")
                ),
                *done.steps[1:],
            ),
        )
        assert "output text differs" in replay.check(wrong_text)
    finally:
        replay.teardown()
        for tool in runtime.tools.values():
            tool.close()


# -- image-reasoning judge ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    """A rendered synthetic scene with a yellow square holding F, and crops of it."""
    from beam_pipelines.synthetic import Marker, Scene, render

    target = Marker("yellow", "square", "F", 500, 500, 150)
    other = Marker("blue", "circle", "K", 1500, 1500, 150)
    image = render(Scene(seed=5, markers=(target, other)))
    folder = tmp_path_factory.mktemp("scene")
    original = folder / "scene.jpg"
    image.save(original, quality=92)
    at_target = stored(folder, image.crop((420, 420, 580, 580)), "target")
    elsewhere = stored(folder, image.crop((1000, 100, 1160, 260)), "empty")
    return original, target, at_target, elsewhere


def judged(tmp_path: Path, scene, crop: ImageRef, reasoning: str) -> Trajectory:
    original, target, *_ = scene
    ref = ImageRef(str(original), "x", 2048, 2048)
    job = Job(
        id="m",
        image=str(original),
        question="What character is inside the yellow square?",
        options=("F", "K", "X", "E"),
        answer="A",
        meta={"target": asdict(target)},
    )
    traj = loop.start(job, "r1v4", [ToolSpec("code")], ref, ref, model="t", sampling={})
    traj = observe(call(traj, "save_image(image.crop((420, 420, 580, 580)))"), crop)
    return say(traj, f"<think>{reasoning}</think><answer>F</answer>")


def test_marker_judge_checks_the_crop_against_the_named_marker(tmp_path: Path, scene) -> None:
    _, _, at_target, elsewhere = scene
    check = ImageReasoningConsistency(MarkerJudge()).check
    assert check(judged(tmp_path, scene, at_target, "The zoomed yellow square holds F.")) is None
    empty = judged(tmp_path, scene, elsewhere, "The zoomed yellow square holds F.")
    assert "the image shows no yellow marker" in check(empty)
    misread = judged(tmp_path, scene, at_target, "The zoomed yellow square holds X.")
    assert check(misread) == (
        "step 1 (marker): the image shows the yellow square holding F, the reasoning reads X"
    )
    wrong_shape = judged(tmp_path, scene, at_target, "The zoomed yellow circle holds F.")
    assert "is a square, the reasoning says circle" in check(wrong_shape)
    # Reasoning that names no marker makes no claim to check.
    assert check(judged(tmp_path, scene, elsewhere, "Now I can read it.")) is None


def test_image_claims_pair_each_image_with_the_next_reasoning(tmp_path: Path, scene) -> None:
    _, _, at_target, _ = scene
    traj = judged(tmp_path, scene, at_target, "The zoomed yellow square holds F.")
    (claim,) = image_claims(traj)
    assert claim.step == 1 and claim.image == at_target
    assert claim.reasoning == "The zoomed yellow square holds F."
    assert claim.view == at_target.uri


def test_judge_verdicts() -> None:
    assert parse_verdict("<think>it does</think><answer>Yes</answer>") is True
    assert parse_verdict("<answer>no</answer>") is False
    assert parse_verdict("<think>yes? no?</think><answer>maybe</answer>") is None
    assert parse_verdict("no, it does not") is False
