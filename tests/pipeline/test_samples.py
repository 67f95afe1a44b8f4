"""N samples per job: ids, seeds, the two DoFns, traces read back as jobs, and the graph."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.agent import loop
from beam_pipelines.agent.records import Failure, ToolSpec
from beam_pipelines.annotate import build
from beam_pipelines.io.readers import Candidate, parse_record
from beam_pipelines.options import config_from_options
from beam_pipelines.transforms.samples import (
    ExpandSamples,
    Samples,
    SeedSamples,
    sample_job,
    sample_seed,
)

from .helpers import started


def test_seeds_are_stable_distinct_and_in_range() -> None:
    seeds = {sample_seed(0, job, k) for job in ("a", "b") for k in range(50)}
    assert len(seeds) == 100
    assert all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(0, "a", 3) == sample_seed(0, "a", 3) != sample_seed(1, "a", 3)


def test_expand_samples_renames_jobs_and_passes_failures(tmp_path: Path) -> None:
    job = started(tmp_path, "q1").job
    candidate = Candidate("f.jsonl", 1, job, job.to_dict())
    failure = Failure(input="x", stage="read", error_class="invalid_json", message="m")
    out = list(ExpandSamples(Samples(3, seed=5)).process(("q1", candidate)))
    assert [key for key, _ in out] == ["q1#0", "q1#1", "q1#2"]
    second = out[1][1].job
    assert second.id == "q1#1" and second.question == job.question
    assert second.meta == {"source_id": "q1", "sample": 1, "seed": sample_seed(5, "q1", 1)}
    assert list(ExpandSamples(Samples(3)).process(("k", failure))) == [("k", failure)]
    with pytest.raises(ValueError, match="at least 1"):
        Samples(0)


def test_seed_samples_sets_the_sampling_seed(tmp_path: Path) -> None:
    traj = started(tmp_path, "q1")
    plain = next(SeedSamples().process(traj))
    assert "seed" not in plain.sampling
    sampled = dataclasses.replace(traj, job=sample_job(traj.job, 2, 9))
    (seeded,) = SeedSamples().process(sampled)
    assert seeded.sampling["seed"] == sample_seed(9, "q1", 2)
    assert seeded.sampling["stop"] == traj.sampling["stop"]


def test_a_trace_read_as_input_is_its_source_job(tmp_path: Path) -> None:
    traj = started(tmp_path, "q1")
    sampled = dataclasses.replace(traj, job=sample_job(traj.job, 2, 9))
    assert sampled.job.id == "q1#2" and sampled.job.meta["source_id"] == "q1"
    for trace in (loop.to_trace(traj), loop.to_trace(sampled)):
        parsed = parse_record("t.jsonl.gz", 1, json.dumps(trace))
        assert isinstance(parsed, Candidate)
        assert parsed.job.id == "q1" and parsed.job.meta == {}
        assert parsed.job.options == traj.job.options and parsed.job.answer == traj.job.answer


def test_the_sampled_graph_translates_with_its_two_extra_stages(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "a", "image": "gs://b/a.jpg", "question": "q"}) + "\n")
    options = PipelineOptions(
        [
            f"--input={jobs}",
            "--output=gs://bucket/out",
            "--triton_url=triton.internal:8001",
            "--max_pixels=16384",
            "--max_turns=2",
            "--runner=PortableRunner",
            "--job_endpoint=localhost:0",
        ]
    )
    pipeline = beam.Pipeline(options=options)
    build(pipeline, config_from_options(options), [ToolSpec("code")], Samples(4))
    proto = pipeline.to_runner_api(use_fake_coders=False)
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"ExpandSamples", "SeedSamples", "AgentLoop/Generate1"} <= names
