"""What a benchmark is to `evaluate`: a loader of its native format and a scorer of its rules.

A loader turns the benchmark's own files into jobs (docs/formats.md job lines: `id`, `image`,
`question`, `options`, `answer` as a letter, and in `meta` whatever the scorer needs, such as
a category); images embedded in the files are written out once. A scorer takes one
`Prediction` per job (the answer text of one sample, or None when the job has no answer row)
and returns the benchmark's metrics, fractions in [0, 1] in the benchmark's reporting order.
A job without an answer scores 0, as VLMEvalKit counts predictions it could not obtain.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.io.files import exists, join, normalize, write_bytes


@dataclass(frozen=True)
class Prediction:
    """One job (as loaded) and the answer text one sample gave (None: no answer)."""

    job: Mapping[str, Any]
    answer: str | None

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.job.get("meta") or {}


class Benchmark(ABC):
    """A benchmark's loader and scorer (see the module docstring)."""

    name: ClassVar[str]

    @abstractmethod
    def load(self, input: str, images_dir: str, seed: int) -> list[dict[str, Any]]:
        """The benchmark's jobs; embedded images are written under `images_dir`."""

    @abstractmethod
    def score(self, predictions: Sequence[Prediction]) -> dict[str, float]:
        """The benchmark's metrics for one sample of every job."""


def accuracy(hits: Iterable[bool]) -> float:
    values = list(hits)
    return sum(values) / len(values) if values else 0.0


def open_text(path: str) -> io.TextIOWrapper:
    """A text stream over a local or object-store file (read as it goes, not all at once)."""
    raw = FileSystems.open(normalize(path), compression_type=CompressionTypes.AUTO)
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def image_extension(data: bytes) -> str:
    """The file extension an image's bytes call for (by their magic number)."""
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:3] == b"GIF":
        return "gif"
    return "img"


def write_image(images_dir: str, name: str, data: bytes) -> str:
    """Write an embedded image once (a rerun finds it there); its path."""
    path = join(images_dir, f"{name}.{image_extension(data)}")
    if not exists(path):
        write_bytes(path, data)
    return path
