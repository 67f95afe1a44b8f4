"""One turn of tool calls through the real code sandbox: observation, stored images, views."""

from pathlib import Path

import pytest
from PIL import Image

from beam_pipelines.agent import loop
from beam_pipelines.agent.records import FailedJob
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.transforms.execute_tools import ToolRuntime, run_turn
from beam_pipelines.transforms.images import ImageStore

from .helpers import code_call, started

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runtime() -> ToolRuntime:
    return ToolRuntime(["code"], workers=1)


def store(tmp_path: Path) -> ImageStore:
    return ImageStore(OutputLayout(str(tmp_path / "out"), "r"), max_pixels=32 * 32)


def test_a_crop_comes_back_as_a_stored_image_and_view(tmp_path: Path, runtime: ToolRuntime):
    traj = code_call(started(tmp_path), "print(image.size)\nsave_image(image.crop((0, 0, 40, 40)))")
    result = run_turn(traj, runtime, store(tmp_path), timeout_s=30)
    observed = result.outcome
    assert not isinstance(observed, FailedJob), observed
    (step,) = observed.steps
    assert step.observation.error is None and "(64, 48)" in step.observation.text
    (full,) = step.observation.images
    assert (full.width, full.height) == (40, 40) and Path(full.uri).exists()
    view_uri = observed.messages[-1]["content"][1]["image_url"]["url"]
    assert Image.open(view_uri).size == (32, 32)  # the model's budget, not the crop's size
    assert "<sub-image 1>" in observed.messages[-1]["content"][0]["text"]
    assert [s.tool for s in result.stats] == ["code"]
    # The next turn's code sees the crop as sub_image_1.
    again = code_call(observed, "print(sub_image_1.size)")
    second = run_turn(again, runtime, store(tmp_path), timeout_s=30).outcome
    assert "(40, 40)" in second.steps[-1].observation.text


def test_failing_code_is_an_observation_not_a_failure(tmp_path: Path, runtime: ToolRuntime):
    traj = code_call(started(tmp_path), "raise ValueError('nope')")
    observed = run_turn(traj, runtime, store(tmp_path), timeout_s=30).outcome
    assert not isinstance(observed, FailedJob)
    assert "nope" in observed.steps[-1].observation.error
    assert result_error(observed)


def test_a_missing_original_fails_the_job_not_the_pipeline(tmp_path: Path, runtime):
    traj = code_call(started(tmp_path), "print(1)")
    Path(traj.original.uri).unlink()
    outcome = run_turn(traj, runtime, store(tmp_path), timeout_s=30).outcome
    assert isinstance(outcome, FailedJob)
    assert outcome.failure.stage == "tools" and outcome.trajectory.status == "failed"
    assert loop.pending_calls(outcome.trajectory) == []


def result_error(traj) -> bool:
    return (
        traj.messages[-1]["role"] == "user" and "error" in traj.messages[-1]["content"][0]["text"]
    )
