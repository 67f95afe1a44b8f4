"""regenerate end to end on the embedded model: N samples per job, filters, SFT export, resume.

The model is not asserted to be good (it is retrained from time to time); what is asserted is
the structure: sample ids and seeds, one verdict per sample, counts that add up, rejection
reasons by known filters, an SFT file that Arrow and `datasets` load, and a rerun that samples
nothing again.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.json as pj
import pytest

from beam_pipelines import regenerate
from beam_pipelines.filters import FILTER_NAMES
from beam_pipelines.transforms.samples import sample_seed

from .runs import FAST, run_rows, trace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOBS = 2
SAMPLES = 2


def regenerate_run(jobs: Path, out: Path, url: str, *extra: str) -> regenerate.RegenerateResult:
    return regenerate.run(
        [
            f"--input={jobs}",
            f"--output={out}",
            f"--triton_url={url}",
            f"--samples={SAMPLES}",
            "--sample_seed=11",
            f"--limit={JOBS}",
            *FAST,
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, corpus: Path, triton):
    out = tmp_path_factory.mktemp("regenerate") / "out"
    return out, regenerate_run(corpus, out, triton.grpc_url)


def test_every_job_is_sampled_n_times_with_its_own_seed(first, corpus: Path) -> None:
    _, result = first
    answers, failures = run_rows(result.sampling)
    ids = {r["id"] for r in answers} | {f["id"] for f in failures}
    sources = [json.loads(line)["id"] for line in corpus.read_text().splitlines()[:JOBS]]
    assert ids == {f"{s}#{k}" for s in sources for k in range(SAMPLES)}
    seeds = set()
    for row in answers:
        record = trace(row["trace_uri"])
        source, _, k = row["id"].rpartition("#")
        meta = record["job"]["meta"]
        assert meta["source_id"] == source and meta["sample"] == int(k)
        assert record["sampling"]["seed"] == meta["seed"] == sample_seed(11, source, int(k))
        assert record["sampling"]["temperature"] == 1.0  # sampling, not greedy, by default
        seeds.add(meta["seed"])
    assert len(seeds) == len(answers)


def test_every_sample_gets_one_verdict_and_the_counts_add_up(first) -> None:
    _, result = first
    counts = result.counts
    answers, failures = run_rows(result.sampling)
    traced = len(answers) + sum(1 for f in failures if f.get("trace_uri"))
    assert counts.trajectories == traced
    assert counts.kept + sum(counts.rejected.values()) == counts.trajectories
    assert set(counts.rejected) == {
        "answer",
        "format",
        "tool_error",
        "final_think",
        "replay",
        "judge",
        "dedup",
    }
    assert counts.jobs == JOBS and counts.jobs_with_kept <= JOBS
    run_dir = Path(result.sampling.layout.run_dir)
    rejected = [
        json.loads(line)
        for path in sorted((run_dir / "rejected").glob("part-*"))
        for line in path.read_text().splitlines()
    ]
    assert len(rejected) == counts.trajectories - counts.kept
    for row in rejected:
        assert row["filter"] in FILTER_NAMES and row["reason"]
        assert row["id"] == f"{row['source_id']}#{row['sample']}"
    stored = json.loads((run_dir / "filter_counts.json").read_text())
    assert stored["kept"] == counts.kept and stored["rejected"] == counts.rejected
    kept = [
        json.loads(line)
        for path in sorted((run_dir / "kept").glob("part-*.jsonl.gz"))
        for line in gzip.decompress(path.read_bytes()).decode().splitlines()
    ]
    assert len(kept) == counts.kept
    assert {r["id"] for r in rejected}.isdisjoint({k["id"] for k in kept})


def test_the_sft_export_has_one_row_per_kept_sample_and_loads(first) -> None:
    _, result = first
    shards = [
        p
        for p in sorted(Path(result.sampling.layout.run_dir, "sft").glob("part-*.jsonl"))
        if p.stat().st_size
    ]
    rows = [json.loads(line) for path in shards for line in path.read_text().splitlines()]
    assert len(rows) == result.counts.kept
    assert sum(pj.read_json(path).num_rows for path in shards) == len(rows)
    for row in rows:
        parts = [p for m in row["messages"] for p in m["content"]]
        assert [p["image_url"]["url"] for p in parts if p["type"] == "image_url"] == row["images"]
        assert all(Path(uri).exists() for uri in row["images"])


def test_a_rerun_samples_nothing_again_and_filters_everything(first, corpus: Path, triton) -> None:
    out, result = first
    again = regenerate_run(corpus, out, triton.grpc_url, "--filters=answer,format")
    summary = again.sampling.summary
    before = result.sampling.summary.counts
    assert summary.skipped == before.answered + before.max_turns
    assert summary.counts.finished == before.failed  # only failures are retried
    assert again.counts.trajectories == result.counts.trajectories
    assert set(again.counts.rejected) == {"answer", "format"}


def test_bad_filter_options_fail_before_sampling(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(ValueError, match="unknown filter"):
        regenerate_run(corpus, tmp_path / "o", "127.0.0.1:1", "--filters=answer,nonsense")
    assert not (tmp_path / "o").exists()


def test_the_model_judge_asks_the_served_model(tmp_path: Path, triton) -> None:
    from PIL import Image

    from beam_pipelines.filters import ModelJudge, image_claims

    from .helpers import answered, call, observe, started, stored

    crop = stored(tmp_path, Image.new("RGB", (16, 16), (205, 30, 35)), "crop")
    traj = answered(observe(call(started(tmp_path), "save_image(image)"), crop))
    (claim,) = image_claims(traj)
    judge = ModelJudge(f"triton:{triton.grpc_url}")
    messages = judge.request(claim)
    assert messages[1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert claim.reasoning in messages[1]["content"][1]["text"]
    try:
        verdict = judge.judge(traj, claim)  # whatever the tiny model says, through the contract
    finally:
        judge.teardown()
    assert verdict is None or verdict.startswith("the judge")
