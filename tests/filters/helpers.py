"""Filter test helpers: a trajectory that crops the synthetic scene and reasons about it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from pipeline.helpers import call, observe, say

from beam_pipelines.agent import loop
from beam_pipelines.agent.records import ImageRef, Job, ToolSpec, Trajectory


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
