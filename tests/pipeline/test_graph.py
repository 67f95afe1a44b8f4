"""Dataflow readiness: the graph builds, pickles and translates to a portable pipeline proto."""

import json
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns

from beam_pipelines.agent.records import ToolSpec
from beam_pipelines.annotate import build
from beam_pipelines.options import config_from_options

BARRIERS = {
    common_urns.primitives.GROUP_BY_KEY.urn,
    common_urns.primitives.FLATTEN.urn,
}


def annotate_proto(tmp_path: Path, max_turns: int = 4):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "a", "image": "gs://b/a.jpg", "question": "q"}) + "\n")
    argv = [
        f"--input={jobs}",
        "--output=gs://bucket/out",
        "--triton_url=triton.internal:8001",
        "--max_pixels=16384",
        f"--max_turns={max_turns}",
        "--runner=PortableRunner",
        "--job_endpoint=localhost:0",
    ]
    options = PipelineOptions(argv)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, config_from_options(options), [ToolSpec("code")])
    # use_fake_coders=False: every DoFn and coder is really pickled, as a runner needs them.
    return pipeline.to_runner_api(use_fake_coders=False)


def test_translates_to_a_portable_proto_with_one_labelled_stage_per_turn(tmp_path: Path):
    proto = annotate_proto(tmp_path, max_turns=4)
    names = {t.unique_name for t in proto.components.transforms.values()}
    for k in range(4):
        assert f"AgentLoop/Generate{k}" in names
    for k in range(3):
        assert f"AgentLoop/ExecuteTools{k}" in names
    for label in ("ReadJobs", "SkipDone", "Reshuffle", "PrepareImages", "WriteResults"):
        assert label in names
    for transform in proto.components.transforms.values():
        if transform.spec.urn == common_urns.primitives.PAR_DO.urn:
            assert transform.spec.payload  # the pickled DoFn travels in the proto


def test_no_barrier_inside_the_loop(tmp_path: Path) -> None:
    proto = annotate_proto(tmp_path, max_turns=3)
    inside = [
        t
        for t in proto.components.transforms.values()
        if t.unique_name.startswith(("AgentLoop/", "PrepareImages", "WriteResults"))
    ]
    assert inside
    assert not [t.unique_name for t in inside if t.spec.urn in BARRIERS]
