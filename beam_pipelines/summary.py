"""The end-of-run summary, computed from what the run wrote (the outputs are the truth).

Counts by status and by failure class, accuracy over jobs with ground truth, tokens, tool
calls, jobs per second and where everything is. Answer rows are deduplicated by id, the way
every reader of the outputs should read them (a retried bundle on a distributed runner can
write a job's row twice; both copies are the same job).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from rich.console import Console
from rich.table import Table

from beam_pipelines.io.files import read_bytes
from beam_pipelines.io.layout import OutputLayout


def _paths(pattern: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def read_answers(pattern: str) -> list[dict[str, Any]]:
    """Answer rows of the shards matching `pattern`, one per id."""
    rows: dict[str, dict[str, Any]] = {}
    for path in _paths(pattern):
        for row in pq.read_table(io.BytesIO(read_bytes(path))).to_pylist():
            rows.setdefault(row["id"], row)
    return list(rows.values())


def read_failures(pattern: str) -> list[dict[str, Any]]:
    """Failure rows of the shards matching `pattern`."""
    rows = []
    for path in _paths(pattern):
        for line in read_bytes(path).decode("utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


@dataclass
class RunSummary:
    """What one run did."""

    run_id: str
    answered: int = 0
    max_turns: int = 0
    failed: int = 0
    skipped: int = 0
    failures_by_class: dict[str, int] = field(default_factory=dict)
    graded: int = 0
    correct: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: int = 0
    wall_s: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.answered + self.max_turns + self.failed

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None

    @property
    def jobs_per_s(self) -> float:
        return self.finished / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "finished": self.finished,
            "accuracy": self.accuracy,
            "jobs_per_s": self.jobs_per_s,
        }


def summarize(layout: OutputLayout, wall_s: float, skipped: int = 0) -> RunSummary:
    """Read the run's answers and failures back and count them."""
    answers = read_answers(layout.answers_glob())
    failures = read_failures(layout.failures_glob())
    statuses = Counter(row["status"] for row in answers)
    graded = [row for row in answers if row["correct"] is not None]
    return RunSummary(
        run_id=layout.run_id,
        answered=statuses.get("answered", 0),
        max_turns=statuses.get("max_turns", 0),
        failed=len(failures),
        skipped=skipped,
        failures_by_class=dict(Counter(f["error_class"] for f in failures).most_common()),
        graded=len(graded),
        correct=sum(1 for row in graded if row["correct"]),
        prompt_tokens=sum(row["prompt_tokens"] for row in answers),
        completion_tokens=sum(row["completion_tokens"] for row in answers),
        tool_calls=sum(row["tool_calls"] for row in answers),
        wall_s=wall_s,
        outputs={
            "answers": layout.answers_dir,
            "traces": layout.traces_dir,
            "failures": layout.failures_dir,
            "images": layout.images_dir,
            "manifest": layout.manifest,
        },
    )


def summary_table(summary: RunSummary) -> Table:
    """The summary as a two-column table."""
    table = Table(title=f"run {summary.run_id}", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    accuracy = summary.accuracy
    rows = [
        ("answered", str(summary.answered)),
        ("max_turns", str(summary.max_turns)),
        ("failed", str(summary.failed)),
        *((f"  {k}", str(v)) for k, v in summary.failures_by_class.items()),
        ("skipped (done before)", str(summary.skipped)),
        (
            "accuracy",
            f"{accuracy:.1%} ({summary.correct}/{summary.graded})" if accuracy is not None else "-",
        ),
        (
            "tokens (prompt + completion)",
            f"{summary.prompt_tokens:,} + {summary.completion_tokens:,}",
        ),
        ("tool calls", str(summary.tool_calls)),
        ("wall time", f"{summary.wall_s:.1f} s"),
        ("jobs/s", f"{summary.jobs_per_s:.2f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def print_summary(summary: RunSummary, console: Console | None = None) -> None:
    """The table, then the output paths in full (a table would cut long URIs)."""
    console = console or Console()
    console.print(summary_table(summary))
    for name, path in summary.outputs.items():
        console.print(f"{name + ':':10} {path}", soft_wrap=True, highlight=False)
