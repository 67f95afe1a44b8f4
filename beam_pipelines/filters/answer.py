"""`answer`: the final answer matches the job's ground truth."""

from __future__ import annotations

from beam_pipelines.agent.records import Trajectory, _normalise, parse_choice
from beam_pipelines.filters.base import TrajectoryFilter


class AnswerMatches(TrajectoryFilter):
    """The final answer matches the job's ground truth (the same rule as answer rows)."""

    name = "answer"

    def check(self, traj: Trajectory) -> str | None:
        job = traj.job
        if traj.status != "answered" or traj.final is None:
            return f"no answer (status {traj.status})"
        if job.answer is None:
            return "the job has no ground truth to check the answer against"
        answer = traj.final.answer
        if job.options:
            choice = parse_choice(answer, job.options)
            if choice is None:
                return f"the answer {answer[:80]!r} names no option"
            if choice != job.answer:
                return f"answered {choice}, the ground truth is {job.answer}"
            return None
        if _normalise(answer) != _normalise(job.answer):
            return f"answered {answer[:80]!r}, the ground truth is {job.answer[:80]!r}"
        return None
