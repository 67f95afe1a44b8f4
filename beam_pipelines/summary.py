"""The end-of-run summary: the run's counts (`outputs.counts`), its wall time, how many jobs
were skipped as done before, and where everything is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from beam_pipelines.outputs.counts import RunCounts, count_run
from beam_pipelines.outputs.layout import OutputLayout


@dataclass
class RunSummary:
    """What one run did."""

    run_id: str
    counts: RunCounts = field(default_factory=RunCounts)
    skipped: int = 0
    wall_s: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def jobs_per_s(self) -> float:
        return self.counts.finished / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            **self.counts.to_dict(),
            "skipped": self.skipped,
            "wall_s": self.wall_s,
            "jobs_per_s": self.jobs_per_s,
            "outputs": self.outputs,
        }


def summarize(layout: OutputLayout, wall_s: float, skipped: int = 0) -> RunSummary:
    """Count the run's outputs."""
    return RunSummary(
        run_id=layout.run_id,
        counts=count_run(layout),
        skipped=skipped,
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
    counts = summary.counts
    accuracy = counts.accuracy
    rows = [
        ("answered", str(counts.answered)),
        ("max_turns", str(counts.max_turns)),
        ("failed", str(counts.failed)),
        *((f"  {k}", str(v)) for k, v in counts.failures_by_class.most_common()),
        ("skipped (done before)", str(summary.skipped)),
        (
            "accuracy",
            f"{accuracy:.1%} ({counts.correct}/{counts.graded})" if accuracy is not None else "-",
        ),
        (
            "tokens (prompt + completion)",
            f"{counts.prompt_tokens:,} + {counts.completion_tokens:,}",
        ),
        ("tool calls", str(counts.tool_calls)),
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
