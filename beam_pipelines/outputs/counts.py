"""`RunCounts`: what a run did, counted from its outputs (the outputs are the truth).

The one definition of a run's final counts: the end-of-run summary, the manifest's `counts`
and the report all count with it. Answer rows are deduplicated by id (a retried bundle on a
distributed runner can write a job's row twice; both are the same job); every failure row
counts. The live progress display and Beam's counters count as the run goes and may differ
from these (a retried bundle counts twice there); what is reported at the end comes from here.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from beam_pipelines.io.files import write_bytes
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.outputs.readers import iter_answers, iter_failures


@dataclass
class RunCounts:
    """Counts over a run's answer and failure rows, added one row at a time."""

    statuses: Counter[str] = field(default_factory=Counter)
    failures_by_class: Counter[str] = field(default_factory=Counter)
    graded: int = 0
    correct: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: int = 0
    duplicate_rows: int = 0
    answered_ids: set[str] = field(default_factory=set, repr=False)

    @property
    def answered(self) -> int:
        return self.statuses.get("answered", 0)

    @property
    def max_turns(self) -> int:
        return self.statuses.get("max_turns", 0)

    @property
    def failed(self) -> int:
        return sum(self.failures_by_class.values())

    @property
    def finished(self) -> int:
        return sum(self.statuses.values()) + self.failed

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None

    def add_answer(self, row: dict[str, Any]) -> bool:
        """Count one answer row; False (and nothing counted) for an id already counted."""
        job_id = str(row.get("id"))
        if job_id in self.answered_ids:
            self.duplicate_rows += 1
            return False
        self.answered_ids.add(job_id)
        self.statuses[str(row.get("status"))] += 1
        if row.get("correct") is not None:
            self.graded += 1
            self.correct += bool(row["correct"])
        self.prompt_tokens += int(row.get("prompt_tokens") or 0)
        self.completion_tokens += int(row.get("completion_tokens") or 0)
        self.tool_calls += int(row.get("tool_calls") or 0)
        return True

    def add_failure(self, row: dict[str, Any]) -> None:
        self.failures_by_class[str(row.get("error_class") or "unknown")] += 1

    def to_dict(self) -> dict[str, Any]:
        """The counts as the manifest records them (failure classes, most frequent first)."""
        return {
            "answered": self.answered,
            "max_turns": self.max_turns,
            "failed": self.failed,
            "failures_by_class": dict(self.failures_by_class.most_common()),
            "finished": self.finished,
            "graded": self.graded,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tool_calls": self.tool_calls,
        }


def count_run(layout: OutputLayout) -> RunCounts:
    """Read the run's answers and failures back, as streams, and count them."""
    counts = RunCounts()
    for row in iter_answers(layout.answers_glob()):
        counts.add_answer(row)
    for row in iter_failures(layout.failures_glob()):
        counts.add_failure(row)
    return counts


def write_counts(layout: OutputLayout, counts: RunCounts) -> str:
    """Write the run's counts to `counts.json` (the file its manifest names), with when they
    were counted; returns its path."""
    data = {"run_id": layout.run_id, "counted_at": datetime.now(UTC).isoformat()}
    data.update(counts.to_dict())
    write_bytes(layout.counts, json.dumps(data, indent=2, sort_keys=True).encode("utf-8") + b"\n")
    return layout.counts
