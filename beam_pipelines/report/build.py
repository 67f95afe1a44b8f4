"""`build_report`: one run's outputs in, a static HTML report out.

```
answers + failures (streamed) -> RunStats + Sample(max_trajectories)
traces of the sample (streamed, shard by shard) -> one page each (+ copied images)
-> index.html: summary, plots, failures by class, the trajectory list
```

The report is written under `<root>/runs/<run_id>/report/` unless told otherwise, with
`index.html`, `trajectories/<key>.html` and `assets/`. Memory stays bounded by the sample:
rows are counted as they stream past, and a trace is rendered and dropped as soon as it is
read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from beam_pipelines.agent.loop import from_trace
from beam_pipelines.io.files import join, write_bytes
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.outputs.readers import (
    iter_answers,
    iter_failures,
    iter_traces,
    read_manifest,
    resolve_run,
)
from beam_pipelines.report import charts
from beam_pipelines.report.assets import ImageCopier
from beam_pipelines.report.pages import (
    PAGES,
    build_view,
    content_security_policy,
    list_script,
    page_name,
    render,
)
from beam_pipelines.report.stats import (
    Candidate,
    RunStats,
    Sample,
    answer_candidate,
    failure_candidate,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_TRAJECTORIES = 500
REPORT_DIR = "report"
#: Characters of a question / an answer shown in the list (pages show them whole).
QUESTION_CHARS = 300
ANSWER_CHARS = 120


@dataclass(frozen=True)
class ReportResult:
    """Where the report is and what it covers."""

    index: str
    run_id: str
    pages: int
    trajectories: int
    images: int


@dataclass(frozen=True)
class Row:
    """One line of the trajectory list."""

    id: str
    href: str | None
    missing: str
    status: str
    error_class: str | None
    correct: bool | None
    turns: int | None
    tool_calls: int | None
    tools: tuple[str, ...]
    answer: str
    truth: str
    question: str
    latency_s: float | None
    search: str

    @property
    def correct_key(self) -> str:
        return "none" if self.correct is None else ("yes" if self.correct else "no")


def _clip(text: Any, limit: int) -> str:
    if text is None:
        return ""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _row(candidate: Candidate, view: Any | None, href: str | None, missing: str = "") -> Row:
    if view is not None:
        answer = view.choice or view.answer
        truth, question, tools = view.truth, view.question, tuple(view.tools)
        turns = view.turn_count if candidate.turns is None else candidate.turns
        tool_calls = view.tool_calls if candidate.tool_calls is None else candidate.tool_calls
    else:
        answer, truth, question, tools = candidate.choice or candidate.answer, None, "", ()
        turns, tool_calls = candidate.turns, candidate.tool_calls
    correct = candidate.correct if view is None else view.correct
    if candidate.status == "failed":
        correct = None
    error_class = candidate.error_class or (view.error_class if view is not None else None)
    searchable = " ".join(
        str(part)
        for part in (candidate.id, question, answer, truth, error_class, candidate.error)
        if part
    )
    return Row(
        id=candidate.id,
        href=href,
        missing=missing,
        status=candidate.status,
        # max_turns rows carry the class "max_turns": the status already says it.
        error_class=error_class if candidate.status == "failed" else None,
        correct=correct,
        turns=turns,
        tool_calls=tool_calls,
        tools=tools,
        answer=_clip(answer, ANSWER_CHARS),
        truth=_clip(truth, ANSWER_CHARS),
        question=_clip(question, QUESTION_CHARS),
        latency_s=candidate.latency_s,
        search=_clip(searchable, 2000).lower(),
    )


def _throughput(stats: RunStats, manifest: Mapping[str, Any]) -> dict[str, str]:
    wall = manifest.get("wall_s")
    if not isinstance(wall, int | float) or wall <= 0:
        return {"wall": "-", "jobs": "-", "tokens": "-"}
    tokens = stats.counts.prompt_tokens + stats.counts.completion_tokens
    return {
        "wall": f"{wall:.1f} s",
        "jobs": f"{stats.counts.finished / wall:.2f}",
        "tokens": f"{tokens / wall:,.0f}",
    }


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _run_info(manifest: Mapping[str, Any], stats: RunStats) -> list[tuple[str, str]]:
    config = _mapping(manifest.get("config"))
    endpoint = _mapping(config.get("endpoint"))
    info = [
        ("model", config.get("model_label") or endpoint.get("model_name")),
        ("protocol", config.get("protocol")),
        ("tools", ", ".join(config.get("tools") or []) or None),
        ("max turns", config.get("max_turns")),
        ("input", config.get("input")),
        ("started", manifest.get("started_at")),
        ("finished", manifest.get("finished_at")),
        ("skipped (done before)", _mapping(manifest.get("counts")).get("skipped")),
        ("duplicate answer rows", stats.counts.duplicate_rows or None),
    ]
    return [(k, str(v)) for k, v in info if v not in (None, "")]


def build_report(
    root: str,
    run_id: str | None = None,
    *,
    max_trajectories: int = DEFAULT_MAX_TRAJECTORIES,
    report_dir: str | None = None,
) -> ReportResult:
    """Write the report of `run_id` (the newest run when None) and return where it is.

    At most `max_trajectories` trajectories get a page and a list row: a deterministic sample
    by id hash when the run has more (the summary always counts every row).
    """
    layout: OutputLayout = resolve_run(root, run_id)
    out = report_dir or join(layout.run_dir, REPORT_DIR)
    manifest = read_manifest(layout)

    stats = RunStats()
    sample = Sample(max_trajectories)
    for answer in iter_answers(layout.answers_glob()):
        if stats.add_answer(answer):
            sample.offer(answer_candidate(answer))
    for failure in iter_failures(layout.failures_glob()):
        if stats.add_failure(failure):
            sample.offer(failure_candidate(failure))
    total = stats.trajectories
    candidates = {c.id: c for c in sample.candidates()}

    copier = ImageCopier(out)
    csp_page = content_security_policy(None)
    rows: dict[str, Row] = {}
    for trace in iter_traces(layout, {c.id: c.trace_uri for c in candidates.values()}):
        candidate = candidates[trace["id"]]
        try:
            view = build_view(from_trace(trace), copier)
        except (KeyError, ValueError, TypeError) as e:
            log.warning("report: unreadable trace %s: %s", candidate.id, e)
            rows[candidate.id] = _row(candidate, None, None, f"unreadable trace: {e}")
            continue
        name = page_name(candidate.id)
        html = render("trajectory.html", t=view, run_id=layout.run_id, csp=csp_page)
        write_bytes(join(out, PAGES, name), html.encode("utf-8"))
        rows[candidate.id] = _row(candidate, view, f"{PAGES}/{name}")
    for job_id, candidate in candidates.items():
        if job_id not in rows:
            rows[job_id] = _row(candidate, None, None, "trace not found")

    ordered = [rows[i] for i in sorted(rows)]
    pages = {r.id: r.href for r in ordered if r.href}
    if total > len(candidates):
        note = (
            f"Showing a sample of {len(candidates):,} of the run's {total:,} trajectories "
            f"(the --max-trajectories cap; chosen by a hash of the id, so the same run gives "
            f"the same sample). The summary above counts every row."
        )
    else:
        note = f"All {total:,} trajectories of the run."
    script = list_script()
    html = render(
        "index.html",
        csp=content_security_policy(script),
        script=script,
        run_id=layout.run_id,
        root=root,
        manifest_status=manifest.get("status", "unknown"),
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        stats=stats,
        throughput=_throughput(stats, manifest),
        run_info=_run_info(manifest, stats),
        charts={
            "turns": charts.bar_chart(charts.integer_bars(stats.turns), "turns per job", "turns"),
            "tool_calls": charts.bar_chart(
                charts.integer_bars(stats.tool_calls_per_job), "tool calls per job", "tool calls"
            ),
            "latency": charts.bar_chart(
                charts.binned_bars(stats.latencies_s), "job latency", "seconds (bin start)"
            ),
        },
        sample_note=note,
        rows=ordered,
        pages=pages,
        statuses=sorted({r.status for r in ordered}),
        tools=sorted({t for r in ordered for t in r.tools}),
    )
    index = join(out, "index.html")
    write_bytes(index, html.encode("utf-8"))
    return ReportResult(
        index=index,
        run_id=layout.run_id,
        pages=len(pages),
        trajectories=total,
        images=copier.copied,
    )


def print_report_path(
    layout: OutputLayout, max_trajectories: int = DEFAULT_MAX_TRAJECTORIES
) -> None:
    """Write a finished run's report and print its path as the summary's last output line.

    Called by `annotate` and `demo` after the summary. A report that cannot be written is a
    warning, never a failed run: the run's outputs are complete without it.
    """
    try:
        result = build_report(layout.root, layout.run_id, max_trajectories=max_trajectories)
    except Exception as e:  # the run is done; its report is a convenience on top
        log.warning("report: not written: %s", e, exc_info=True)
        print(f"{'report:':10} not written ({type(e).__name__}: {e})", flush=True)
        return
    print(f"{'report:':10} {result.index}", flush=True)
