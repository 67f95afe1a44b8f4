"""WriteResults: whole shards, traces before answers, one row per job, through a real pipeline."""

import gzip
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing import test_pipeline
from pipeline.helpers import answered, started

from beam_pipelines.agent import loop
from beam_pipelines.agent.records import FailedJob, Failure, Trajectory, answer_schema
from beam_pipelines.outputs.layout import OutputLayout, split_trace_uri
from beam_pipelines.outputs.readers import iter_answers, read_answers, read_failures
from beam_pipelines.outputs.writers import WriteResults


def test_results_are_written_as_answers_traces_and_failures(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path / "out"), "run-1")
    ids = ["a/b", "../c", "plain", "wrong"]
    finished = [answered(started(tmp_path, i), "A" if i == "wrong" else "B") for i in ids]
    partial = loop.fail(started(tmp_path, "dead"), "model_unavailable", "server gone")
    results = [
        *finished,
        FailedJob(
            Failure(
                input={"id": "dead"},
                stage="generate",
                error_class="model_unavailable",
                message="server gone",
                attempts=4,
                id="dead",
            ),
            partial,
        ),
        Failure(input="{bad", stage="read", error_class="invalid_json", message="m"),
    ]
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        _ = (
            p
            | beam.Create(results)
            | beam.ParDo(WriteResults(layout, loop.to_trace, max_rows=2, max_age_s=60))
        )

    answers = read_answers(layout.answers_glob())
    assert sorted(r["id"] for r in answers) == sorted(ids)
    assert {r["id"]: r["correct"] for r in answers}["wrong"] is False
    for shard in Path(layout.answers_dir).glob("part-*.parquet"):
        assert pq.read_schema(shard).equals(answer_schema())

    failures = read_failures(layout.failures_glob())
    assert sorted(f["error_class"] for f in failures) == ["invalid_json", "model_unavailable"]
    dead = next(f for f in failures if f["error_class"] == "model_unavailable")
    assert dead["attempts"] == 4 and dead["trace_uri"]

    # Every trace URI names a shard that holds that job's trace.
    for uri in [r["trace_uri"] for r in answers] + [dead["trace_uri"]]:
        shard, job_id = split_trace_uri(uri)
        with gzip.open(shard, "rt") as f:
            traces = {t["id"]: t for t in map(json.loads, f)}
        assert job_id in traces
    # Shards are flushed every two jobs, and nothing is left half-written.
    assert len(list(Path(layout.answers_dir).glob("part-*.parquet"))) >= 2
    assert not list(Path(layout.run_dir).rglob(".tmp-*"))


class FailsOnceAfterWriting(WriteResults):
    """The writer with a bundle failure injected after its writes: every bundle raises once,
    on its first attempt, after its last flush (a worker lost before it could report)."""

    def __init__(self, markers: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._markers = markers

    def start_bundle(self) -> None:
        super().start_bundle()
        self._seen: list[str] = []

    def process(self, result: Any) -> Iterable[None]:
        self._seen.append(result.id if isinstance(result, Trajectory) else str(result))
        return super().process(result)

    def finish_bundle(self) -> None:
        super().finish_bundle()
        bundle = hashlib.sha256("\n".join(sorted(self._seen)).encode()).hexdigest()
        marker = Path(self._markers) / bundle
        if not marker.exists():
            marker.touch()
            raise RuntimeError("injected: the bundle fails after its writes")


def test_a_retried_bundle_adds_no_rows(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path / "out"), "run-1")
    ids = [f"job-{i}" for i in range(5)]
    results = [answered(started(tmp_path, i)) for i in ids] + [
        Failure(input="{bad", stage="read", error_class="invalid_json", message="line 9: m")
    ]
    markers = tmp_path / "markers"
    markers.mkdir()
    writer = FailsOnceAfterWriting(str(markers), layout, loop.to_trace, max_rows=2, max_age_s=60)
    # The bundle-based direct runner retries a failed bundle (up to 4 attempts).
    with beam.Pipeline(runner="BundleBasedDirectRunner") as p:
        _ = p | beam.Create(results) | beam.ParDo(writer)

    assert list(markers.iterdir())  # a bundle did fail after writing, and was retried
    rows = list(iter_answers(layout.answers_glob()))
    assert sorted(r["id"] for r in rows) == ids  # once each: the retry replaced its shards
    assert len(read_failures(layout.failures_glob())) == 1
    traces = [t["id"] for t in iter_shard_traces_all(layout)]
    assert sorted(traces) == ids
    assert not list(Path(layout.run_dir).rglob(".tmp-*"))


def iter_shard_traces_all(layout: OutputLayout) -> list[dict[str, Any]]:
    traces = []
    for shard in Path(layout.traces_dir).glob("part-*.jsonl.gz"):
        with gzip.open(shard, "rt") as f:
            traces += [json.loads(line) for line in f]
    return traces


def test_a_result_that_cannot_be_written_is_its_jobs_failure_row(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path / "out"), "run-1")
    # A model text holding a lone surrogate: valid in a Python string, refused by Parquet.
    odd = answered(started(tmp_path, "odd"), "\ud800")
    results = [
        answered(started(tmp_path, "fine")),
        odd,
        Failure(input="caf\udce9 {", stage="read", error_class="invalid_utf8", message="m"),
    ]
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        _ = p | beam.Create(results) | beam.ParDo(WriteResults(layout, loop.to_trace))

    assert [r["id"] for r in read_answers(layout.answers_glob())] == ["fine"]
    failures = {f["error_class"]: f for f in read_failures(layout.failures_glob())}
    assert set(failures) == {"unwritable_result", "invalid_utf8"}
    unwritable = failures["unwritable_result"]
    assert unwritable["id"] == "odd" and unwritable["stage"] == "write"
    assert unwritable["input"]["id"] == "odd" and unwritable["trace_uri"]
    # The line that was not UTF-8 is kept byte for byte, as JSON escapes.
    kept = failures["invalid_utf8"]["input"]
    assert kept.encode("utf-8", "surrogateescape") == b"caf\xe9 {"
