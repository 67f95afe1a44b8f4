"""WriteResults: whole shards, traces before answers, one row per job, through a real pipeline."""

import gzip
import json
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing import test_pipeline
from pipeline.helpers import answered, started

from beam_pipelines.agent import loop
from beam_pipelines.agent.records import FailedJob, Failure, answer_schema
from beam_pipelines.outputs.layout import OutputLayout, split_trace_uri
from beam_pipelines.outputs.readers import read_answers, read_failures
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
