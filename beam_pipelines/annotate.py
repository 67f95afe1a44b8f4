"""The annotate pipeline: a corpus of image-question jobs in, answers and traces out.

```
ReadJobs -> SkipDone (join on id) -> Reshuffle -> PrepareImages
  -> [Generate{k} -> ExecuteTools{k}] x max_turns -> EndUnfinished -> WriteResults
```

With `--incremental`, ReadJobs reads only the input files no earlier run read, SkipIndexedDone
drops the ids the output root's done index holds before SkipDone (which then reads no answer
shard), and CommitInputs, after WriteResults, records the files as read (`io/incremental.py`).

`run(argv=None, test_pipeline=None)` is the entry point and the seam tests use: it parses the
options, starts the local Triton server when no `--endpoint` is given (and stops it at the
end), builds and runs the pipeline, and writes the run's manifest and summary.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from beam_pipelines import progress
from beam_pipelines.agent import loop
from beam_pipelines.agent.records import ToolSpec
from beam_pipelines.io.incremental import CommitInputs, IncrementalPlan, SkipIndexedDone, plan_run
from beam_pipelines.io.readers import ReadJobs
from beam_pipelines.io.resume import SkipDoneAndDuplicates
from beam_pipelines.model_client.base import CallError, ModelEndpoint, ModelInfo
from beam_pipelines.model_client.channel import client_for
from beam_pipelines.options import (
    AnnotateConfig,
    AnnotateOptions,
    config_from_options,
    endpoint_address,
    is_local_runner,
    tool_settings_from_options,
    with_default_runner,
)
from beam_pipelines.outputs.counts import write_counts
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.outputs.manifest import versions, write_manifest
from beam_pipelines.outputs.writers import WriteResults
from beam_pipelines.report import print_report_path
from beam_pipelines.summary import RunSummary, print_summary, summarize
from beam_pipelines.transforms.agent_loop import AgentLoop
from beam_pipelines.transforms.images import ImageStore
from beam_pipelines.transforms.prepare import PrepareImages
from beam_pipelines.transforms.samples import ExpandSamples, Samples, SeedSamples
from tools.registry import tool_specs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnnotateResult:
    """What `run` returns: the config it ran with, where the outputs are, and what it did."""

    config: AnnotateConfig
    layout: OutputLayout
    summary: RunSummary
    metrics: dict[str, Any]
    state: str
    #: The runner's job id of a detached run, where the runner has one.
    job_id: str | None = None


def build(
    pipeline: beam.Pipeline,
    config: AnnotateConfig,
    tools: Sequence[ToolSpec],
    samples: Samples | None = None,
    plan: IncrementalPlan | None = None,
) -> beam.PCollection:
    """Add the annotate graph to `pipeline`; the collection of finished jobs (a `Trajectory`
    or a `FailedJob` each, before they are written), for tests to assert on.

    With `samples`, every job read becomes `samples.n` jobs `<id>#<k>` with seeds of their
    own (`transforms/samples.py`), before skip-done, so resume works per sample. With an
    incremental `plan`, only its files are read, ids are skipped by its done index (no answer
    shard is read), and the run's last stage records the files as read.
    """
    layout = OutputLayout(config.output, config.run_id)
    store = ImageStore(layout, config.max_pixels)
    files = plan.files if plan is not None else None
    jobs = pipeline | "ReadJobs" >> ReadJobs(config.input, config.prompt, config.limit, files)
    if samples is not None:
        jobs = jobs | "ExpandSamples" >> beam.ParDo(ExpandSamples(samples))
    if plan is not None:
        jobs = jobs | "SkipIndexedDone" >> beam.ParDo(SkipIndexedDone(plan.done))
    started = (
        jobs
        | "SkipDone" >> SkipDoneAndDuplicates(None if plan else layout.all_answers_glob())
        # Spread jobs over workers before the expensive part; the last barrier of the run.
        | "Reshuffle" >> beam.Reshuffle()
        | "PrepareImages"
        >> beam.ParDo(
            PrepareImages(
                store,
                config.protocol,
                tools,
                config.model_label,
                config.sampling,
                config.max_turns,
                workers=config.tool_workers,
            )
        )
    )
    if samples is not None:
        started = started | "SeedSamples" >> beam.ParDo(SeedSamples())
    finished = started | "AgentLoop" >> AgentLoop(
        config.endpoint,
        store,
        config.tools,
        config.max_turns,
        config.tool_workers,
        config.tool_timeout_s,
        config.tool_settings,
    )
    written = finished | "WriteResults" >> beam.ParDo(
        WriteResults(layout, loop.to_trace, config.shard_max_rows, config.shard_max_age_s)
    )
    if plan is not None:
        written | "CommitInputs" >> CommitInputs(layout, plan.states, finished)
    return finished


def query_metrics(result: beam.runners.runner.PipelineResult) -> dict[str, Any]:
    """The pipeline's `annotate` metrics: counters as ints, distributions as summaries."""
    try:
        found = result.metrics().query(MetricsFilter().with_namespace("annotate"))
    except (NotImplementedError, AttributeError):
        return {}
    out: dict[str, Any] = {}
    for counter in found.get("counters", []):
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + (value or 0)
    # One distribution per step (every turn's Generate has its own): merge them by name.
    for dist in found.get("distributions", []):
        value = dist.committed if dist.committed is not None else dist.attempted
        if value is None or not value.count:
            continue
        merged = out.setdefault(
            dist.key.metric.name, {"count": 0, "sum": 0, "min": value.min, "max": value.max}
        )
        merged["count"] += value.count
        merged["sum"] += value.sum
        merged["min"] = min(merged["min"], value.min)
        merged["max"] = max(merged["max"], value.max)
        merged["mean"] = merged["sum"] / merged["count"]
    return out


def is_detached(options: PipelineOptions) -> bool:
    """Whether `run` submits and returns: `--detach` on a remote runner, or a template launch
    (`--template_location`: the flex template launcher's, whose runner only writes the job
    file the launcher then submits, so there is nothing to wait for)."""
    if options.view_as(GoogleCloudOptions).template_location:
        return True
    return bool(options.view_as(AnnotateOptions).detach) and not is_local_runner(options)


def submitted_job_id(result: beam.runners.runner.PipelineResult) -> str | None:
    """The runner's id of the submitted job; None where it has none (a template launch: the
    Dataflow result then holds no job, and asking it for an id raises)."""
    if not getattr(result, "has_job", True):
        return None
    job_id = getattr(result, "job_id", None)
    return str(job_id()) if callable(job_id) else None


def _start_server(stack: contextlib.ExitStack) -> str:
    """Start the local Triton with the embedded model for this run; its gRPC address."""
    from beam_pipelines.serve import TritonServer

    log_dir = Path(tempfile.mkdtemp(prefix="annotate-triton-"))
    print(f"starting the local Triton server (log: {log_dir / 'tritonserver.log'})", flush=True)
    server = stack.enter_context(TritonServer(log_file=log_dir / "tritonserver.log"))
    return f"triton:{server.grpc_url}"


def describe_model(address: str, model_name: str, timeout_s: float = 30.0) -> ModelInfo:
    """What the server at `address` (`KIND:URL`) says about `model_name`."""
    client = client_for(ModelEndpoint.at(address, model_name))
    try:
        return client.describe(timeout_s)
    finally:
        client.close()


def run(
    argv: Sequence[str] | None = None,
    test_pipeline: beam.Pipeline | None = None,
    *,
    samples: Samples | None = None,
) -> AnnotateResult:
    """Parse `argv`, run the pipeline to completion, and return what it did.

    `samples` runs N samples per job (regenerate, evaluate's Avg@k); without `--temperature`
    they are drawn at `samples.default_temperature`.
    """
    args = with_default_runner(list(sys.argv[1:] if argv is None else argv))
    options = PipelineOptions(args)
    opts = options.view_as(AnnotateOptions)
    if not opts.input or not opts.output:
        raise ValueError("--input and --output are required")
    # Tool settings are read and checked before anything starts (a typo costs no server).
    tool_settings = tool_settings_from_options(options)
    # The launcher itself reads and writes files (input listing, manifest) before the
    # pipeline object exists: give FileSystems the options (credentials, project) now.
    FileSystems.set_options(options)
    local = is_local_runner(options)
    with contextlib.ExitStack() as stack:
        address = endpoint_address(options)
        if not address:
            if not local:
                raise ValueError("--endpoint is required with a remote runner")
            address = _start_server(stack)
        try:
            info = describe_model(address, opts.model_name)
            label, budget = info.label, info.budget
        except CallError as e:
            # A server only the workers can reach (e.g. inside a VPC): go by the options.
            log.warning("cannot ask %s about the model: %s", address, e)
            label, budget = None, None
        config = config_from_options(
            options,
            address,
            model_label=label,
            model_budget=budget,
            tool_settings=tool_settings,
        )
        if samples is not None and opts.temperature is None:
            sampling = {**config.sampling, "temperature": samples.default_temperature}
            config = dataclasses.replace(config, sampling=sampling)
        layout = OutputLayout(config.output, config.run_id)
        plan = None
        if config.incremental:
            plan = plan_run(layout, config.input, images=config.prompt is not None)
        manifest: dict[str, Any] = {
            "run_id": config.run_id,
            "status": "running",
            "started_at": datetime.now(UTC).isoformat(),
            "config": config.to_dict(),
            # what the server stated; the views were sized by config.max_pixels
            "image_budget": dataclasses.asdict(budget) if budget is not None else None,
            "argv": list(args),
            # Where the final counts are: written at the end when the run waits, by
            # `python -m beam_pipelines status` after a detached one.
            "counts_file": layout.counts,
            "versions": versions(),
            **({"samples": dataclasses.asdict(samples)} if samples is not None else {}),
            **({"incremental": plan.summary} if plan is not None else {}),
        }
        write_manifest(layout, manifest)
        if plan is not None and not plan.files:
            # Nothing new since the last run: no job is submitted.
            print(f"incremental: no new input files at {config.input}", flush=True)
            summary = summarize(layout, 0.0)
            write_counts(layout, summary.counts)
            manifest.update(
                status="done", finished_at=datetime.now(UTC).isoformat(), counts=summary.to_dict()
            )
            write_manifest(layout, manifest)
            return AnnotateResult(config, layout, summary, {}, "DONE")

        pipeline = test_pipeline or beam.Pipeline(options=options)
        tools = tool_specs(config.tools, **config.tool_settings)
        build(pipeline, config, tools, samples, plan)
        show = opts.progress == "on" or (opts.progress == "auto" and local and sys.stderr.isatty())
        started = time.monotonic()
        with progress.LiveProgress(show, title=f"annotate {config.run_id}"):
            result = pipeline.run()
            if is_detached(options):
                # The job runs on without us: no waiting and no metrics (a flex template's
                # launch has no job to ask); `status` counts the outputs afterwards.
                job_id = submitted_job_id(result)
                manifest.update(status="submitted", job_id=job_id)
                write_manifest(layout, manifest)
                summary = RunSummary(config.run_id)
                return AnnotateResult(config, layout, summary, {}, "SUBMITTED", job_id)
            state = str(result.wait_until_finish())
        wall_s = time.monotonic() - started

    metrics = query_metrics(result)
    summary = summarize(layout, wall_s, skipped=int(metrics.get("jobs_skipped_done", 0)))
    manifest.update(
        status="done" if "DONE" in state.upper() else state,
        finished_at=datetime.now(UTC).isoformat(),
        wall_s=wall_s,
        counts=summary.to_dict(),
        metrics=metrics,
    )
    write_counts(layout, summary.counts)
    write_manifest(layout, manifest)
    return AnnotateResult(config, layout, summary, metrics, state)


def print_help() -> None:
    """The annotate options (Beam's own pass through and are listed by `--help` of Beam)."""
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines annotate",
        description="Annotate a corpus of image-question jobs with the agent. Standard Beam "
        "pipeline options (--runner, --project, --region, --temp_location, ...) pass through.",
    )
    AnnotateOptions._add_argparse_args(parser)
    parser.print_help()


def main(argv: Sequence[str]) -> int:
    """`python -m beam_pipelines annotate ...`: run, print the summary; 0 when it finished."""
    if any(a in ("-h", "--help") for a in argv):
        print_help()
        return 0
    logging.basicConfig(level=logging.WARNING)
    try:
        result = run(argv)
    except (ValueError, FileNotFoundError) as e:  # bad options or no input: say so, no trace
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # not about one line: an output root that cannot be written
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.state == "SUBMITTED":
        print(
            f"submitted run {result.config.run_id}"
            + (f" as job {result.job_id}" if result.job_id else "")
            + f"; outputs under {result.layout.run_dir}"
        )
        print(
            "counts once it ends: python -m beam_pipelines status "
            f"--output {result.config.output} {result.config.run_id}"
        )
        return 0
    print_summary(result.summary)
    print_report_path(result.layout)
    return 0 if "DONE" in result.state.upper() else 1


def console_main() -> None:
    """The `annotate` console script: the same as `python -m beam_pipelines annotate`."""
    sys.exit(main(sys.argv[1:]))
