"""HR-Bench 4K / 8K (`DreamMr/HR-Bench`), in VLMEvalKit's TSV format.

Each question appears in several option orders (cycles); `cycle_category` names the cycle a
row belongs to and `category` its task: FSP (fine-grained single-instance perception) or FCP
(fine-grained cross-instance perception). Scoring follows VLMEvalKit's `report_acc_hrbench`:
within each cycle, the accuracy per task and over all rows; each figure is then averaged over
the cycles. The answer's letter is read as VLMEvalKit's exact matching does: the letter, or
the text of one option (`records.parse_choice`). With a `ChoiceJudge` (`evaluate
--judge_endpoint`), answers exact matching cannot read go to the judge, as HR-Bench's own
evaluation does with its LLM judge; the exact-match figures are reported beside, as
`<metric> (exact)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from beam_pipelines.agent.records import parse_choice
from beam_pipelines.benchmarks.base import Benchmark, Prediction, accuracy
from beam_pipelines.benchmarks.judge import ChoiceJudge
from beam_pipelines.benchmarks.vlmevalkit import load_rows, mcq_job

#: Task labels as the paper names them; the TSVs spell them in either way.
TASKS = {"fsp": "FSP", "single": "FSP", "fcp": "FCP", "cross": "FCP"}


class HRBench(Benchmark):
    def __init__(self, name: str, judge: ChoiceJudge | None = None) -> None:
        self.name = name  # type: ignore[misc]
        self.judge = judge

    def load(self, input: str, images_dir: str, seed: int) -> list[dict[str, Any]]:
        def to_job(row: dict[str, str], options: list[str]) -> dict[str, Any]:
            category = row.get("category", "").strip()
            return mcq_job(
                row,
                options,
                self.name,
                category=TASKS.get(category.lower(), category),
                cycle_category=row.get("cycle_category", "").strip(),
            )

        return load_rows(input, images_dir, self.name, to_job)

    def score(self, predictions: Sequence[Prediction]) -> dict[str, float]:
        exact = [parse_choice(p.answer, p.job["options"]) for p in predictions]
        if self.judge is None:
            return cycle_scores(predictions, exact)
        judged = [
            letter
            or (
                self.judge.choose(p.job["question"], p.job["options"], p.answer)
                if p.answer
                else None
            )
            for p, letter in zip(predictions, exact, strict=True)
        ]
        scores = cycle_scores(predictions, judged)
        return scores | {f"{k} (exact)": v for k, v in cycle_scores(predictions, exact).items()}


def cycle_scores(
    predictions: Sequence[Prediction], letters: Sequence[str | None]
) -> dict[str, float]:
    """Accuracy per task and overall within each cycle, each averaged over the cycles."""
    cycles: dict[str, list[tuple[str, bool]]] = {}
    for p, letter in zip(predictions, letters, strict=True):
        hit = letter is not None and letter == p.job["answer"]
        cycles.setdefault(p.meta["cycle_category"], []).append((p.meta["category"], hit))
    tasks = sorted({task for rows in cycles.values() for task, _ in rows})
    per_cycle = []
    for rows in cycles.values():
        figures = {t: accuracy(h for task, h in rows if task == t) for t in tasks}
        figures["overall"] = accuracy(h for _, h in rows)
        per_cycle.append(figures)
    names = [*tasks, "overall"]
    if not per_cycle:
        return dict.fromkeys(names, 0.0)
    return {name: sum(c[name] for c in per_cycle) / len(per_cycle) for name in names}
