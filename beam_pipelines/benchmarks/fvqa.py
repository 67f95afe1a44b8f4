"""FVQA-test (`lmms-lab/FVQA`, `fvqa_test.parquet`): MMSearch-R1's factual VQA test, 1,800 rows.

Input: the release's verl-style Parquet file (the train file reads the same way). Columns read:
`prompt` (chat messages; the question is the last user message's text, `<image>`
placeholders removed), `images` (a list of `datasets` Images), `reward_model`
(`ground_truth`, and `candidate_answers`: other accepted answers, as a JSON list),
`data_id`, `data_source`, and `category` (`search_required` / `search_free`) where the file
has it.

Each row becomes a job `fvqa/<data_id>` (`fvqa/<row>` without an id) asking its question:
an `image` job for a row with one image, an `images` job for a row with several (in the
row's order). A row without an image, or with more than a job may list (16), is not loaded:
it is counted in `skipped` ("without an image", "with more than 16 images") and evaluate
reports the count beside the scores.

Scores (`search_qa.py` for the matching rules and their sources): `overall`, and per
`category` where rows have one, the share of correct answers: by normalised exact match
against `ground_truth` or any candidate answer (MMSearch-R1's reward, its correctness term),
or with `--judge_endpoint` by R1V4's yes/no judge against `ground_truth` (the paper's
figure), exact match then beside as `<metric> (exact)`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
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
    exact_match,
    grouped_mean,
    reference_answers,
)

COLUMNS = ("data_id", "prompt", "images", "reward_model", "data_source", "category")
REQUIRED = ("prompt", "images", "reward_model")
CATEGORIES = ("search_required", "search_free")
IMAGE_PLACEHOLDER = "<image>"


def question_of(prompt: Any, where: str) -> str:
    """The text of the last user message of a verl `prompt` (content a string, or a list of
    parts whose text parts count), `<image>` placeholders removed."""
    messages = prompt if isinstance(prompt, list) else []
    users = [m for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users:
        raise ValueError(f"{where}: the prompt has no user message")
    content = users[-1].get("content")
    if isinstance(content, list):
        content = "".join(part.get("text") or "" for part in content if isinstance(part, Mapping))
    question = str(content or "").replace(IMAGE_PLACEHOLDER, "").strip()
    if not question:
        raise ValueError(f"{where}: the user message has no text")
    return question


class FVQA(Benchmark):
    name = "fvqa"

    def __init__(self, judge: AnswerJudge | None = None) -> None:
        self.judge = judge

    def load(self, input: str, images_dir: str, seed: int) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        skipped: Counter[str] = Counter()
        rows = parquet_questions(input, COLUMNS, REQUIRED, "data_id", "images", skipped)
        for data_id, row, images in rows:
            reward = row.get("reward_model") or {}
            answers = reference_answers(
                reward.get("ground_truth"), reward.get("candidate_answers"), data_id
            )
            meta = {
                "benchmark": self.name,
                "data_id": data_id,
                "data_source": row.get("data_source") or "",
                "answers": answers,
            }
            if row.get("category"):
                meta["category"] = row["category"]
            jobs.append(
                {
                    "id": f"fvqa/{data_id}",
                    **write_job_images(images_dir, file_name(data_id), images),
                    "question": question_of(row.get("prompt"), data_id),
                    "answer": answers[0],
                    "meta": meta,
                }
            )
        self.skipped = dict(skipped)
        return jobs

    def score(self, predictions: Sequence[Prediction]) -> dict[str, float]:
        categories = [p.meta.get("category") for p in predictions]
        exact = [exact_match(p.answer, p.meta["answers"]) for p in predictions]
        return accuracy_scores(
            predictions, exact, self.judge, lambda hits: grouped_mean(hits, categories, CATEGORIES)
        )
