"""Any job JSONL with ground truth (docs/formats.md, "Input"): accuracy, overall and per category.

Jobs are read as they are; a relative `image`, or entry of `images`, is resolved against the
file's folder. An answer is right by the answer rows' own rule: the option letter it names,
or a normalised exact match for free-form answers. `meta.category`, when jobs have one,
gives a breakdown.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from typing import Any

from beam_pipelines.agent.records import Job, _normalise, parse_choice
from beam_pipelines.benchmarks.base import Benchmark, Prediction, accuracy
from beam_pipelines.io.files import is_local, normalize, read_bytes


def correct(job: dict[str, Any], answer: str | None) -> bool:
    if answer is None or job.get("answer") is None:
        return False
    if job.get("options"):
        return parse_choice(answer, job["options"]) == job["answer"]
    return _normalise(answer) == _normalise(job["answer"])


def resolve(uri: str, path: str) -> str:
    """An image URI of the job file `path`: a relative local one joined to the file's folder."""
    if is_local(uri) and not posixpath.isabs(normalize(uri)) and is_local(path):
        return posixpath.join(posixpath.dirname(path), uri)
    return uri


class JsonlBenchmark(Benchmark):
    name = "jsonl"

    def load(self, input: str, images_dir: str, seed: int) -> list[dict[str, Any]]:
        path = normalize(input)
        jobs = []
        for line in read_bytes(path).decode("utf-8").splitlines():
            if not line.strip():
                continue
            job = Job.from_dict(json.loads(line)).to_dict()
            if job["answer"] is None:
                raise ValueError(f"{job['id']}: a benchmark job needs an answer")
            if "images" in job:
                job["images"] = [resolve(uri, path) for uri in job["images"]]
            else:
                job["image"] = resolve(job["image"], path)
            jobs.append(job)
        return jobs

    def score(self, predictions: Sequence[Prediction]) -> dict[str, float]:
        hits: dict[str, list[bool]] = {}
        for p in predictions:
            hits.setdefault(str(p.meta.get("category", "")), []).append(correct(p.job, p.answer))
        scores = {c: accuracy(hits[c]) for c in sorted(hits) if c}
        scores["overall"] = accuracy(h for v in hits.values() for h in v)
        return scores
