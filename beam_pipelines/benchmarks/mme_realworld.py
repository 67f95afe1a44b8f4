"""MME-RealWorld (and -Lite), in VLMEvalKit's TSV format.

Rows have five options (`A`-`E`; the Lite file has them only inside `multi-choice options`,
a list like `['(A) ...', '(B) ...']`), `answer` (a letter), `category` as `<task>/<subtask>`
(`Perception/Monitoring`, `Reasoning/Autonomous_Driving`, ...) and `l2-category`. Scoring
follows VLMEvalKit's `MMERealWorld.evaluate` as of its commit e8e78f0 (2026-08): the text
inside `<answer>` is stripped and upper-cased, answer prefixes are removed, and the letter is
the first A-E capital (`utils/multiple_choice.extract_characters_regex`; none counts as
wrong); accuracy is micro-averaged over each task (Perception, Reasoning), each
`<task>/<subtask>`, and overall.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any

from beam_pipelines.benchmarks.base import Benchmark, Prediction, accuracy
from beam_pipelines.benchmarks.vlmevalkit import load_rows, mcq_job

#: VLMEvalKit removes these before looking for a letter (older releases had two pairs run
#: together by a missing comma, so "Best answer: C" read as B; fixed there, and here).
ANSWER_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
)
CHOICES = ("(A)", "(B)", "(C)", "(D)", "(E)")
TASKS = ("Perception", "Reasoning")


def extract_letter(text: str | None) -> str:
    """The letter MME-RealWorld reads from an answer (the text inside `<answer>`); "" when
    it reads none. VLMEvalKit's quirks are kept, so that figures compare: the prefixes are
    removed after upper-casing, so they no longer match ("The answer is C" reads as E, the
    first capital A-E); an empty answer matches every choice's text and reads as A."""
    if text is None:
        return ""
    s = text.strip().upper()
    for prefix in ANSWER_PREFIXES:
        s = s.replace(prefix, "")
    if len(s.split()) > 10 and not re.search("[ABCDE]", s):
        return ""
    match = re.search(r"[ABCDE]", s)
    if match is None:
        for choice in CHOICES:
            if s.lower() in choice.lower():
                return choice[1]
        return ""
    return match[0]


def _options(row: dict[str, str], columns: list[str]) -> list[str]:
    if columns:
        return columns
    listed = ast.literal_eval(row["multi-choice options"])
    return [option[4:] if option[:1] == "(" else option for option in listed]


class MMERealWorld(Benchmark):
    name = "mme-realworld"

    def load(self, input: str, images_dir: str, seed: int) -> list[dict[str, Any]]:
        def to_job(row: dict[str, str], options: list[str]) -> dict[str, Any]:
            return mcq_job(
                row,
                _options(row, options),
                self.name,
                category=row["category"].strip(),
                l2_category=(row.get("l2-category") or "").strip(),
            )

        return load_rows(input, images_dir, self.name, to_job)

    def score(self, predictions: Sequence[Prediction]) -> dict[str, float]:
        hits: dict[str, list[bool]] = {}
        for p in predictions:
            hit = extract_letter(p.answer) == p.job["answer"]
            category = p.meta["category"]
            hits.setdefault(category.split("/")[0], []).append(hit)
            if "/" in category:
                hits.setdefault(category, []).append(hit)
        scores = {task.lower(): accuracy(hits[task]) for task in TASKS if task in hits}
        scores["overall"] = accuracy(h for t in hits if "/" not in t for h in hits[t])
        for category in sorted(c for c in hits if "/" in c):
            scores[category] = accuracy(hits[category])
        return scores
