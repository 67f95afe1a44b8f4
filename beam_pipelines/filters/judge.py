"""`judge`: image-reasoning consistency. Every tool-produced image must show what the
reasoning after it says, as an `ImageJudge` decides."""

from __future__ import annotations

from beam_pipelines.agent.protocols import attached_images
from beam_pipelines.agent.records import Trajectory
from beam_pipelines.filters.base import ImageClaim, ImageJudge, TrajectoryFilter


def image_claims(traj: Trajectory) -> list[ImageClaim]:
    """Every image a successful tool call showed, with the reasoning of the next turn."""
    thinks = [s.think for s in traj.steps] + [traj.final.think if traj.final else ""]
    views = _observation_views(traj)
    claims: list[ImageClaim] = []
    shown = 0
    for number, step in enumerate(traj.steps, start=1):
        if step.tool_call is None or step.observation is None:
            continue
        for image in step.observation.images[: attached_images(step.observation)]:
            view = views[shown] if shown < len(views) else None
            shown += 1
            claims.append(ImageClaim(number, image, view, thinks[number]))
    return claims


def _observation_views(traj: Trajectory) -> list[str]:
    """The view URIs of observation images, in order (what the model was shown)."""
    uris: list[str] = []
    for message in traj.messages[2:]:
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, list):
            uris += [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
    return uris


class ImageReasoningConsistency(TrajectoryFilter):
    """Every tool-produced image agrees with the reasoning that follows it (per the judge)."""

    name = "judge"

    def __init__(self, judge: ImageJudge) -> None:
        self.judge = judge

    def setup(self) -> None:
        self.judge.setup()

    def teardown(self) -> None:
        self.judge.teardown()

    def check(self, traj: Trajectory) -> str | None:
        for claim in image_claims(traj):
            problem = self.judge.judge(traj, claim)
            if problem:
                return f"step {claim.step} ({self.judge.name}): {problem}"
        return None
