"""Run statistics and the trajectory sample, computed in one streaming pass over the rows.

`RunStats` counts what the summary shows (the run's `RunCounts`, plus latency, turn and
tool-call histograms, failures by class with a few examples each); `Sample` keeps a bounded,
deterministic sample of the trajectories that get a page. Both take rows one at a time, so a
run of any size is summarised in memory proportional to its distinct ids plus the sample.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from beam_pipelines.outputs.counts import RunCounts

#: Examples kept per failure class.
FAILURE_EXAMPLES = 5
#: Characters kept of a failure message.
MESSAGE_CHARS = 500


@dataclass(frozen=True)
class Candidate:
    """A trajectory the report may show: its row as the list needs it, and its trace URI."""

    id: str
    status: str
    trace_uri: str | None
    correct: bool | None = None
    turns: int | None = None
    tool_calls: int | None = None
    answer: str | None = None
    choice: str | None = None
    latency_s: float | None = None
    error_class: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class FailureExample:
    """One failure row, shortened for the page."""

    id: str | None
    stage: str
    message: str
    has_trace: bool


@dataclass
class RunStats:
    """The run's counts (`outputs.counts.RunCounts`) and what the report shows besides them:
    turn, tool-call and latency distributions, failure stages and examples, trajectories."""

    counts: RunCounts = field(default_factory=RunCounts)
    latency_sum_s: float = 0.0
    latency_count: int = 0
    latencies_s: list[float] = field(default_factory=list)
    turns: Counter[int] = field(default_factory=Counter)
    tool_calls_per_job: Counter[int] = field(default_factory=Counter)
    failure_stages: dict[str, Counter[str]] = field(default_factory=dict)
    failure_examples: dict[str, list[FailureExample]] = field(default_factory=dict)
    trajectories: int = 0
    _failed_traces: set[str] = field(default_factory=set, repr=False)
    latency_cap: int = 100_000

    @property
    def mean_latency_s(self) -> float | None:
        return self.latency_sum_s / self.latency_count if self.latency_count else None

    def add_answer(self, row: dict[str, Any]) -> bool:
        """Count one answer row; False (and nothing counted) for a duplicate id."""
        if not self.counts.add_answer(row):
            return False
        self.trajectories += 1
        self.turns[int(row.get("turns") or 0)] += 1
        self.tool_calls_per_job[int(row.get("tool_calls") or 0)] += 1
        latency = row.get("latency_s")
        if isinstance(latency, int | float):
            self.latency_sum_s += float(latency)
            self.latency_count += 1
            # Enough for a histogram's shape; a bigger run keeps the first `latency_cap`.
            if len(self.latencies_s) < self.latency_cap:
                self.latencies_s.append(float(latency))
        return True

    def add_failure(self, row: dict[str, Any]) -> bool:
        """Count one failure row (an example when its class has room).

        True when the row is a trajectory not seen before: the job started the agent, so it
        has a (partial) trace the report can show.
        """
        self.counts.add_failure(row)
        error_class = str(row.get("error_class") or "unknown")
        stage = str(row.get("stage") or "")
        self.failure_stages.setdefault(error_class, Counter())[stage] += 1
        examples = self.failure_examples.setdefault(error_class, [])
        if len(examples) < FAILURE_EXAMPLES:
            message = str(row.get("message") or "")
            if len(message) > MESSAGE_CHARS:
                message = message[:MESSAGE_CHARS] + "…"
            job_id = row.get("id")
            examples.append(
                FailureExample(
                    id=str(job_id) if job_id is not None else None,
                    stage=stage,
                    message=message,
                    has_trace=bool(row.get("trace_uri")),
                )
            )
        job_id = row.get("id")
        if not row.get("trace_uri") or job_id is None:
            return False
        key = str(job_id)
        if key in self.counts.answered_ids or key in self._failed_traces:
            return False
        self._failed_traces.add(key)
        self.trajectories += 1
        return True


def answer_candidate(row: dict[str, Any]) -> Candidate:
    return Candidate(
        id=str(row["id"]),
        status=str(row.get("status")),
        trace_uri=row.get("trace_uri"),
        correct=row.get("correct"),
        turns=row.get("turns"),
        tool_calls=row.get("tool_calls"),
        answer=row.get("answer"),
        choice=row.get("choice"),
        latency_s=row.get("latency_s"),
        error=row.get("error"),
    )


def failure_candidate(row: dict[str, Any]) -> Candidate:
    """A failure row whose job started the agent (it has a trace)."""
    return Candidate(
        id=str(row["id"]),
        status="failed",
        trace_uri=row["trace_uri"],
        error_class=row.get("error_class"),
        error=row.get("message"),
    )


def sample_key(job_id: str) -> bytes:
    """The sample order: a hash of the id, so the sample does not depend on shard order."""
    return hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).digest()


class Sample:
    """The `cap` candidates with the smallest id hashes: a uniform, reproducible sample.

    Memory is O(cap) whatever the number of candidates offered; an id offered again while it
    is kept is ignored (callers offer each id once: `RunStats` tells which rows are new).
    """

    def __init__(self, cap: int) -> None:
        if cap < 0:
            raise ValueError("the sample cap must be at least 0")
        self.cap = cap
        self._heap: list[tuple[bytes, int, Candidate]] = []  # max-heap by negated key
        self._ids: set[str] = set()
        self._order = 0

    def offer(self, candidate: Candidate) -> None:
        if candidate.id in self._ids or self.cap == 0:
            return
        key = bytes(255 - b for b in sample_key(candidate.id))  # negate: heapq is a min-heap
        self._order += 1
        entry = (key, self._order, candidate)
        if len(self._heap) < self.cap:
            heapq.heappush(self._heap, entry)
            self._ids.add(candidate.id)
        elif key > self._heap[0][0]:
            dropped = heapq.heapreplace(self._heap, entry)
            self._ids.discard(dropped[2].id)
            self._ids.add(candidate.id)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._ids

    def __len__(self) -> int:
        return len(self._heap)

    def candidates(self) -> list[Candidate]:
        """The sample in id order."""
        return sorted((entry[2] for entry in self._heap), key=lambda c: c.id)
