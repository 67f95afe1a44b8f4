"""The regenerate filter pipeline on traces written by hand: every run's traces are read, one
trace per sample (a finished one over a failed attempt), one verdict per sample, outputs and
counts that agree."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.agent import loop
from beam_pipelines.agent.records import Trajectory
from beam_pipelines.filters import build_chain
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.regenerate import best_trace, run_filters
from beam_pipelines.transforms.samples import sample_job

from .helpers import say, started


def sample(tmp_path: Path, source: str, k: int, text: str) -> Trajectory:
    traj = started(tmp_path, source)
    traj = dataclasses.replace(traj, job=sample_job(traj.job, k, 0))
    return say(traj, text)


def write_traces(root: Path, run: str, trajectories: list[Trajectory]) -> None:
    folder = root / "runs" / run / "traces"
    folder.mkdir(parents=True)
    lines = "".join(json.dumps(loop.to_trace(t)) + "\n" for t in trajectories)
    (folder / "part-0.jsonl.gz").write_bytes(gzip.compress(lines.encode()))


def test_filters_every_sample_under_the_root_once(tmp_path: Path) -> None:
    right = "<think>It is y.</think><answer>B</answer>"
    j0 = sample(tmp_path, "j", 0, right)
    j1 = sample(tmp_path, "j", 1, "<think>It is x.</think><answer>A</answer>")
    j2 = sample(tmp_path, "j", 2, right)  # the same turns as j#0
    k0_failed = loop.fail(sample(tmp_path, "k", 0, "garbage"), "model", "server error")
    k0 = sample(tmp_path, "k", 0, right)
    root = tmp_path / "out"
    write_traces(root, "first", [j0, j1, k0_failed])
    write_traces(root, "second", [j2, k0])  # a rerun answered k#0

    chain = build_chain(["answer", "format", "final_think", "dedup"])
    layout = OutputLayout(str(root), "third")
    counts = run_filters(PipelineOptions(["--runner=FnApiRunner"]), layout, chain)

    assert counts.trajectories == 4 and counts.kept == 2
    assert counts.rejected == {"answer": 1, "format": 0, "final_think": 0, "dedup": 1}
    assert counts.jobs == 2 and counts.jobs_with_kept == 2
    assert counts.kept_ratio == 0.5
    run_dir = root / "runs" / "third"
    rejected = {
        row["id"]: row
        for path in (run_dir / "rejected").glob("part-*")
        for row in map(json.loads, path.read_text().splitlines())
    }
    assert rejected["j#1"]["filter"] == "answer" and rejected["j#1"]["sample"] == 1
    assert rejected["j#2"] == {
        "id": "j#2",
        "source_id": "j",
        "sample": 2,
        "status": "answered",
        "filter": "dedup",
        "reason": "the same turns as j#0",
    }
    kept = [
        json.loads(line)
        for path in (run_dir / "kept").glob("part-*.jsonl.gz")
        for line in gzip.decompress(path.read_bytes()).decode().splitlines()
    ]
    assert sorted(t["id"] for t in kept) == ["j#0", "k#0"]
    assert next(t for t in kept if t["id"] == "k#0")["status"] == "answered"
    sft = [
        json.loads(line)
        for path in (run_dir / "sft").glob("part-*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert sorted((r["source_id"], r["sample"]) for r in sft) == [("j", 0), ("k", 0)]
    stored = json.loads((run_dir / "filter_counts.json").read_text())
    assert stored["kept_ratio"] == 0.5 and stored["rejected"] == counts.rejected


def test_best_trace_prefers_a_finished_attempt_then_the_latest(tmp_path: Path) -> None:
    def line(status: str, finished: str) -> str:
        return json.dumps({"status": status, "finished_at": finished})

    assert json.loads(
        best_trace([line("failed", "2"), line("answered", "1"), line("max_turns", "3")])
    ) == {"status": "answered", "finished_at": "1"}
    assert json.loads(best_trace([line("failed", "1"), line("failed", "2")]))["finished_at"] == "2"
