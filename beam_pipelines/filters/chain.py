"""The chain: filters by name in the order given, first rejection wins, then `dedup` within
each source job; the name registry and the default order."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from beam_pipelines.agent.records import Trajectory
from beam_pipelines.filters.answer import AnswerMatches
from beam_pipelines.filters.base import ImageJudge, Rejection, TrajectoryFilter, Verdict
from beam_pipelines.filters.final_think import FinalThinkAgrees
from beam_pipelines.filters.format import FormatValid
from beam_pipelines.filters.judge import ImageReasoningConsistency
from beam_pipelines.filters.marker_judge import MarkerJudge
from beam_pipelines.filters.recrop import NoRepeatedCrop
from beam_pipelines.filters.replay import ToolReplay
from beam_pipelines.filters.tool_error import NoToolError

#: Filter names in their default order (cheap first); `recrop` is off unless asked for.
DEFAULT_FILTERS = ("answer", "format", "tool_error", "final_think", "replay", "judge", "dedup")
FILTER_NAMES = (
    "answer",
    "format",
    "tool_error",
    "recrop",
    "final_think",
    "replay",
    "judge",
    "dedup",
)
DEDUP = "dedup"

#: The filters that take no settings, by name.
_PLAIN_FILTERS: dict[str, type[TrajectoryFilter]] = {
    "answer": AnswerMatches,
    "format": FormatValid,
    "tool_error": NoToolError,
    "recrop": NoRepeatedCrop,
    "final_think": FinalThinkAgrees,
}


def signature(traj: Trajectory) -> str:
    """What makes two trajectories the same: the exact sequence of the model's turns."""
    turns = [m.get("content") for m in traj.messages if m.get("role") == "assistant"]
    return hashlib.sha256(json.dumps(turns, ensure_ascii=False).encode("utf-8")).hexdigest()


class FilterChain:
    """Filters in order, first rejection wins; then `dedup` within each source job."""

    def __init__(self, filters: Sequence[TrajectoryFilter], dedup: bool = True) -> None:
        names = [f.name for f in filters]
        if len(set(names)) != len(names):
            raise ValueError(f"a filter is listed twice: {names}")
        self.filters = tuple(filters)
        self.dedup = dedup

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.filters) + ((DEDUP,) if self.dedup else ())

    def setup(self) -> None:
        for f in self.filters:
            f.setup()

    def teardown(self) -> None:
        for f in self.filters:
            f.teardown()

    def check(self, traj: Trajectory) -> Rejection | None:
        """The first rejection, or None. A check that fails (an image that cannot be read
        again, a tool that cannot start) rejects the trajectory under that filter's name: a
        trajectory nobody could check is not kept, and the reason says so."""
        for f in self.filters:
            try:
                reason = f.check(traj)
            except Exception as e:
                reason = f"the check failed: {type(e).__name__}: {str(e)[:300]}"
            if reason is not None:
                return Rejection(f.name, reason)
        return None

    def apply(self, trajectories: Iterable[Trajectory]) -> list[Verdict]:
        """Verdicts for the trajectories of one source job (dedup keeps the lowest sample)."""
        ordered = sorted(trajectories, key=_sample_order)
        verdicts = [Verdict(t, self.check(t)) for t in ordered]
        if not self.dedup:
            return verdicts
        first: dict[str, str] = {}
        out = []
        for verdict in verdicts:
            if verdict.kept:
                key = signature(verdict.trajectory)
                if key in first:
                    reason = f"the same turns as {first[key]}"
                    verdict = Verdict(verdict.trajectory, Rejection(DEDUP, reason))
                else:
                    first[key] = verdict.trajectory.id
            out.append(verdict)
        return out


def _sample_order(traj: Trajectory) -> tuple[int, str]:
    sample = traj.job.meta.get("sample")
    return (sample if isinstance(sample, int) else 0, traj.id)


def build_chain(
    names: Sequence[str],
    judge: ImageJudge | None = None,
    replay_compare: str = "hash",
    tool_settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> FilterChain:
    """A chain from filter names (see `FILTER_NAMES`), in the order given; `dedup` runs last.

    `tool_settings` are the run's (replay rebuilds the tools with them)."""
    unknown = [n for n in names if n not in FILTER_NAMES]
    if unknown:
        raise ValueError(f"unknown filter(s) {unknown}; known: {', '.join(FILTER_NAMES)}")
    filters: list[TrajectoryFilter] = []
    for name in names:
        if name in _PLAIN_FILTERS:
            filters.append(_PLAIN_FILTERS[name]())
        elif name == "replay":
            filters.append(ToolReplay(compare=replay_compare, settings=tool_settings))
        elif name == "judge":
            filters.append(ImageReasoningConsistency(judge or MarkerJudge()))
    return FilterChain(filters, dedup=DEDUP in names)
