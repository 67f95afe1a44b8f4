"""V* Bench: letter match, two categories, from VLMEvalKit's TSV or the original folder.

`VStarBench.tsv` (VLMEvalKit's, `xjtupanda/VStar_Bench`) is what published figures use: one
row per question with the options in fixed columns `A`-`D` and the `answer` letter; the
options keep that order, so a run scores as VLMEvalKit does. The original release
(`craigwu/vstar_bench`) is a folder with one subfolder per category, `direct_attributes` (115
questions) and `relative_position` (76), each holding images and, beside every image, a JSON
file with the same stem: `{"question": ..., "options": [...], "target_object": [...],
"bbox": [...]}` where `options[0]` is the correct answer; that layout has no letter order of
its own, so the loader shuffles each question's options with a seed (the same seed, the same
order; the answer is not always A) and records the letter the correct option landed on
(figures from it are not comparable letter for letter with VLMEvalKit's). Scoring: the option
letter the answer names (`records.parse_choice`: the letter, or the option's text) against
that letter; accuracy per category (`attribute`, `spatial`) and overall.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems

from beam_pipelines.agent.records import LETTERS, parse_choice
from beam_pipelines.benchmarks.base import Benchmark, Prediction, accuracy
from beam_pipelines.benchmarks.vlmevalkit import load_rows, mcq_job
from beam_pipelines.io.files import join, normalize, read_bytes

CATEGORIES = {"direct_attributes": "attribute", "relative_position": "spatial"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def shuffled(options: Sequence[str], seed: int, key: str) -> tuple[list[str], str]:
    """The options in a seeded order, and the letter of `options[0]` (the correct one)."""
    order = list(range(len(options)))
    random.Random(f"{seed}:{key}").shuffle(order)
    return [options[i] for i in order], LETTERS[order.index(0)]


def _json_files(root: str) -> list[str]:
    found = []
    for pattern in (join(root, "*.json"), join(root, "*", "*.json")):
        found += [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    return sorted(set(found))


class VStar(Benchmark):
    name = "vstar"

    def load(self, input: str, images_dir: str, seed: int) -> list[dict[str, Any]]:
        if input.endswith(".tsv"):
            return load_rows(input, images_dir, self.name, self._tsv_job)
        root = normalize(input).rstrip("/")
        files = _json_files(root)
        if not files:
            raise FileNotFoundError(f"no V* question files (*.json) under {input!r}")
        jobs = []
        for path in files:
            record = json.loads(read_bytes(path))
            stem = path[: -len(".json")]
            image = next((stem + e for e in IMAGE_EXTENSIONS if FileSystems.exists(stem + e)), None)
            if image is None:
                raise FileNotFoundError(f"{path}: no image beside it ({stem}.jpg, ...)")
            relative = path[len(root) + 1 : -len(".json")]
            folder = relative.rsplit("/", 1)[0] if "/" in relative else ""
            options, answer = shuffled(record["options"], seed, relative)
            jobs.append(
                {
                    "id": f"vstar/{relative}",
                    "image": image,
                    "question": record["question"],
                    "options": options,
                    "answer": answer,
                    "meta": {
                        "benchmark": self.name,
                        "category": CATEGORIES.get(folder, folder or "all"),
                        "target_object": record.get("target_object"),
                    },
                }
            )
        return jobs

    def _tsv_job(self, row: dict[str, str], options: list[str]) -> dict[str, Any]:
        category = row.get("category", "").strip()
        return mcq_job(
            row, options, self.name, category=CATEGORIES.get(category, category or "all")
        )

    def score(self, predictions: Sequence[Prediction]) -> dict[str, float]:
        hits: dict[str, list[bool]] = {}
        for p in predictions:
            hit = parse_choice(p.answer, p.job["options"]) == p.job["answer"]
            hits.setdefault(p.meta["category"], []).append(hit)
        ordered = [c for c in CATEGORIES.values() if c in hits] + sorted(
            c for c in hits if c not in CATEGORIES.values()
        )
        scores = {category: accuracy(hits[category]) for category in ordered}
        scores["overall"] = accuracy(h for c in ordered for h in hits[c])
        return scores
