"""Short-answer matching for the search benchmarks (MMSearch, FVQA), as their references compute it.

Both references normalise an answer the SQuAD way (`normalize_answer`): lower-case, drop ASCII
punctuation (`string.punctuation`, so "1,000" is "1000" and "U.S." is "us"), replace the
words a, an, the by a space, collapse whitespace. The functions below are that code's behaviour,
written here; the sources are

- MMSearch: `score/f1_score.py` of `CaraJ7/MMSearch` at d340f3f (token F1 of one answer
  against one reference; an empty side scores 1 only when both are empty), and the maximum
  over `gt_answer` and every `alternative_gt_answers` that lmms-eval's MMSearch task takes
  (`lmms_eval/tasks/mmsearch/lmms_eval_utils.py`, `mmsearch_aggregate_results_f1_score`, in
  `EvolvingLMMs-Lab/lmms-eval` at 75571cf; MMSearch's own `eval_end2end.py` scores against
  `gt_answer` alone);
- FVQA: `mmsearch_r1/utils/reward_score_mm/mmsearch_r1_score.py` (`em_check`: the normalised
  answer equals some normalised reference) with the references the reward manager lists
  (`mmsearch_r1/workers/multimodal/reward/mmsearch_r1.py`: `ground_truth`, then
  `candidate_answers`, a list or its JSON text, keeping strings only) in
  `EvolvingLMMs-Lab/multimodal-search-r1` at 583c6b4. The reward's search and format
  penalties shape training, not correctness, and are left out. MMSearch's exact-match
  accuracy is the same `em_check` over `gt_answer` and its alternatives (MMSearch's own code
  reports F1 only).

The answer scored is the answer row's (the run's final `<answer>`), where the references take
the last `<answer>…</answer>` of the response. With an `AnswerJudge`, the R1V4 judge decides
correctness instead (`judge.py`); exact match is then reported beside, as `<metric> (exact)`.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from beam_pipelines.benchmarks.base import Prediction, accuracy
from beam_pipelines.benchmarks.judge import AnswerJudge

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, ASCII punctuation removed, articles removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_tokens(text: str | None) -> list[str]:
    return normalize_answer(text).split() if text else []


def f1_score(prediction: str | None, reference: str) -> float:
    """Token F1 of `prediction` against one reference (MMSearch's `get_f1_score`)."""
    gold, predicted = answer_tokens(reference), answer_tokens(prediction)
    if not gold or not predicted:
        return float(gold == predicted)
    same = sum((Counter(gold) & Counter(predicted)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def best_f1(prediction: str | None, references: Sequence[str]) -> float:
    """The best F1 over the references (lmms-eval's MMSearch end-to-end score)."""
    return max((f1_score(prediction, r) for r in references), default=0.0)


def exact_match(prediction: str | None, references: Sequence[str]) -> bool:
    """The normalised prediction equals a normalised reference (MMSearch-R1's `em_check`)."""
    if prediction is None:
        return False
    normalised = normalize_answer(prediction)
    return any(normalize_answer(r) == normalised for r in references)


def reference_answers(ground_truth: Any, candidates: Any, where: str) -> list[str]:
    """The references a verl `reward_model` lists: `ground_truth` (text or a list), then
    `candidate_answers` (a list, or its JSON text), strings only, as MMSearch-R1's reward
    manager builds them."""
    answers = [ground_truth] if isinstance(ground_truth, str) else list(ground_truth or [])
    if isinstance(candidates, str):
        try:
            candidates = json.loads(candidates)
        except ValueError as e:
            raise ValueError(f"{where}: candidate_answers is not a JSON list: {e}") from None
    if candidates is None:
        candidates = []
    if not isinstance(candidates, list):
        raise ValueError(f"{where}: candidate_answers is {type(candidates).__name__}, not a list")
    answers = [a for a in [*answers, *candidates] if isinstance(a, str)]
    if not answers:
        raise ValueError(f"{where}: no reference answer")
    return answers


def judge_verdicts(judge: AnswerJudge, predictions: Sequence[Prediction]) -> list[bool | None]:
    """The judge's verdict on every answered prediction against the job's `answer` (the
    benchmark's ground truth; the judge sees that one, as R1V4's did), with the job's
    question. No or an empty answer is wrong without asking (R1V4 asked with an empty
    response). None where the judge could not be asked."""
    asked = [p for p in predictions if p.answer]
    replies = iter(judge.verdicts([(p.job["question"], p.answer, p.job["answer"]) for p in asked]))
    return [next(replies) if p.answer else False for p in predictions]


def grouped_mean(
    values: Sequence[float], groups: Sequence[str | None], order: Iterable[str] = ()
) -> dict[str, float]:
    """`overall` (the mean of all values), then the mean within each group: those in `order`
    first, then the rest sorted; a None group is in none."""
    by_group: dict[str, list[float]] = {}
    for value, group in zip(values, groups, strict=True):
        if group:
            by_group.setdefault(group, []).append(value)
    order = list(order)
    names = [g for g in order if g in by_group] + sorted(g for g in by_group if g not in order)
    return {"overall": _mean(values)} | {g: _mean(by_group[g]) for g in names}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def accuracy_scores(
    predictions: Sequence[Prediction],
    exact: Sequence[bool],
    judge: AnswerJudge | None,
    figures: Callable[[Sequence[bool]], dict[str, float]],
    beside: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """`figures` of the correct answers, then `beside` (figures no judge changes). Without a
    judge, exact match says which are correct; with one, its verdicts do, and then the
    exact-match figures follow as `<metric> (exact)`, and `judge failed`, the share of
    questions the judge could not be asked."""
    if judge is None:
        return figures(exact) | dict(beside or {})
    verdicts = judge_verdicts(judge, predictions)
    scores = figures([v is True for v in verdicts]) | dict(beside or {})
    scores |= {f"{name} (exact)": value for name, value in figures(exact).items()}
    scores["judge failed"] = accuracy(v is None for v in verdicts)
    return scores
