"""`ReadJobs`: input files -> validated jobs keyed by id, plus failure rows for bad lines.

Accepted inputs (docs/formats.md, "Input"): JSONL files (optionally compressed: `.gz`, `.bz2`,
...), Parquet files, traces (`runs/*/traces/part-*.jsonl.gz`: each is read as its job), and
images with one `--prompt` for all (each image is the job
`{"image": <uri>, "question": <prompt>}`, whose id is the content hash `Job.from_dict` gives
a job without one). `--input` is a file, a glob, or a folder (its direct children).

Every non-blank line (every Parquet row, every image) ends here as exactly one keyed
element: a candidate job `(id, Candidate)`, or `(unique key, Failure)` with the raw input and
the error class `Job.from_dict` chose (`invalid_json`, `missing_field`, `invalid_field`,
`question_too_long`, ...). Failures travel in the same collection as jobs, all the way to the
writer: the in-process runner materializes every multi-input Flatten (a barrier), so the
pipeline never merges collections on its streaming path. Duplicates and skip-done are decided
by `SelectJobs` in `resume.py`, after a join on id.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipelines.agent.records import Failure, InputError, Job
from beam_pipelines.io.files import is_local, join, normalize

JSONL_EXTENSIONS = (".jsonl", ".json", ".ndjson")
COMPRESSED_EXTENSIONS = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".lzo", ".xz")
PARQUET_EXTENSIONS = (".parquet", ".pq")
PARQUET_BATCH_ROWS = 1024
READ_STAGE = "read"


@dataclass(frozen=True)
class InputFile:
    """One input file and how to read it: `jsonl`, `parquet` or `image`."""

    path: str
    kind: str


@dataclass(frozen=True)
class Candidate:
    """A valid job and where it came from (which duplicate wins is decided by position)."""

    source: str
    position: int
    job: Job
    raw: dict[str, Any]

    @property
    def order(self) -> tuple[str, int]:
        return (self.source, self.position)


def _kind_of(path: str) -> str | None:
    name = path.lower()
    for ext in COMPRESSED_EXTENSIONS:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    if name.endswith(JSONL_EXTENSIONS):
        return "jsonl"
    if name.endswith(PARQUET_EXTENSIONS):
        return "parquet"
    return None


def _has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _match(pattern: str) -> list[str]:
    result = FileSystems.match([pattern])[0]
    paths = [m.path for m in result.metadata_list]
    if is_local(pattern):
        paths = [p for p in paths if os.path.isfile(p)]
    return paths


def input_pattern(input: str) -> str:
    """The glob `--input` stands for: itself, or a folder's files."""
    input = normalize(input)
    is_folder = not _has_glob(input) and (
        input.endswith("/")
        or (is_local(input) and os.path.isdir(input))
        or not FileSystems.exists(input)
    )
    return join(input, "*") if is_folder else input


def expand_input(input: str, images: bool) -> list[InputFile]:
    """The input files in a stable order; `images` reads every file as an image job.

    Raises FileNotFoundError when nothing matches (an empty run is a user error, not a
    success with zero rows).
    """
    input = normalize(input)
    paths = _match(input_pattern(input))
    files: list[InputFile] = []
    for path in sorted(paths):
        if os.path.basename(path).startswith(".tmp-"):
            continue
        kind = "image" if images else _kind_of(path)
        if kind is not None:
            files.append(InputFile(path, kind))
    if not files:
        what = "image files" if images else "JSONL or Parquet files"
        raise FileNotFoundError(f"no {what} found at {input!r}")
    return files


def _json_safe(value: Any) -> Any:
    """A Parquet row as plain JSON values (timestamps, bytes and the like become strings)."""
    return json.loads(json.dumps(value, default=str))


def iter_records(file: InputFile, prompt: str | None) -> Iterator[tuple[int, str | dict[str, Any]]]:
    """`(position, raw)` for every record of a file: a line (str) or a row/image (dict)."""
    if file.kind == "image":
        yield 1, {"image": file.path, "question": prompt}
        return
    if file.kind == "parquet":
        with FileSystems.open(file.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            position = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=PARQUET_BATCH_ROWS):
                for row in batch.to_pylist():
                    position += 1
                    yield position, _json_safe(row)
        return
    with FileSystems.open(file.path, compression_type=CompressionTypes.AUTO) as f:
        # Line by line (compressed files are not iterable): memory stays at one line.
        for position, line in enumerate(iter(f.readline, b""), start=1):
            # Bytes that are not UTF-8 survive as lone surrogates (`parse_record` refuses them).
            text = line.decode("utf-8", errors="surrogateescape").strip()
            if text:
                yield position, text


#: Meta keys a sample gets (`transforms/samples.py`); a trace read as input drops them.
SAMPLE_META_KEYS = ("source_id", "sample", "seed")


def job_of_trace(data: Any) -> Any:
    """A trace (an object with `job` and `messages`) read as input is its job again.

    The job of a sample (`<id>#<k>`) is its source job: its original id, without the
    sample's bookkeeping in `meta`. Anything else is returned as it is.
    """
    if not (isinstance(data, dict) and isinstance(data.get("job"), dict) and "messages" in data):
        return data
    job = dict(data["job"])
    meta = job.get("meta")
    if isinstance(meta, dict) and "source_id" in meta:
        job["id"] = meta["source_id"]
        job["meta"] = {k: v for k, v in meta.items() if k not in SAMPLE_META_KEYS}
    return job


def parse_record(source: str, position: int, raw: str | dict[str, Any]) -> Candidate | Failure:
    """One record -> a candidate job, or a failure row that keeps the raw input."""
    data: Any = raw
    try:
        if isinstance(raw, str):
            _check_utf8(raw)
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError) as e:
                raise InputError("invalid_json", f"not valid JSON: {e}") from None
        data = job_of_trace(data)
        job = Job.from_dict(data)
    except InputError as e:
        raw_id = data.get("id") if isinstance(data, dict) else None
        named = isinstance(raw_id, str | int) and e.error_class != "invalid_id"
        failure = Failure.from_error(
            data if isinstance(data, dict) else raw,
            READ_STAGE,
            e,
            id=str(raw_id) if named else None,
        )
        return dataclasses.replace(failure, message=f"{where(source, position)}: {e.message}")
    return Candidate(source=source, position=position, job=job, raw=data)


def where(source: str, position: int) -> str:
    """A record's place in the input, as failure messages name it."""
    return f"line {position} of {source}"


def _check_utf8(line: str) -> None:
    """A line read with `surrogateescape` holds a lone surrogate for each byte that is not
    UTF-8; the failure row keeps it (JSON writes it as a `\\udcXX` escape, byte XX)."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as e:
        byte = ord(line[e.start]) - 0xDC00
        raise InputError(
            "invalid_utf8", f"the line is not UTF-8 (byte 0x{byte:02x} at character {e.start})"
        ) from None


#: The join key of a read element: a job's id, or a failure row's `failure_key`.
Key = str | tuple[str, str, int]


def failure_key(source: str, position: int) -> tuple[str, str, int]:
    """The join key of a failure row: unique per line, and never equal to a job id whatever
    the id holds (ids are strings, this is a tuple)."""
    return ("failure", source, position)


class ReadRecords(beam.DoFn):
    """Reads input files in order, stopping after `limit` records in total (if given)."""

    def __init__(self, prompt: str | None, limit: int | None) -> None:
        self._prompt = prompt
        self._limit = limit
        self._lines = Metrics.counter("annotate", "input_records")
        self._bad = Metrics.counter("annotate", "input_errors")

    def process(self, files: Sequence[InputFile]) -> Iterable[tuple[Key, Candidate | Failure]]:
        remaining = self._limit
        for file in files:
            try:
                records = iter_records(file, self._prompt)
                for position, raw in records:
                    if remaining is not None:
                        if remaining <= 0:
                            return
                        remaining -= 1
                    self._lines.inc()
                    parsed = parse_record(file.path, position, raw)
                    if isinstance(parsed, Failure):
                        self._bad.inc()
                        yield failure_key(file.path, position), parsed
                    else:
                        yield parsed.job.id, parsed
            except Exception as e:  # zlib, lzma, Arrow, storage: this file only, never the run
                # An unreadable file (a damaged compressed stream, a corrupt Parquet footer) is
                # one failure row that names the file; the records read before the error stand.
                self._bad.inc()
                failure = Failure(
                    input={"source": file.path},
                    stage=READ_STAGE,
                    error_class="unreadable_input",
                    message=f"{file.path}: {type(e).__name__}: {e}"[:2000],
                )
                yield failure_key(file.path, -1), failure


class ReadJobs(beam.PTransform):
    """Input -> `(id, Candidate)` and `(failure key, Failure)` elements.

    With a limit, one DoFn reads the files in order so that "the first N" is well defined;
    without one, files are read in parallel. `files` reads those of the input's files only
    (an incremental run's new ones) instead of all.
    """

    def __init__(
        self,
        input: str,
        prompt: str | None = None,
        limit: int | None = None,
        files: Sequence[InputFile] | None = None,
    ) -> None:
        super().__init__()
        self._input = input
        self._prompt = prompt
        self._limit = limit
        self._files = files

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        files = self._files
        if files is None:
            files = expand_input(self._input, images=self._prompt is not None)
        groups = [tuple(files)] if self._limit is not None else [(f,) for f in files]
        return (
            pbegin
            | "ListFiles" >> beam.Create(groups)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ParseRecords" >> beam.ParDo(ReadRecords(self._prompt, self._limit))
        )
