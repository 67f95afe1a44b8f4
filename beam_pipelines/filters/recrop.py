"""`recrop` (not in the default list): no tool call repeats an earlier one."""

from __future__ import annotations

import json

from beam_pipelines.agent.records import Trajectory
from beam_pipelines.filters.base import TrajectoryFilter


class NoRepeatedCrop(TrajectoryFilter):
    """No tool call repeats an earlier one (same arguments, or the same output image)."""

    name = "recrop"

    def check(self, traj: Trajectory) -> str | None:
        calls: dict[str, int] = {}
        images: dict[str, int] = {}
        for number, step in enumerate(traj.steps, start=1):
            if step.tool_call is None:
                continue
            key = json.dumps([step.tool_call.name, step.tool_call.arguments], sort_keys=True)
            if key in calls:
                return f"step {number} repeats the call of step {calls[key]}"
            calls[key] = number
            for image in step.observation.images if step.observation else ():
                if image.sha256 in images:
                    return f"step {number} produced the same image as step {images[image.sha256]}"
                images[image.sha256] = number
        return None
