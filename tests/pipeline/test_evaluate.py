"""evaluate end to end on the embedded model: V*'s native layout in, Avg@k results out.

The score is not asserted to be high; it is asserted to be what the run's own answer rows
say (their `correct` column is computed independently of the V* scorer).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from beam_pipelines import evaluate
from beam_pipelines.demo import write_vstar_layout

from .runs import FAST, all_answers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTIONS = 2


def matches_the_answer_rows(evaluation: evaluate.EvaluateResult, out: Path) -> None:
    rows = {r["id"]: r for r in all_answers(out / "annotations")}
    lines = (out / "benchmark" / "jobs.jsonl").read_text().splitlines()
    jobs = [json.loads(line) for line in lines]
    for k, round_scores in enumerate(evaluation.rounds):
        hits = [bool(rows.get(f"{j['id']}#{k}", {}).get("correct")) for j in jobs]
        assert round_scores["attribute"] == pytest.approx(sum(hits) / QUESTIONS)
        assert round_scores["overall"] == round_scores["attribute"]
    mean = sum(r["overall"] for r in evaluation.rounds) / len(evaluation.rounds)
    assert evaluation.scores["overall"] == pytest.approx(mean)
    stored = json.loads((out / "results.json").read_text())
    assert stored["scores"] == evaluation.scores and stored["rounds"] == evaluation.rounds
    table = (out / "results.md").read_text()
    assert "| metric | Avg@2 | sample 0 | sample 1 |" in table
    assert f"| overall | {100 * mean:.1f} |" in table


def test_vstar_avg_at_k_matches_the_answer_rows(tmp_path: Path, corpus: Path, triton) -> None:
    few = tmp_path / "jobs.jsonl"
    few.write_text("".join(corpus.read_text().splitlines(keepends=True)[:QUESTIONS]))
    bench = write_vstar_layout(few, tmp_path / "vstar_bench")
    out = tmp_path / "eval"
    argv = [
        "--benchmark=vstar",
        f"--input={bench}",
        f"--output={out}",
        "--samples=2",
        f"--triton_url={triton.grpc_url}",
        *FAST,
    ]
    evaluation, run = evaluate.run(argv)
    assert evaluation.questions == QUESTIONS and evaluation.samples == 2
    ids = [json.loads(line)["id"] for line in few.read_text().splitlines()]
    answered = {r["id"] for r in all_answers(out / "annotations")}
    assert answered <= {f"vstar/direct_attributes/{i}#{k}" for i in ids for k in range(2)}
    matches_the_answer_rows(evaluation, out)

    # A rerun asks nothing answered again (failures are retried) and scores what is there.
    shutil.rmtree(out / "benchmark")
    again, rerun = evaluate.run(argv)
    assert rerun.summary.skipped == run.summary.counts.answered + run.summary.counts.max_turns
    matches_the_answer_rows(again, out)
