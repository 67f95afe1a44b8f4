"""The output layout: one run's paths, the globs across runs, trace URIs."""

import fnmatch

from beam_pipelines.outputs.layout import OutputLayout, split_trace_uri, trace_uri


def test_a_runs_paths_and_the_globs_across_runs() -> None:
    layout = OutputLayout("gs://b/out", "r1")
    assert layout.answers_dir == "gs://b/out/runs/r1/answers"
    assert layout.image_uri("ab") == "gs://b/out/images/ab.png"
    other = "gs://b/out/runs/r0/answers/part-1.parquet"
    assert fnmatch.fnmatch(other, layout.all_answers_glob())
    assert not fnmatch.fnmatch(other, layout.answers_glob())
    assert fnmatch.fnmatch("gs://b/out/runs/r0/traces/part-1.jsonl.gz", layout.all_traces_glob())
    assert OutputLayout("file:///tmp/out", "r").manifest == "/tmp/out/runs/r/manifest.json"


def test_trace_uris_round_trip_any_id() -> None:
    shard = "gs://b/out/runs/r/traces/part-1.jsonl.gz"
    for job_id in ("plain", "a/b#c", "../x y", "ü?%&="):
        uri = trace_uri(shard, job_id)
        assert uri.count("#") == 1
        assert split_trace_uri(uri) == (shard, job_id)
    assert split_trace_uri(None) is None and split_trace_uri("no-fragment") is None
