"""A local rehearsal of a distributed run: annotate on the DirectRunner's multi-process mode
(two SDK worker processes, each unpickling the DoFns and building its own model client,
`Shared` handles, tool pools and image store) writes the same rows, traces and images as the
in-process FnApiRunner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from beam_pipelines import annotate
from beam_pipelines.annotate import AnnotateResult

from .helpers import png
from .runs import FAST, image_uris, run_rows, trace

MULTI_PROCESS = (
    "--runner=DirectRunner",
    "--direct_running_mode=multi_processing",
    "--direct_num_workers=2",
)
ZOOM = {"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [0, 0, 500, 500]}}


def _jobs(tmp_path: Path) -> Path:
    image = tmp_path / "image.png"
    image.write_bytes(png())
    jobs = [
        {
            "id": f"job-{i}",
            "image": str(image),
            "question": f"CALL {json.dumps(ZOOM)}" if i % 3 == 0 else f"What is {i}?",
        }
        for i in range(12)
    ]
    jobs += [
        {"id": "missing", "image": str(tmp_path / "nope.png"), "question": "q"},
        {"id": "job-1", "image": str(image), "question": "a duplicate id"},
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def _outcome(result: AnnotateResult) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    """Answer rows by id (less their timing and shard name), failure rows, traces by id."""
    answers, failures = run_rows(result)
    rows, traces = {}, {}
    for row in answers:
        traces[row["id"]] = trace(row["trace_uri"])
        rows[row["id"]] = {k: v for k, v in row.items() if k not in ("latency_s", "trace_uri")}
    failed = sorted(
        ({k: v for k, v in f.items() if k != "trace_uri"} for f in failures),
        key=lambda f: (f["id"] or "", f["error_class"]),
    )
    return rows, failed, traces


@pytest.mark.slow  # two SDK worker processes start (about 15 s on two shared cores)
def test_two_worker_processes_write_what_one_process_writes(tmp_path: Path) -> None:
    argv = [
        f"--input={_jobs(tmp_path)}",
        "--endpoint=scripted:call",
        "--max_pixels=16384",
        "--tools=image_zoom_in_tool",
        "--run_id=rehearsal",
        *FAST,
    ]
    one = annotate.run([*argv, f"--output={tmp_path / 'one'}"])
    two = annotate.run([*argv, f"--output={tmp_path / 'two'}", *MULTI_PROCESS])
    assert "DONE" in one.state.upper() and "DONE" in two.state.upper()

    rows, failures, traces = _outcome(one)
    assert _outcome(two)[:2] == (rows, failures)
    assert len(rows) == 12 and sum(r["tool_calls"] for r in rows.values()) == 4
    assert {f["error_class"] for f in failures} == {"image_missing", "duplicate_id"}
    multi_traces = _outcome(two)[2]
    for job_id, record in traces.items():
        assert [m["role"] for m in multi_traces[job_id]["messages"]] == [
            m["role"] for m in record["messages"]
        ]
        # the crops a worker process stored are the ones the single process stored
        names = [Path(u).name for u in image_uris(record)]
        assert [Path(u).name for u in image_uris(multi_traces[job_id])] == names
        for uri in image_uris(multi_traces[job_id]):
            assert Path(uri).is_file()
    assert one.summary.counts.to_dict() == two.summary.counts.to_dict()
