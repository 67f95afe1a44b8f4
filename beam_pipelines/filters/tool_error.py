"""`tool_error`: no tool call failed or went unrun."""

from __future__ import annotations

from beam_pipelines.agent.records import Trajectory
from beam_pipelines.filters.base import TrajectoryFilter


class NoToolError(TrajectoryFilter):
    """No tool call failed (sandbox errors, bad arguments, unreadable tool images)."""

    name = "tool_error"

    def check(self, traj: Trajectory) -> str | None:
        for number, step in enumerate(traj.steps, start=1):
            if step.tool_call is None:
                continue
            if step.observation is None:
                return f"step {number}: {step.tool_call.name} was never run ({step.error})"
            if step.observation.error is not None:
                error = step.observation.error[:200]
                return f"step {number}: {step.tool_call.name} failed: {error}"
        return None
