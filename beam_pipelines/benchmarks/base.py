"""What a benchmark is to `evaluate`: a loader of its native format and a scorer of its rules.

A loader turns the benchmark's own files into jobs (docs/formats.md job lines: `id`, `image`,
`question`, `options`, `answer` as a letter, and in `meta` whatever the scorer needs, such as
a category); images embedded in the files are written out once. A scorer takes one
`Prediction` per job (the answer text of one sample, or None when the job has no answer row)
and returns the benchmark's metrics, fractions in [0, 1] in the benchmark's reporting order.
A job without an answer scores 0, as VLMEvalKit counts predictions it could not obtain.
A row with several images is an `images` job (docs/formats.md, "Multi-image jobs"). Rows a
job cannot express (a question without an image, or with more images than a job may list)
are not loaded: the loader counts them by reason in `skipped`, and evaluate reports the
counts beside the scores, so a figure over fewer questions than the benchmark has never
passes unnoticed.
"""

from __future__ import annotations

import io
import posixpath
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.agent.records import MAX_IMAGES
from beam_pipelines.io.files import exists, is_local, join, normalize, read_bytes, write_bytes

#: Parquet rows decoded at a time: benchmark rows carry whole images.
PARQUET_BATCH_ROWS = 16
#: Why a row is not loaded (`Benchmark.skipped`'s keys): a job has 1 to `MAX_IMAGES` images.
NO_IMAGE = "without an image"
TOO_MANY_IMAGES = f"with more than {MAX_IMAGES} images"


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
    #: Rows of the benchmark's files that `load` made no job of, counted by reason.
    skipped: Mapping[str, int] = MappingProxyType({})

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


def file_name(text: str) -> str:
    """`text` as a file name: characters other than letters, digits, `.`, `_`, `-` as `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def write_image(images_dir: str, name: str, data: bytes) -> str:
    """Write an embedded image once (a rerun finds it there); its path."""
    path = join(images_dir, f"{name}.{image_extension(data)}")
    if not exists(path):
        write_bytes(path, data)
    return path


def image_skip_reason(images: Sequence[bytes]) -> str | None:
    """Why a row with these images makes no job (`Benchmark.skipped`'s key), or None."""
    if not images:
        return NO_IMAGE
    if len(images) > MAX_IMAGES:
        return TOO_MANY_IMAGES
    return None


def write_job_images(images_dir: str, name: str, images: Sequence[bytes]) -> dict[str, Any]:
    """A row's images written once (`write_image`), as a job gives them: one image as
    `{"image": <name>.<ext>}`, several as `{"images": [<name>/0.<ext>, <name>/1.<ext>, ...]}`
    in the row's order (a folder of their own: no name of another row's image can clash)."""
    if len(images) == 1:
        return {"image": write_image(images_dir, name, images[0])}
    return {"images": [write_image(images_dir, f"{name}/{i}", d) for i, d in enumerate(images)]}


def parquet_rows(
    path: str, columns: Sequence[str], required: Sequence[str]
) -> Iterator[dict[str, Any]]:
    """The rows of a local or object-store Parquet file, as dicts of those of `columns` the
    file has, decoded a few rows at a time; a file without every `required` column is refused."""
    with FileSystems.open(normalize(path), compression_type=CompressionTypes.UNCOMPRESSED) as f:
        parquet = pq.ParquetFile(f)
        names = parquet.schema_arrow.names
        missing = [c for c in required if c not in names]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)} (it has {', '.join(names)})")
        present = [c for c in columns if c in names]
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=present):
            yield from batch.to_pylist()


def parquet_questions(
    path: str,
    columns: Sequence[str],
    required: Sequence[str],
    id_column: str,
    image_column: str,
    skipped: Counter[str],
) -> Iterator[tuple[str, dict[str, Any], list[bytes]]]:
    """`(id, row, images)` for each row of a released Parquet file that can be a job: its id
    (`id_column`, else its index) and its images (`embedded_images` of `image_column`). A row
    that cannot (`image_skip_reason`) is counted in `skipped` instead; an id seen twice is an
    error, since ids key the results."""
    folder = posixpath.dirname(normalize(path))
    seen: set[str] = set()
    for index, row in enumerate(parquet_rows(path, columns, required)):
        row_id = str(row.get(id_column) or index)
        if row_id in seen:
            raise ValueError(f"{path}: {id_column} {row_id!r} appears twice")
        seen.add(row_id)
        images = embedded_images(row.get(image_column), folder)
        reason = image_skip_reason(images)
        if reason:
            skipped[reason] += 1
            continue
        yield row_id, row, images


def embedded_images(value: Any, folder: str) -> list[bytes]:
    """The images of a Parquet cell written by Hugging Face `datasets`: an `Image` value
    (`{"bytes": ..., "path": ...}`), a list of them, or raw bytes; null holds none. A value
    without bytes is read from its `path`, a relative path against `folder` (the Parquet
    file's own)."""
    if value is None:
        return []
    if isinstance(value, bytes | bytearray):
        return [bytes(value)]
    if isinstance(value, list):
        return [data for item in value for data in embedded_images(item, folder)]
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return [bytes(value["bytes"])]
        path = value.get("path")
        if not path:
            return []
        if is_local(path) and not posixpath.isabs(normalize(path)):
            path = join(folder, path)
        return [read_bytes(path)]
    raise ValueError(f"an image cell holds {type(value).__name__}, not an image")
