"""`WriteResults`: finished trajectories and failures -> shards of traces, failures, answers.

One DoFn writes all three kinds because their order matters for resume: a buffer is flushed
as its traces shard first, then its failures shard, then its answers shard. An answer row is
what marks a job done (skip-done reads only answers), so by the time it exists its trace is
already readable, and a run killed between the two only redoes those jobs.

Buffers are flushed every `max_rows` jobs or `max_age_s` seconds (checked as elements
arrive) and at the end of every bundle. On the in-process runner a whole stage is one bundle,
so a bundle-end flush alone would write nothing until the run ends; the periodic flush is
what lets a killed run keep what it finished.

The trace of a job is a line of a gzip JSONL shard; its URI is `layout.trace_uri`:
`<shard>#<url-quoted id>`.
"""

from __future__ import annotations

import gzip
import io
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from beam_pipelines import progress
from beam_pipelines.agent.records import (
    FailedJob,
    Failure,
    Trajectory,
    answer_row,
    answer_schema,
)
from beam_pipelines.io.files import join, unique_name, write_bytes
from beam_pipelines.outputs.layout import OutputLayout, trace_uri

DEFAULT_MAX_ROWS = 256
DEFAULT_MAX_AGE_S = 10.0


Result = Trajectory | FailedJob | Failure


def _gzip_jsonl(records: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    # mtime=0: the same records always give the same bytes.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
    return buffer.getvalue()


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(
        json.dumps(r, ensure_ascii=False, default=str).encode("utf-8") + b"\n" for r in records
    )


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=answer_schema()), buffer)
    return buffer.getvalue()


class WriteResults(beam.DoFn):
    """Buffers results and writes them as whole, uniquely named shards."""

    def __init__(
        self,
        layout: OutputLayout,
        to_trace: Callable[[Trajectory], dict[str, Any]],
        max_rows: int = DEFAULT_MAX_ROWS,
        max_age_s: float = DEFAULT_MAX_AGE_S,
    ) -> None:
        self._layout = layout
        self._to_trace = to_trace
        self._max_rows = max_rows
        self._max_age_s = max_age_s

    def setup(self) -> None:
        self._jobs = {
            s: Metrics.counter("annotate", f"jobs_{s}") for s in ("answered", "max_turns")
        }
        self._failed = Metrics.counter("annotate", "jobs_failed")
        self._turns = Metrics.distribution("annotate", "turns")
        self._tool_calls = Metrics.distribution("annotate", "tool_calls_per_job")
        self._prompt_tokens = Metrics.counter("annotate", "prompt_tokens")
        self._completion_tokens = Metrics.counter("annotate", "completion_tokens")
        self._latency_ms = Metrics.distribution("annotate", "job_latency_ms")
        self._shards = Metrics.counter("annotate", "shards_written")

    def start_bundle(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._traces: list[dict[str, Any]] = []
        self._failures: list[dict[str, Any]] = []
        self._answers: list[dict[str, Any]] = []
        self._trace_shard = join(self._layout.traces_dir, unique_name("part", ".jsonl.gz"))
        self._opened = time.monotonic()

    def process(self, result: Result) -> Iterable[None]:
        if isinstance(result, Failure):
            self._add_failure(result, None)
        elif isinstance(result, FailedJob):
            self._add_failure(result.failure, result.trajectory)
        elif result.status == "failed":
            failure = Failure(
                input=result.job.to_dict(),
                stage="agent",
                error_class=result.error_class or "agent_error",
                message=result.error or "the agent loop failed",
                id=result.job.id,
            )
            self._add_failure(failure, result)
        else:
            uri = self._add_trace(result)
            row = answer_row(result, uri)
            self._answers.append(row)
            self._count_answer(row)
        if self._pending() >= self._max_rows or (
            self._pending() and time.monotonic() - self._opened >= self._max_age_s
        ):
            self._flush()
        return ()

    def finish_bundle(self) -> None:
        self._flush()

    # -- internals -------------------------------------------------------------------------

    def _pending(self) -> int:
        return len(self._answers) + len(self._failures)

    def _add_trace(self, trajectory: Trajectory) -> str:
        self._traces.append(self._to_trace(trajectory))
        return trace_uri(self._trace_shard, trajectory.job.id)

    def _add_failure(self, failure: Failure, trajectory: Trajectory | None) -> None:
        if trajectory is not None:
            uri = self._add_trace(trajectory)
            failure = Failure(
                input=failure.input,
                stage=failure.stage,
                error_class=failure.error_class,
                message=failure.message,
                attempts=failure.attempts,
                trace_uri=uri,
                id=failure.id or trajectory.job.id,
            )
        self._failures.append(failure.to_dict())
        self._failed.inc()
        progress.board().add(failed=1)

    def _count_answer(self, row: dict[str, Any]) -> None:
        self._jobs[row["status"]].inc()
        self._turns.update(row["turns"])
        self._tool_calls.update(row["tool_calls"])
        self._prompt_tokens.inc(row["prompt_tokens"])
        self._completion_tokens.inc(row["completion_tokens"])
        if row["latency_s"] is not None:
            self._latency_ms.update(int(row["latency_s"] * 1000))
        progress.board().add(
            answered=1,
            correct=1 if row["correct"] else 0,
            graded=0 if row["correct"] is None else 1,
        )

    def _flush(self) -> None:
        if not self._pending():
            return
        # Traces before the rows that point at them; answers last (they mark jobs done).
        if self._traces:
            write_bytes(self._trace_shard, _gzip_jsonl(self._traces))
            self._shards.inc()
        if self._failures:
            name = unique_name("part", ".jsonl")
            write_bytes(join(self._layout.failures_dir, name), _jsonl(self._failures))
            self._shards.inc()
        if self._answers:
            name = unique_name("part", ".parquet")
            write_bytes(join(self._layout.answers_dir, name), _parquet(self._answers))
            self._shards.inc()
        self._reset()
