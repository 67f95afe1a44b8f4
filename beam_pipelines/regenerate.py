"""The regenerate pipeline: N sampled trajectories per job, filtered, exported for SFT.

```
sample:  ReadJobs -> ExpandSamples (<id>#<k>, own seed) -> SkipDone -> ... the annotate graph
filter:  ReadTraces (every run under the root) -> one trace per sample -> GroupByKey(source job)
           -> ApplyFilters (filters.FilterChain) -> kept traces, rejected rows, SFT rows
```

The sampling half is the annotate pipeline itself (`annotate.run` with `Samples`), so it
resumes the same way: a rerun skips every sample that has an answer row. The filter half reads
every trace under the output root, whatever run wrote it, and is recomputed in full on every
run (it is a pure function of the traces), so its outputs always describe all the samples
there are. They go to the run's own folder:

```
runs/<run_id>/kept/part-*.jsonl.gz      kept traces (the trace objects, unchanged)
runs/<run_id>/rejected/part-*.jsonl     {id, source_id, sample, status, filter, reason}
runs/<run_id>/sft/part-*.jsonl          the SFT export of the kept traces (sft_export.py)
runs/<run_id>/filter_counts.json        kept ratio, rejections per filter, jobs with a kept sample
```
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.io.fileio import EmptyMatchTreatment, MatchFiles, ReadMatches
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from rich.console import Console
from rich.table import Table

from beam_pipelines import annotate
from beam_pipelines.agent.records import Trajectory
from beam_pipelines.filters import (
    DEFAULT_FILTERS,
    FilterChain,
    ImageJudge,
    MarkerJudge,
    ModelJudge,
    build_chain,
)
from beam_pipelines.io.files import join, write_bytes
from beam_pipelines.options import (
    AnnotateOptions,
    endpoint_address,
    parse_tools,
    tool_settings_from_options,
    with_default_runner,
)
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.outputs.readers import iter_lines
from beam_pipelines.sft_export import sft_record
from beam_pipelines.summary import print_summary
from beam_pipelines.transforms.samples import Samples

log = logging.getLogger(__name__)

#: Rank of a trace's status when one sample has several traces (a failed attempt, then a
#: rerun that answered it): the finished one wins.
_STATUS_RANK = {"answered": 0, "max_turns": 1, "failed": 2, "running": 3}


class RegenerateOptions(PipelineOptions):
    """`python -m beam_pipelines regenerate` options, on top of annotate's."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument(
            "--samples", type=int, default=4, help="trajectories sampled per job (%(default)s)"
        )
        parser.add_argument(
            "--sample_seed",
            "--sample-seed",
            type=int,
            default=0,
            help="base of the per-sample seeds (each sample's seed is a hash of it, the job "
            "id and the sample number)",
        )
        parser.add_argument(
            "--filters",
            default=",".join(DEFAULT_FILTERS),
            help="filters in the order they run, comma-separated; add `recrop` to reject "
            "repeated crops (default: %(default)s)",
        )
        parser.add_argument(
            "--judge",
            choices=("marker", "model"),
            default="marker",
            help="the image-reasoning judge: `marker` (heuristic for the synthetic task) or "
            "`model` (a served model at --judge_endpoint, default the run's own)",
        )
        parser.add_argument(
            "--judge_endpoint",
            "--judge-endpoint",
            default=None,
            help="the judge's model server, KIND:URL as --endpoint takes it",
        )
        parser.add_argument("--judge_model", "--judge-model", default="agent_vlm")
        parser.add_argument(
            "--replay_compare",
            "--replay-compare",
            choices=("hash", "perceptual"),
            default="hash",
            help="how replayed tool images are compared with the recorded ones",
        )


@dataclass
class FilterCounts:
    """What the filters did to every sample under the output root."""

    trajectories: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    jobs: int = 0
    jobs_with_kept: int = 0
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def kept_ratio(self) -> float | None:
        return self.kept / self.trajectories if self.trajectories else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kept_ratio": self.kept_ratio}


@dataclass(frozen=True)
class RegenerateResult:
    sampling: annotate.AnnotateResult
    counts: FilterCounts


def make_judge(opts: RegenerateOptions, endpoint: str | None) -> ImageJudge:
    if opts.judge == "marker":
        return MarkerJudge()
    address = opts.judge_endpoint or endpoint
    if not address:
        raise ValueError("--judge model needs --judge_endpoint (or --endpoint)")
    return ModelJudge(address, opts.judge_model)


def chain_from_options(options: PipelineOptions) -> FilterChain:
    opts = options.view_as(RegenerateOptions)
    names = parse_tools(opts.filters)
    judge = None
    if "judge" in names:
        judge = make_judge(opts, endpoint_address(options))
    return build_chain(names, judge, opts.replay_compare, tool_settings_from_options(options))


# --------------------------------------------------------------------------------------------
# The filter pipeline


def read_traces(readable: Any) -> Iterator[tuple[str, str]]:
    """A trace shard -> `(id, trace line)` for every trace in it (`ReadableFile.read`
    decompresses `.gz` by itself)."""
    for line in readable.read().decode("utf-8").splitlines():
        if line.strip():
            yield json.loads(line)["id"], line


def best_trace(lines: Sequence[str]) -> str:
    """One trace per sample: a finished one over a failed attempt, then the latest."""
    traces = [(json.loads(line), line) for line in lines]
    traces.sort(key=lambda t: t[0].get("finished_at") or "", reverse=True)
    traces.sort(key=lambda t: _STATUS_RANK.get(t[0].get("status"), 9))
    return traces[0][1]


def source_of(line: str) -> tuple[str, str]:
    trace = json.loads(line)
    meta = trace.get("job", {}).get("meta") or {}
    return str(meta.get("source_id", trace["id"])), line


class ApplyFilters(beam.DoFn):
    """`(source id, trace lines)` -> `("kept", trace line)` / `("rejected", row)` pairs."""

    def __init__(self, chain: FilterChain) -> None:
        self._chain = chain

    def setup(self) -> None:
        self._chain.setup()
        self._kept = Metrics.counter("regenerate", "kept")
        self._rejected = {
            name: Metrics.counter("regenerate", f"rejected_{name}") for name in self._chain.names
        }

    def teardown(self) -> None:
        self._chain.teardown()

    def process(self, element: tuple[str, Iterable[str]]) -> Iterator[tuple[str, str]]:
        _, lines = element
        by_id = {}
        for line in lines:
            traj = Trajectory.from_dict(json.loads(line))
            by_id[traj.id] = (traj, line)
        for verdict in self._chain.apply(t for t, _ in by_id.values()):
            traj = verdict.trajectory
            if verdict.rejection is None:
                self._kept.inc()
                yield "kept", by_id[traj.id][1]
                continue
            self._rejected[verdict.rejection.filter].inc()
            row = {
                "id": traj.id,
                "source_id": str(traj.job.meta.get("source_id", traj.id)),
                "sample": traj.job.meta.get("sample"),
                "status": traj.status,
                "filter": verdict.rejection.filter,
                "reason": verdict.rejection.reason,
            }
            yield "rejected", json.dumps(row, ensure_ascii=False)


def sft_line(line: str) -> str:
    return json.dumps(sft_record(Trajectory.from_dict(json.loads(line))), ensure_ascii=False)


def build_filter(pipeline: beam.Pipeline, layout: OutputLayout, chain: FilterChain) -> None:
    """Add the filter graph (module docstring) to `pipeline`."""
    verdicts = (
        pipeline
        | "MatchTraces" >> MatchFiles(layout.all_traces_glob(), EmptyMatchTreatment.ALLOW)
        | "ReadMatches" >> ReadMatches()
        | "ReadTraces" >> beam.FlatMap(read_traces)
        | "OnePerSample" >> beam.GroupByKey()
        | "BestTrace" >> beam.MapTuple(lambda _, lines: best_trace(list(lines)))
        | "BySource" >> beam.Map(source_of)
        | "GroupBySource" >> beam.GroupByKey()
        | "ApplyFilters" >> beam.ParDo(ApplyFilters(chain))
    )
    kept = verdicts | "Kept" >> beam.Filter(lambda v: v[0] == "kept") | "KeptLine" >> beam.Values()
    rejected = (
        verdicts
        | "Rejected" >> beam.Filter(lambda v: v[0] == "rejected")
        | "RejectedRow" >> beam.Values()
    )
    kept | "WriteKept" >> beam.io.WriteToText(
        join(layout.kept_dir, "part"), file_name_suffix=".jsonl.gz"
    )
    (
        kept
        | "SFT" >> beam.Map(sft_line)
        | "WriteSFT" >> beam.io.WriteToText(join(layout.sft_dir, "part"), file_name_suffix=".jsonl")
    )
    rejected | "WriteRejected" >> beam.io.WriteToText(
        join(layout.rejected_dir, "part"), file_name_suffix=".jsonl"
    )


def count_filtered(layout: OutputLayout, chain: FilterChain) -> FilterCounts:
    """Read the filter outputs back and count them (the outputs are the truth)."""
    rejected = [json.loads(line) for line in iter_lines(join(layout.rejected_dir, "part-*"))]
    sft = [json.loads(line) for line in iter_lines(join(layout.sft_dir, "part-*"))]
    by_filter = Counter(row["filter"] for row in rejected)
    sources_kept = {row["source_id"] for row in sft}
    return FilterCounts(
        trajectories=len(rejected) + len(sft),
        kept=len(sft),
        rejected={name: by_filter.get(name, 0) for name in chain.names},
        jobs=len(sources_kept | {row["source_id"] for row in rejected}),
        jobs_with_kept=len(sources_kept),
        outputs={
            "kept": layout.kept_dir,
            "rejected": layout.rejected_dir,
            "sft": layout.sft_dir,
            "counts": layout.filter_counts,
        },
    )


def run_filters(options: PipelineOptions, layout: OutputLayout, chain: FilterChain) -> FilterCounts:
    """Filter every sample under the root, write the outputs and `filter_counts.json`."""
    pipeline = beam.Pipeline(options=options)
    build_filter(pipeline, layout, chain)
    state = str(pipeline.run().wait_until_finish())
    if "DONE" not in state.upper():
        raise RuntimeError(f"the filter pipeline ended {state}")
    counts = count_filtered(layout, chain)
    data = json.dumps(counts.to_dict(), indent=2, sort_keys=True).encode("utf-8") + b"\n"
    write_bytes(counts.outputs["counts"], data)
    return counts


# --------------------------------------------------------------------------------------------
# Command line


def run(
    argv: Sequence[str] | None = None, test_pipeline: beam.Pipeline | None = None
) -> RegenerateResult:
    """Sample, then filter and export; returns what both halves did."""
    args = with_default_runner(list(sys.argv[1:] if argv is None else argv))
    options = PipelineOptions(args)
    opts = options.view_as(RegenerateOptions)
    chain = chain_from_options(options)  # bad filter options fail before any sampling
    sampling = annotate.run(args, test_pipeline, samples=Samples(opts.samples, opts.sample_seed))
    if sampling.state == "SUBMITTED":
        return RegenerateResult(sampling, FilterCounts())
    counts = run_filters(options, sampling.layout, chain)
    return RegenerateResult(sampling, counts)


def counts_table(counts: FilterCounts) -> Table:
    table = Table(title="filters", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    ratio = counts.kept_ratio
    table.add_row("trajectories", str(counts.trajectories))
    table.add_row(
        "kept",
        f"{counts.kept} ({ratio:.1%})" if ratio is not None else str(counts.kept),
    )
    for name, n in counts.rejected.items():
        table.add_row(f"  rejected by {name}", str(n))
    table.add_row("jobs with a kept sample", f"{counts.jobs_with_kept} of {counts.jobs}")
    return table


def print_counts(counts: FilterCounts, console: Console | None = None) -> None:
    console = console or Console()
    console.print(counts_table(counts))
    for name, path in counts.outputs.items():
        console.print(f"{name + ':':10} {path}", soft_wrap=True, highlight=False)


def print_help() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines regenerate",
        description="Sample N trajectories per job with the agent, filter them (answer, "
        "format, tool errors, final reasoning, tool replay, image-reasoning judge, dedup) and "
        "export the kept ones for SFT. Every annotate option applies; Beam options pass through.",
    )
    RegenerateOptions._add_argparse_args(parser.add_argument_group("regenerate"))
    AnnotateOptions._add_argparse_args(parser.add_argument_group("annotate"))
    parser.print_help()


def main(argv: Sequence[str]) -> int:
    """`python -m beam_pipelines regenerate ...`: 0 when both halves finished."""
    if any(a in ("-h", "--help") for a in argv):
        print_help()
        return 0
    logging.basicConfig(level=logging.WARNING)
    try:
        result = run(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result.sampling.state == "SUBMITTED":
        # A rerun of the same command once the job is done skips every sample and filters.
        print(f"submitted run {result.sampling.config.run_id}; rerun the command when it is done")
        return 0
    print_summary(result.sampling.summary)
    print_counts(result.counts)
    return 0 if "DONE" in result.sampling.state.upper() else 1
