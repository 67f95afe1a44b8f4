"""`WriteResults`: finished trajectories and failures -> shards of traces, failures, answers.

One DoFn writes all three kinds because their order matters for resume: a buffer is flushed
as its traces shard first, then its failures shard, then its answers shard. An answer row is
what marks a job done (skip-done reads only answers), so by the time it exists its trace is
already readable, and a run killed between the two only redoes those jobs.

Buffers are flushed every `max_rows` jobs or `max_age_s` seconds (checked as elements
arrive) and at the end of every bundle. On the in-process runner a whole stage is one bundle,
so a bundle-end flush alone would write nothing until the run ends; the periodic flush is
what lets a killed run keep what it finished.

A shard's name is derived from what it holds (`shard_name`: the ids of its answers or traces,
the bytes of its failure rows), and a shard is written whole (`files.write_bytes`: a temporary
name and a rename, or one upload). A retried bundle that flushes the same results therefore
writes the same objects again, replacing them: it adds no row, and no reader ever sees half a
shard.

Each result is turned into its rows one at a time: one whose trace or answer row cannot be
written (text that is not valid Unicode, a value the schema refuses) becomes its job's
`unwritable_result` failure row instead of failing the bundle. Failure rows that hold text no
UTF-8 writer accepts (a line that was not UTF-8, a lone surrogate) are written with JSON's
ASCII escapes, so the input is kept exactly.

The trace of a job is a line of a gzip JSONL shard; its URI is `layout.trace_uri`:
`<shard>#<url-quoted id>`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from beam_pipelines import progress
from beam_pipelines.agent.records import (
    FailedJob,
    Failure,
    Job,
    Trajectory,
    answer_row,
    answer_schema,
)
from beam_pipelines.io.files import join, write_bytes
from beam_pipelines.outputs.layout import OutputLayout, trace_uri

DEFAULT_MAX_ROWS = 256
DEFAULT_MAX_AGE_S = 10.0
WRITE_STAGE = "write"


Result = Trajectory | FailedJob | Failure


def shard_name(keys: Sequence[str], suffix: str) -> str:
    """`part-<32 hex><suffix>`, a hash of the shard's row keys: the same rows, the same name."""
    digest = hashlib.sha256()
    for key in sorted(keys):
        digest.update(key.encode("utf-8", "surrogatepass") + b"\0")
    return f"part-{digest.hexdigest()[:32]}{suffix}"


def json_line(record: dict[str, Any]) -> bytes:
    """One JSONL line; text no UTF-8 writer accepts (lone surrogates) as JSON escapes."""
    try:
        text = json.dumps(record, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(record, ensure_ascii=True, default=str).encode("ascii")
    return text + b"\n"


def _gzip(lines: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    # mtime=0: the same records always give the same bytes.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as f:
        f.writelines(lines)
    return buffer.getvalue()


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


class WriteResults(beam.DoFn):
    """Buffers results and writes them as whole shards named by their content."""

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
        self._unwritable = Metrics.counter("annotate", "unwritable_results")
        self._turns = Metrics.distribution("annotate", "turns")
        self._tool_calls = Metrics.distribution("annotate", "tool_calls_per_job")
        self._prompt_tokens = Metrics.counter("annotate", "prompt_tokens")
        self._completion_tokens = Metrics.counter("annotate", "completion_tokens")
        self._latency_ms = Metrics.distribution("annotate", "job_latency_ms")
        self._shards = Metrics.counter("annotate", "shards_written")

    def start_bundle(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # (id, line) of each trace; answer rows and failures wait for their trace's shard name.
        self._traces: list[tuple[str, bytes]] = []
        self._failures: list[tuple[Failure, bool]] = []
        self._answers: list[tuple[dict[str, Any], Job]] = []
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
            self._add_answer(result)
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

    def _add_trace(self, trajectory: Trajectory) -> Exception | None:
        """Buffer the trajectory's trace line; the error when it cannot be written."""
        try:
            line = json_line(self._to_trace(trajectory))
        except Exception as e:  # a trajectory that cannot be serialised: its job's failure row
            return e
        self._traces.append((trajectory.job.id, line))
        return None

    def _add_answer(self, trajectory: Trajectory) -> None:
        error = self._add_trace(trajectory)
        if error is not None:
            self._unwritable_result(trajectory.job, trajectory.status, error, traced=False)
            return
        try:
            row = answer_row(trajectory, None)
        except Exception as e:  # this job's row only, never the bundle
            self._unwritable_result(trajectory.job, trajectory.status, e, traced=True)
            return
        self._answers.append((row, trajectory.job))

    def _unwritable_result(self, job: Job, status: str, error: Exception, traced: bool) -> None:
        self._unwritable.inc()
        failure = Failure(
            input=job.to_dict(),
            stage=WRITE_STAGE,
            error_class="unwritable_result",
            message=f"the job's {status} result cannot be written: {type(error).__name__}: {error}"[
                :2000
            ],
            id=job.id,
        )
        self._failures.append((failure, traced))
        self._failed.inc()
        progress.board().add(failed=1)

    def _add_failure(self, failure: Failure, trajectory: Trajectory | None) -> None:
        traced = trajectory is not None and self._add_trace(trajectory) is None
        if trajectory is not None and failure.id is None:
            failure = dataclasses.replace(failure, id=trajectory.job.id)
        self._failures.append((failure, traced))
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
        shard = join(self._layout.traces_dir, shard_name([i for i, _ in self._traces], ".jsonl.gz"))
        answers = self._answer_table(shard)  # rows the schema refuses join the failures
        if self._traces:
            write_bytes(shard, _gzip([line for _, line in self._traces]))
            self._shards.inc()
        if self._failures:
            lines = [
                json_line(
                    dataclasses.replace(f, trace_uri=trace_uri(shard, f.id)).to_dict()
                    if traced and f.id is not None
                    else f.to_dict()
                )
                for f, traced in self._failures
            ]
            name = shard_name([line.decode("utf-8") for line in lines], ".jsonl")
            write_bytes(join(self._layout.failures_dir, name), b"".join(lines))
            self._shards.inc()
        if answers.num_rows:
            name = shard_name(answers.column("id").to_pylist(), ".parquet")
            write_bytes(join(self._layout.answers_dir, name), _parquet(answers))
            self._shards.inc()
        self._reset()

    def _answer_table(self, shard: str) -> pa.Table:
        """The buffered answer rows as one table; only when the schema refuses the batch is
        each row tried alone (one at a time costs a hundred times more), and a row it refuses
        becomes its job's `unwritable_result` failure."""
        rows = [{**row, "trace_uri": trace_uri(shard, row["id"])} for row, _ in self._answers]
        try:
            table = pa.Table.from_pylist(rows, schema=answer_schema())
        except Exception:
            kept = []
            for row, (_, job) in zip(rows, self._answers, strict=True):
                try:
                    pa.Table.from_pylist([row], schema=answer_schema())
                except Exception as e:
                    self._unwritable_result(job, row["status"], e, traced=True)
                    continue
                kept.append(row)
            rows = kept
            table = pa.Table.from_pylist(rows, schema=answer_schema())
        for row in rows:
            self._count_answer(row)
        return table
