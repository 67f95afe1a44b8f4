"""MMSearch's end-to-end task (`CaraJ/MMSearch`, config `end2end`): questions that need the web.

Input: the `end2end` Parquet file of the Hugging Face release (300 rows). Columns read:
`sample_id`, `query` (the question), `query_image` (a `datasets` Image; null for a text-only
question), `area` (`news` or `knowledge`), `subfield`, `timestamp`, `gt_answer` and
`alternative_gt_answers` (other accepted answers). `image_search_result` (the Google Lens page
MMSearch's own staged engine shows its model) and `gt_requery` belong to that engine and are
not read: the agent searches for itself, as R1V4 did.

A question with its image becomes a job `mmsearch/<sample_id>` whose question is the query as
it stands (R1V4's benchmark script sent the image, then the query, nothing else). A job needs
an image, so a text-only question is not loaded: it is counted in `skipped` ("without an
image") and evaluate reports the count beside the scores, which then cover the questions with
an image only (R1V4 asked text-only questions without an image; its 66.1 is over all 300).

Scores (`search_qa.py` for the matching rules and their sources): `overall`, `news` and
`knowledge` are the share of correct answers, by exact match against `gt_answer` or any
alternative, or with `--judge_endpoint` by R1V4's yes/no judge against `gt_answer` (the
paper's figure), exact match then beside as `<metric> (exact)`; `f1`, `f1 <area>` and
`f1 <subfield>` are MMSearch's end-to-end score, the mean token F1 of the answer against its
best reference, by area and subfield as MMSearch's result summary breaks it down.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from beam_pipelines.benchmarks.base import (
    Benchmark,
    Prediction,
    file_name,
    parquet_questions,
    write_job_images,
)
from beam_pipelines.benchmarks.judge import AnswerJudge
from beam_pipelines.benchmarks.search_qa import (
    accuracy_scores,
    best_f1,
    exact_match,
    grouped_mean,
)

COLUMNS = (
    "sample_id",
    "query",
    "query_image",
    "area",
    "subfield",
    "timestamp",
    "gt_answer",
    "alternative_gt_answers",
)
REQUIRED = ("query", "query_image", "gt_answer")
AREAS = ("news", "knowledge")


class MMSearch(Benchmark):
    name = "mmsearch"

    def __init__(self, judge: AnswerJudge | None = None) -> None:
        self.judge = judge

    def load(self, input: str, images_dir: str, seed: int) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        skipped: Counter[str] = Counter()
        rows = parquet_questions(input, COLUMNS, REQUIRED, "sample_id", "query_image", skipped)
        for sample_id, row, images in rows:
            alternatives = row.get("alternative_gt_answers") or []
            if not isinstance(alternatives, list):
                raise ValueError(f"{sample_id}: alternative_gt_answers is not a list")
            answer = row["gt_answer"]
            jobs.append(
                {
                    "id": f"mmsearch/{sample_id}",
                    **write_job_images(images_dir, file_name(sample_id), images),
                    "question": row["query"],
                    "answer": answer,
                    "meta": {
                        "benchmark": self.name,
                        "sample_id": sample_id,
                        "area": row.get("area") or "",
                        "subfield": row.get("subfield") or "",
                        "timestamp": row.get("timestamp") or "",
                        "answers": [answer, *(a for a in alternatives if isinstance(a, str))],
                    },
                }
            )
        self.skipped = dict(skipped)
        return jobs

    def score(self, predictions: Sequence[Prediction]) -> dict[str, float]:
        areas = [p.meta["area"] for p in predictions]
        exact = [exact_match(p.answer, p.meta["answers"]) for p in predictions]
        f1 = [best_f1(p.answer, p.meta["answers"]) for p in predictions]
        by_area = grouped_mean(f1, areas, AREAS)
        by_subfield = grouped_mean(f1, [p.meta["subfield"] for p in predictions])
        f1_figures = {"f1": by_area.pop("overall")}
        f1_figures |= {f"f1 {group}": value for group, value in by_area.items()}
        by_subfield.pop("overall")
        f1_figures |= {f"f1 {group}": value for group, value in by_subfield.items()}
        return accuracy_scores(
            predictions,
            exact,
            self.judge,
            lambda hits: grouped_mean(hits, areas, AREAS),
            beside=f1_figures,
        )
