"""VLMEvalKit's TSV format (HR-Bench, MME-RealWorld): one row per question, base64 images.

Columns: `index`, `image` (the base64 image, or, when several rows share an image, the
`index` of the row that holds it: VLMEvalKit stores each image once), `question`, one column
per option letter (`A`, `B`, ...), `answer` (the letter), and benchmark-specific columns
(`category`, `cycle_category`, `l2-category`, ...). Fields are large (whole images), so the
reader raises the csv module's field limit and streams rows.
"""

from __future__ import annotations

import base64
import binascii
import csv
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from beam_pipelines.agent.records import LETTERS
from beam_pipelines.benchmarks.base import open_text, write_image

#: An `image` field this short is a reference to another row's index, not an image.
MAX_REFERENCE_CHARS = 64


def read_rows(path: str) -> Iterator[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    with open_text(path) as f:
        yield from csv.DictReader(f, delimiter="\t")


def option_columns(row: dict[str, str], letters: str = LETTERS) -> list[str]:
    """The options in letter order: `A`, `B`, ... while the column exists and is not empty."""
    options = []
    for letter in letters:
        value = (row.get(letter) or "").strip()
        if not value or value.lower() == "nan":
            break
        options.append(value)
    return options


def decode_image(field: str) -> bytes:
    try:
        return base64.b64decode(field, validate=False)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"the image field is neither base64 nor an index: {e}") from None


def mcq_job(row: dict[str, str], options: list[str], benchmark: str, **meta: str) -> dict[str, Any]:
    """A row as a multiple-choice job (without `id`/`image`): its question, options and answer
    letter; `meta` holds the benchmark, the row's index and what its scorer needs."""
    return {
        "question": row["question"],
        "options": options,
        "answer": row["answer"].strip(),
        "meta": {"benchmark": benchmark, "index": row["index"].strip(), **meta},
    }


def load_rows(path: str, images_dir: str, prefix: str, to_job: Any) -> list[dict[str, Any]]:
    """Every row as a job (`to_job(row, options) -> dict` without `id`/`image`), its image
    written under `images_dir` (`<index>.<ext>`); references resolve to the row they name."""
    jobs: list[dict[str, Any]] = []
    images: dict[str, str] = {}
    references: list[tuple[dict[str, Any], str]] = []
    for row in read_rows(path):
        index = row["index"].strip()
        field = (row.get("image") or "").strip()
        job = {"id": f"{prefix}-{index}", **to_job(row, option_columns(row))}
        if len(field) <= MAX_REFERENCE_CHARS:
            references.append((job, field))
        else:
            images[index] = job["image"] = write_image(images_dir, index, decode_image(field))
        jobs.append(job)
    for job, ref in references:
        if ref not in images:
            raise ValueError(f"{job['id']}: its image refers to row {ref!r}, which has none")
        job["image"] = images[ref]
    return [{k: job[k] for k in _ORDER if k in job} for job in jobs]


_ORDER: Sequence[str] = ("id", "image", "question", "options", "answer", "meta")
