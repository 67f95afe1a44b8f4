"""annotate without a server: the in-process scripted client through `build` with Beam's
`TestPipeline` + `assert_that`, and through `run`'s `test_pipeline` seam."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines import annotate
from beam_pipelines.agent.records import FailedJob, Trajectory
from beam_pipelines.model_client.scripted import SCRIPTED_BUDGET
from beam_pipelines.options import config_from_options

from .helpers import png
from .runs import FAST, run_rows

CALL = {"name": "code", "arguments": {"code": "print(6 * 7)"}}


def write_jobs(tmp_path: Path) -> Path:
    image = tmp_path / "image.png"
    image.write_bytes(png())
    jobs = [
        {"id": "plain", "image": str(image), "question": "What is shown?"},
        {"id": "missing", "image": str(tmp_path / "nope.png"), "question": "q"},
        {"id": "bad-call", "image": str(image), "question": 'CALL {"name": "nope"}'},
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def outcome(element: Any) -> tuple[str, str]:
    if isinstance(element, FailedJob):
        return element.failure.id or "", f"failed:{element.failure.error_class}"
    assert isinstance(element, Trajectory)
    return element.job.id, f"{element.status}:{element.final.answer if element.final else ''}"


def test_the_graph_on_the_scripted_client_asserted_in_a_test_pipeline(tmp_path: Path) -> None:
    argv = [
        f"--input={write_jobs(tmp_path)}",
        f"--output={tmp_path / 'out'}",
        "--endpoint=scripted:call",
        "--tools=",
        "--run_id=r",
        *FAST,
    ]
    config = config_from_options(PipelineOptions(argv), model_budget=SCRIPTED_BUDGET)
    with BeamTestPipeline(runner="FnApiRunner") as pipeline:
        finished = annotate.build(pipeline, config, [])
        assert_that(
            finished | beam.Map(outcome),
            equal_to(
                [
                    ("plain", "answered:unscripted"),
                    ("missing", "failed:image_missing"),
                    (
                        "bad-call",  # the parser's message came back, and the script echoed it
                        'answered:{"error": "The call to \'nope\' needs \\"arguments\\": an '
                        'object.", "type": "format"}',
                    ),
                ]
            ),
        )


@pytest.mark.integration  # the code tool's sandbox
def test_run_takes_a_test_pipeline_and_writes_rows(tmp_path: Path) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(png())
    job = {"id": "calc", "image": str(image), "question": f"CALL {json.dumps(CALL)}"}
    (tmp_path / "jobs.jsonl").write_text(json.dumps(job) + "\n")
    argv = [
        f"--input={tmp_path / 'jobs.jsonl'}",
        f"--output={tmp_path / 'out'}",
        "--endpoint=scripted:call",
        "--tools=code",
        *FAST,
    ]
    result = annotate.run(argv, test_pipeline=BeamTestPipeline(runner="FnApiRunner"))
    (row,), failures = run_rows(result)
    assert failures == []
    assert row["status"] == "answered" and row["tool_calls"] == 1
    assert json.loads(row["answer"]) == {"result": "42", "type": "code"}
    assert result.config.model_label == "scripted:call"
    # Each stage's time is a metric: preparing the job, its model requests, its tool call.
    for stage in ("prepare_ms", "model_latency_ms", "tool_latency_ms_code"):
        assert result.metrics[stage]["count"] >= 1, stage
