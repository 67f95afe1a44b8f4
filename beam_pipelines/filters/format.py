"""`format`: every assistant turn parses under the trajectory's protocol and opens with
`<think>` (the parser also reads R1V4's habit of opening with `</think>` after an
observation, but training data keeps the canonical form, as R1V4's own format filter does)."""

from __future__ import annotations

from beam_pipelines.agent import loop
from beam_pipelines.agent.records import Trajectory
from beam_pipelines.filters.base import TrajectoryFilter


class FormatValid(TrajectoryFilter):
    """Every assistant turn parses under the trajectory's protocol."""

    name = "format"

    def check(self, traj: Trajectory) -> str | None:
        if traj.format_errors:
            return f"{traj.format_errors} malformed turn(s) during the run"
        protocol = loop.protocol_of(traj)
        turns = [m for m in traj.messages if m.get("role") == "assistant"]
        for number, message in enumerate(turns, start=1):
            content = message.get("content")
            parsed = protocol.parse(content if isinstance(content, str) else "", traj.tools)
            if parsed.error is not None:
                return f"turn {number}: {parsed.error}"
            if not str(content).lstrip().startswith("<think>"):
                return f"turn {number}: does not open with <think>"
            if not parsed.think:
                return f"turn {number}: empty reasoning"
        return None
