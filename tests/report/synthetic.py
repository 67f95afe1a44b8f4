"""A run's outputs written by the pipeline's own code, from scripted model turns.

The trajectories go through the real agent loop (`loop.start / advance / observe`, so the
protocol parses every scripted turn), images through `ImageStore`, and rows, traces and
failures through the `WriteResults` DoFn: the output has exactly the pipeline's format, with
cases a small real run rarely shows (crop boxes on sub-images, zoom calls, format errors, a
failed job with a trace, a read failure, and model text full of HTML and script).
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from beam_pipelines.agent import loop
from beam_pipelines.agent.images import load_image, sha256_hex
from beam_pipelines.agent.records import (
    FailedJob,
    Failure,
    ImageRef,
    Job,
    Observation,
    ToolSpec,
    Trajectory,
)
from beam_pipelines.io.files import join, write_bytes
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.outputs.manifest import write_manifest
from beam_pipelines.outputs.writers import WriteResults
from beam_pipelines.transforms.images import ImageStore

RUN_ID = "20260101T000000Z-synthetic"
WIDTH, HEIGHT = 1024, 768
USAGE = {"prompt_tokens": 100, "completion_tokens": 20}
CODE = ToolSpec(name="code")
#: Model text that must render as text: if any of it ran, `window.__xss` would be set.
XSS = (
    '<script>window.__xss = 1; alert("xss")</script><b>bold?</b>'
    '<img src=x onerror="window.__xss = 2"></pre></details><!-- -->'
)
XSS_ID = 'xss-<script>alert("id")</script>'


def _image(uri: str) -> tuple[Image.Image, bytes]:
    image = Image.new("RGB", (WIDTH, HEIGHT), (245, 240, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((600, 400, 700, 500), fill=(200, 30, 30))
    draw.text((640, 440), "K", fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes(uri, buffer.getvalue())
    return image, buffer.getvalue()


def _crop_png(image: Image.Image, box: tuple[int, int, int, int]) -> bytes:
    buffer = io.BytesIO()
    image.crop(box).resize((128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


class Scripted:
    """Builds trajectories on one job image with scripted model turns."""

    def __init__(self, layout: OutputLayout, image_uri: str) -> None:
        self.store = ImageStore(layout, max_pixels=256 * 256)
        self.image, data = _image(image_uri)
        self.original = ImageRef(uri=image_uri, sha256=sha256_hex(data), width=WIDTH, height=HEIGHT)
        self.view = self.store.put_view(load_image(data))

    def start(self, job: Job, protocol: str = "r1v4", **options: Any) -> Trajectory:
        tools = [CODE] if protocol == "r1v4" else []
        if protocol == "zoom":
            from tools.registry import tool_specs

            zoom = tool_specs(["image_zoom_in_tool"], image_zoom_in_tool=options)
            return loop.start(
                job, "zoom", zoom, self.original, self.view,
                model="scripted", sampling={"max_tokens": 64},
            )  # fmt: skip
        return loop.start(
            job, protocol, tools, self.original, self.view, model="scripted", sampling={}
        )

    def turn(self, traj: Trajectory, text: str) -> tuple[Trajectory, list[Any]]:
        return loop.advance(traj, text, finish_reason="stop", usage=USAGE, latency_s=0.5)

    def crop_result(
        self, box: tuple[int, int, int, int], text: str = ""
    ) -> tuple[Observation, list[ImageRef]]:
        full, view = self.store.put_tool_image(_crop_png(self.image, box))
        return Observation(text=text, images=(full,)), [view]

    def observe(
        self, traj: Trajectory, calls: list[Any], results: list[tuple[Observation, list[ImageRef]]]
    ) -> Trajectory:
        return loop.observe(traj, calls, [r[0] for r in results], [r[1] for r in results])


def _job(job_id: str, question: str = "What character is inside the red square?") -> Job:
    return Job(
        id=job_id,
        image="unused",
        question=question,
        options=("K", "X", "M", "Z"),
        answer="A",
    )


def _code_call(think: str, code: str) -> str:
    call = json.dumps({"name": "code", "arguments": {"code": code}})
    return f"<think>{think}</think><tool_call>{call}</tool_call>"


def build_trajectories(s: Scripted) -> list[Trajectory | FailedJob | Failure]:
    """The scripted cases, finished."""
    results: list[Trajectory | FailedJob | Failure] = []

    # Two crops: one on the original, one on the sub-image it produced (mapped back).
    traj = s.start(_job("crop-then-zoom"))
    code = "x, y = 650, 450\nsave_image(image.crop((x - 80, y - 80, x + 80, y + 80)))"
    traj, calls = s.turn(traj, _code_call("Too small to read; crop around the red square.", code))
    traj = s.observe(traj, calls, [s.crop_result((570, 370, 730, 530))])
    code = (
        "w, h = sub_image_1.size\n"
        "save_image(sub_image_1.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4)))"
    )
    traj, calls = s.turn(traj, _code_call("Closer.", code))
    traj = s.observe(traj, calls, [s.crop_result((610, 410, 690, 490), text="zoomed twice")])
    traj, _ = s.turn(traj, "<think>The square holds K, option A.</think><answer>A</answer>")
    results.append(traj)

    # Model text, tool output and the id itself full of markup: all must render as text.
    traj = s.start(_job(XSS_ID, question=f"What is inside? {XSS}"))
    code = f"print({XSS!r})\nsave_image(image.crop((0, 0, 100, 100)))"
    traj, calls = s.turn(traj, _code_call(f"Thinking {XSS}", code))
    traj = s.observe(traj, calls, [s.crop_result((0, 0, 100, 100), text=XSS)])
    traj, _ = s.turn(traj, f"<think>{XSS}</think><answer>B {XSS}</answer>")
    results.append(traj)

    # The zoom protocol: bbox_2d in relative 0..1000 coordinates.
    traj = s.start(_job("zoom-relative"), protocol="zoom", coordinates="relative")
    call = {"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [500, 500, 750, 750]}}
    traj, calls = s.turn(traj, f"<think>Zoom in.</think><tool_call>{json.dumps(call)}</tool_call>")
    traj = s.observe(traj, calls, [s.crop_result((512, 384, 768, 576))])
    traj, _ = s.turn(traj, "<think>It is K.</think><answer>A</answer>")
    results.append(traj)

    # A format error, then a code call that fails, then the turn budget runs out.
    traj = s.start(_job("format-then-max-turns"))
    traj = dataclasses.replace(traj, max_turns=3)
    traj, _ = s.turn(traj, "<think>unclosed reasoning <tool_call>{not json")
    traj, calls = s.turn(traj, _code_call("Try code.", "image.crop((1, 2, 3))\n1/0"))
    traj = s.observe(
        traj, calls, [(Observation(text="", error="ZeroDivisionError: division by zero"), [])]
    )
    traj, _ = s.turn(traj, _code_call("Again.", "print('never runs')"))
    results.append(traj)

    # A model-server error ends the job as failed; its partial trace is kept.
    traj = s.start(_job("model-error"))
    traj, calls = s.turn(traj, _code_call("Crop.", "save_image(image.crop((10, 20, 300, 400)))"))
    traj = s.observe(traj, calls, [s.crop_result((10, 20, 300, 400))])
    traj, _ = loop.advance(traj, "server exploded", finish_reason="error", usage={}, latency_s=1)
    results.append(traj)

    # No ground truth: answered, not graded.
    ungraded = Job(id="ungraded", image="unused", question="Describe the image.")
    traj = s.start(ungraded)
    traj, _ = s.turn(traj, "<think>A red square on beige.</think><answer>a red square</answer>")
    results.append(traj)

    # A line that never became a job.
    results.append(
        Failure(
            input="{not json",
            stage="read",
            error_class="invalid_json",
            message="not valid JSON: <script>alert('failure')</script>",
        )
    )
    return results


def write_run(root: str | Path, extra_answered: int = 0) -> OutputLayout:
    """Write the scripted run (plus `extra_answered` plain answered jobs) under `root`.

    `root` is a local folder or any URI Beam's FileSystems writes (`gs://...`); the job image
    is written there too, under `inputs/`.
    """
    layout = OutputLayout(str(root), RUN_ID)
    scripted = Scripted(layout, join(str(root), "inputs", "image.png"))
    results = build_trajectories(scripted)
    for i in range(extra_answered):
        traj = scripted.start(_job(f"plain-{i:05d}"))
        letter = "AB"[i % 2]
        traj, _ = scripted.turn(traj, f"<think>Guess {i}.</think><answer>{letter}</answer>")
        results.append(traj)
    write_manifest(
        layout,
        {
            "run_id": RUN_ID,
            "status": "done",
            "started_at": "2026-01-01T00:00:00+00:00",
            "finished_at": "2026-01-01T00:01:00+00:00",
            "wall_s": 60.0,
            "config": {"protocol": "r1v4", "tools": ["code"], "max_turns": 4, "input": "x"},
        },
    )
    # A small max_rows spreads the run over several shards, as a real run does.
    writer = WriteResults(layout, loop.to_trace, max_rows=3, max_age_s=3600)
    writer.setup()
    writer.start_bundle()
    for result in results:
        writer.process(result)
    writer.finish_bundle()
    return layout
