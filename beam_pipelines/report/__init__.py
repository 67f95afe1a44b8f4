"""The run report: a static, self-contained HTML view of one annotate run.

`python -m beam_pipelines report --output <root> [--run <run_id>]` writes `index.html` (run
summary, plots, failures by class, a searchable list of trajectories) and one page per
trajectory (the image with every crop box drawn on it, each turn's reasoning, tool call,
observation and images, the answer against the ground truth). See `docs/report.md`.
"""

from beam_pipelines.report.build import (
    DEFAULT_MAX_TRAJECTORIES,
    ReportResult,
    build_report,
    print_report_path,
)

__all__ = ["DEFAULT_MAX_TRAJECTORIES", "ReportResult", "build_report", "print_report_path"]
