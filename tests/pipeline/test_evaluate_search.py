"""evaluate end to end on the search benchmarks, with the in-process scripted model.

The scripted model answers every question `unscripted` (it is asked for no tool call), so
which answers are right is known from the files: the scores are asserted exactly. Its judge
is the same model, whose reply holds no `correct:` verdict: every judged answer is wrong,
while the exact-match figures beside stay what the answers earn.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines import evaluate

from .helpers import png
from .runs import FAST, run_rows, trace

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SCRIPTED = ("--endpoint=scripted:call", "--tools=", *FAST)


def fvqa_file(path: Path) -> Path:
    """Three questions with an image, one with two, and a row with more images than a job may
    list; the scripted answer matches the ground truth of the first and the two-image one,
    and a candidate answer of the second."""
    rows = [
        ("fvqa_test_0", [png()], "unscripted", "[]"),
        ("fvqa_test_1", [png(9, 9)], "scripted", '["Unscripted."]'),
        ("fvqa_test_2", [png(7, 7)], "Paris", "[]"),
        ("fvqa_test_3", [png(), png(5, 5)], "unscripted", "[]"),
        ("fvqa_test_4", [png(4 + i, 4) for i in range(17)], "unscripted", "[]"),
    ]
    reward = pa.struct([("candidate_answers", pa.string()), ("ground_truth", pa.string())])
    table = pa.table(
        {
            "prompt": [[{"content": f"question {i}?", "role": "user"}] for i in range(len(rows))],
            "images": pa.array(
                [[{"bytes": d, "path": None} for d in r[1]] for r in rows], pa.list_(IMAGE)
            ),
            "reward_model": pa.array(
                [{"candidate_answers": r[3], "ground_truth": r[2]} for r in rows], reward
            ),
            "data_id": [r[0] for r in rows],
        }
    )
    pq.write_table(table, path)
    return path


def test_fvqa_with_a_judge_reports_judged_and_exact_figures(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    argv = [
        "--benchmark=fvqa",
        f"--input={fvqa_file(tmp_path / 'fvqa_test.parquet')}",
        f"--output={out}",
        "--judge_endpoint=scripted:call",
        *SCRIPTED,
    ]
    evaluation, run = evaluate.run(argv)
    assert evaluation.questions == 4 and evaluation.answered == 4
    assert evaluation.skipped == {"with more than 16 images": 1}
    assert evaluation.scores == {
        "overall": 0.0,
        "overall (exact)": 0.75,
        "judge failed": 0.0,
    }
    stored = json.loads((out / "results.json").read_text())
    assert stored["skipped"] == {"with more than 16 images": 1}
    table = (out / "results.md").read_text()
    note = "4 questions, 1 sample(s) each; 4 answers. Not asked: 1 row with more than 16 images."
    assert note in table
    assert "| overall (exact) | 75.0 |" in table
    jobs = [
        json.loads(line) for line in (out / "benchmark" / "jobs.jsonl").read_text().splitlines()
    ]
    assert [j["id"] for j in jobs] == [f"fvqa/fvqa_test_{i}" for i in range(4)]
    assert len(jobs[3]["images"]) == 2 and "image" not in jobs[3]
    # The model was shown both images of the two-image question, in the row's order.
    answers, _ = run_rows(run)
    (pair,) = [row for row in answers if row["id"] == "fvqa/fvqa_test_3"]
    record = trace(pair["trace_uri"])
    assert [o["uri"] for o in record["originals"]] == jobs[3]["images"]
    first_turn = record["messages"][1]["content"]
    assert [p["type"] for p in first_turn] == ["image_url", "image_url", "text"]


def test_mmsearch_scores_the_questions_with_an_image(tmp_path: Path) -> None:
    table = pa.table(
        {
            "sample_id": ["news_0", "news_1", "knowledge_0"],
            "query": ["Who is this?", "Who won yesterday?", "What is this?"],
            "query_image": pa.array(
                [{"bytes": png(), "path": None}, None, {"bytes": png(8, 8), "path": None}], IMAGE
            ),
            "area": ["news", "news", "knowledge"],
            "subfield": ["sports", "sports", "art"],
            "gt_answer": ["unscripted", "x", "Mona Lisa"],
            "alternative_gt_answers": [[], [], ["La Gioconda"]],
        }
    )
    pq.write_table(table, tmp_path / "end2end.parquet")
    out = tmp_path / "eval"
    argv = ["--benchmark=mmsearch", f"--input={tmp_path / 'end2end.parquet'}", f"--output={out}"]
    evaluation, _ = evaluate.run([*argv, *SCRIPTED])
    assert evaluation.questions == 2
    assert evaluation.skipped == {"without an image": 1}
    assert evaluation.scores == {
        "overall": 0.5,
        "news": 1.0,
        "knowledge": 0.0,
        "f1": 0.5,
        "f1 news": 1.0,
        "f1 knowledge": 0.0,
        "f1 art": 0.0,
        "f1 sports": 1.0,
    }
    assert "Not asked: 1 row without an image." in (out / "results.md").read_text()


def test_a_judge_for_a_benchmark_scored_without_one_is_refused(tmp_path: Path) -> None:
    argv = ["--benchmark=vstar", "--input=x", f"--output={tmp_path}", "--judge_endpoint=x:1"]
    with pytest.raises(ValueError, match="vstar is scored without a judge"):
        evaluate.run(argv)
