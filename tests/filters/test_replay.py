"""The `replay` filter: recorded crops match a re-run; a changed image or text is caught."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from pipeline.helpers import Loopback, answered, code_call, started

from beam_pipelines.agent.images import load_image
from beam_pipelines.filters import ToolReplay
from beam_pipelines.io.files import read_bytes
from beam_pipelines.io.image_uris import ImageSource
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.transforms.execute_tools import ToolRuntime, run_turn
from beam_pipelines.transforms.images import ImageStore


@pytest.mark.integration
def test_replay_matches_recorded_crops_and_catches_a_changed_one(tmp_path: Path) -> None:
    runtime = ToolRuntime(["code"], workers=1)
    store = ImageStore(OutputLayout(str(tmp_path / "out"), "r"), max_pixels=32 * 32)
    traj = code_call(started(tmp_path), "print(image.size)\nsave_image(image.crop((0, 0, 20, 10)))")
    observed = run_turn(traj, runtime, store, timeout_s=60).outcome
    again = code_call(observed, "save_image(sub_image_1.resize((10, 5)))")
    observed = run_turn(again, runtime, store, timeout_s=60).outcome
    done = answered(observed)
    replay = ToolReplay(source=ImageSource(allow_hosts=["127.0.0.1"]))
    try:
        assert replay.check(done) is None  # both calls, the second reading sub_image_1

        # A trace whose crop was stored with other PNG bytes (an older version re-encoded it
        # at another zlib level) still matches: the pixels are compared, not the encoding.
        first = done.steps[0].observation.images[0]
        buffer = io.BytesIO()
        load_image(read_bytes(first.uri)).save(buffer, "PNG", compress_level=9)
        recoded = buffer.getvalue()
        assert recoded != read_bytes(first.uri)
        older = dataclasses.replace(
            done,
            steps=(
                dataclasses.replace(
                    done.steps[0],
                    observation=dataclasses.replace(
                        done.steps[0].observation, images=(store.put_png(recoded, 20, 10),)
                    ),
                ),
                *done.steps[1:],
            ),
        )
        assert replay.check(older) is None

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


@pytest.mark.integration
def test_a_job_image_at_an_http_url_is_replayed_from_there(tmp_path: Path) -> None:
    """The original is read the way the run's tools read it (it used to go to FileSystems,
    which has no http filesystem: the check failed and the sample was rejected)."""
    runtime = ToolRuntime(["code"], workers=1)
    store = ImageStore(OutputLayout(str(tmp_path / "out"), "r"), max_pixels=32 * 32)
    traj = code_call(started(tmp_path), "save_image(image.crop((0, 0, 20, 10)))")
    done = answered(run_turn(traj, runtime, store, timeout_s=60).outcome)
    image = Path(done.original.uri).read_bytes()
    web = Loopback({"/job.png": (200, {"Content-Type": "image/png"}, image)})
    at_url = dataclasses.replace(done.original, uri=f"{web.url}/job.png")
    replay = ToolReplay(source=ImageSource(allow_hosts=["127.0.0.1"]))
    try:
        assert replay.check(dataclasses.replace(done, original=at_url)) is None
        assert web.requests == ["/job.png"]
    finally:
        replay.teardown()
        web.close()
        for tool in runtime.tools.values():
            tool.close()
