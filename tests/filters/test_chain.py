"""The chain: first rejection wins, a failing check rejects under its name, dedup keeps the
first sample, unknown names are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pipeline.helpers import answered, say, started

from beam_pipelines.agent.records import Trajectory
from beam_pipelines.filters import FilterChain, TrajectoryFilter, build_chain


def test_a_chain_stops_at_the_first_rejection_and_dedup_keeps_the_first_sample(
    tmp_path: Path,
) -> None:
    def sample(k: int, letter: str) -> Trajectory:
        traj = started(tmp_path, job_id=f"j#{k}")
        meta = {"source_id": "j", "sample": k, "seed": k}
        traj = dataclasses.replace(traj, job=dataclasses.replace(traj.job, meta=meta))
        return say(
            traj, f"<think>It is {'y' if letter == 'B' else 'x'}.</think><answer>{letter}</answer>"
        )

    chain = build_chain(["answer", "format", "final_think", "dedup"])
    verdicts = chain.apply([sample(2, "B"), sample(1, "A"), sample(0, "B")])
    assert [v.trajectory.id for v in verdicts] == ["j#0", "j#1", "j#2"]
    assert verdicts[0].kept
    assert verdicts[1].rejection.filter == "answer"
    assert verdicts[2].rejection.filter == "dedup"
    assert verdicts[2].rejection.reason == "the same turns as j#0"
    assert chain.names == ("answer", "format", "final_think", "dedup")


def test_a_check_that_fails_rejects_under_its_name(tmp_path: Path) -> None:
    class Broken(TrajectoryFilter):
        name = "broken"

        def check(self, traj: Trajectory) -> str | None:
            raise OSError("storage is down")

    rejection = FilterChain([Broken()], dedup=False).check(answered(started(tmp_path)))
    assert rejection.filter == "broken" and "OSError: storage is down" in rejection.reason


def test_unknown_filters_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown filter"):
        build_chain(["answer", "vibes"])
