"""What every filter and judge is: a named part of the filter pipeline with per-worker
setup and teardown, a check of a whole trajectory (filters) or of one tool image and the
reasoning after it (judges), and the records a chain returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from beam_pipelines.agent.records import ImageRef, Trajectory


@dataclass(frozen=True)
class Rejection:
    """Why a trajectory was not kept: the filter that rejected it and its reason."""

    filter: str
    reason: str


@dataclass(frozen=True)
class Verdict:
    """A trajectory and, when it is not kept, the rejection."""

    trajectory: Trajectory
    rejection: Rejection | None = None

    @property
    def kept(self) -> bool:
        return self.rejection is None


class WorkerResource(ABC):
    """A named part of the filter pipeline that may hold resources (tools, clients)."""

    name: ClassVar[str]

    def setup(self) -> None:
        """Acquire resources (called once per worker before first use)."""
        return None

    def teardown(self) -> None:
        """Release what `setup` acquired."""
        return None


class TrajectoryFilter(WorkerResource):
    """One named check of a whole trajectory."""

    @abstractmethod
    def check(self, traj: Trajectory) -> str | None:
        """The reason to reject `traj`, or None to keep it."""


@dataclass(frozen=True)
class ImageClaim:
    """One tool-produced image and the reasoning that follows it."""

    step: int
    image: ImageRef
    view: str | None
    reasoning: str


class ImageJudge(WorkerResource):
    """Decides whether one tool-produced image shows what the reasoning after it says."""

    @abstractmethod
    def judge(self, traj: Trajectory, claim: ImageClaim) -> str | None:
        """Why the image and the reasoning disagree, or None when they agree."""
