"""Reading outputs back, as streams, through Beam's FileSystems (local, `file://`, `gs://`).

Answers, failures and traces of one run or of every run under a root (the globs of
`layout.py`), the run list and manifests. Nothing holds more than one shard's rows or one
trace at a time unless it says so (`read_answers`, `read_failures`). A shard that cannot be
read (written by something else, damaged) is logged and skipped: one bad file never stops a
summary, a report or a resume. Answer rows are deduplicated by id by whoever counts them (a
retried bundle on a distributed runner can write a job's row twice; both are the same job).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_pipelines.io.files import exists, read_bytes
from beam_pipelines.outputs.layout import OutputLayout, split_trace_uri

log = logging.getLogger(__name__)

ANSWER_BATCH_ROWS = 4096
_ID_PREFIX = '{"id": '


def match(pattern: str) -> list[str]:
    """Paths matching a glob, sorted; none when nothing matches."""
    try:
        result = FileSystems.match([pattern])[0]
    except Exception:  # Beam raises BeamIOError for "no match" on some filesystems
        return []
    return sorted(m.path for m in result.metadata_list)


# -- runs -------------------------------------------------------------------------------------


def list_runs(root: str) -> list[str]:
    """Run ids under an output root (those with a manifest), oldest first.

    Run ids start with their UTC start time (`options.new_run_id`), so sorting by name sorts
    by start; a run id chosen by hand sorts by its name.
    """
    manifests = match(OutputLayout(root, "").all_manifests_glob())
    return sorted(path.rstrip("/").split("/")[-2] for path in manifests)


def resolve_run(root: str, run_id: str | None) -> OutputLayout:
    """The layout of `run_id`, or of the newest run under `root` when it is None."""
    if run_id is None:
        runs = list_runs(root)
        if not runs:
            raise FileNotFoundError(f"no runs under {root!r} (expected runs/<id>/manifest.json)")
        run_id = runs[-1]
    layout = OutputLayout(root, run_id)
    if not exists(layout.manifest) and not match(layout.answers_glob()):
        raise FileNotFoundError(f"run {run_id!r} not found under {root!r}")
    return layout


def read_manifest(layout: OutputLayout) -> dict[str, Any]:
    """The run's manifest, or an empty dict when it is missing or unreadable."""
    try:
        data = json.loads(read_bytes(layout.manifest))
    except (OSError, ValueError) as e:
        log.warning("cannot read %s: %s", layout.manifest, e)
        return {}
    return data if isinstance(data, dict) else {}


# -- answers and failures ---------------------------------------------------------------------


def read_answered_ids(path: str) -> list[str]:
    """The ids in one answer shard (only the `id` column is read); raises when unreadable."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        table = pq.read_table(f, columns=["id"])
    return [i for i in table.column("id").to_pylist() if i is not None]


def iter_answers(pattern: str) -> Iterator[dict[str, Any]]:
    """Answer rows of the shards matching `pattern`, shard by shard, batch by batch
    (duplicates included)."""
    for path in match(pattern):
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=ANSWER_BATCH_ROWS):
                    yield from batch.to_pylist()
        except (OSError, ValueError) as e:
            log.warning("cannot read answer shard %s: %s", path, e)


def read_answers(pattern: str) -> list[dict[str, Any]]:
    """Answer rows of the shards matching `pattern`, one per id (the first read)."""
    rows: dict[str, dict[str, Any]] = {}
    for row in iter_answers(pattern):
        rows.setdefault(row["id"], row)
    return list(rows.values())


def iter_failures(pattern: str) -> Iterator[dict[str, Any]]:
    """Failure rows of the shards matching `pattern`, line by line."""
    for path in match(pattern):
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                for line in iter(f.readline, b""):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(row, dict):
                            yield row
        except OSError as e:
            log.warning("cannot read failure shard %s: %s", path, e)


def read_failures(pattern: str) -> list[dict[str, Any]]:
    """Failure rows of the shards matching `pattern`."""
    return list(iter_failures(pattern))


def iter_lines(pattern: str) -> Iterator[str]:
    """The non-blank lines of the text shards matching `pattern` (`.gz` ones decompressed)."""
    for path in match(pattern):
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as f:
            for raw in iter(f.readline, b""):
                line = raw.decode("utf-8").rstrip("\n")
                if line.strip():
                    yield line


# -- traces -----------------------------------------------------------------------------------


def _line_id(line: str) -> str | None:
    """The id of a trace line without parsing the whole trace (traces start with their id)."""
    if not line.startswith(_ID_PREFIX):
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(line, len(_ID_PREFIX))
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def iter_shard_traces(shard: str, wanted: Mapping[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Traces of one gzip JSONL shard; only those whose id is in `wanted` (all when None).

    The shard is decompressed as a stream and a line is parsed only when its id is wanted.
    """
    try:
        with FileSystems.open(shard, compression_type=CompressionTypes.GZIP) as f:
            # Beam's CompressedFile has readline but is not iterable.
            for raw in iter(f.readline, b""):
                line = raw.decode("utf-8", errors="replace")
                if not line.strip():
                    continue
                job_id = _line_id(line)
                if wanted is not None and job_id is not None and job_id not in wanted:
                    continue
                try:
                    trace = json.loads(line)
                except ValueError:
                    continue
                if isinstance(trace, dict) and (wanted is None or trace.get("id") in wanted):
                    yield trace
    except (OSError, EOFError) as e:
        log.warning("cannot read trace shard %s: %s", shard, e)


def iter_traces(layout: OutputLayout, wanted: Mapping[str, str | None]) -> Iterator[dict[str, Any]]:
    """The traces of the `wanted` ids (id -> trace URI or None), each at most once.

    Shards named by a trace URI are read first; ids without one (or not found where their URI
    said) are looked for in the run's other shards, which are only read when needed.
    """
    by_shard: dict[str, set[str]] = {}
    for job_id, uri in wanted.items():
        parts = split_trace_uri(uri)
        if parts is not None:
            by_shard.setdefault(parts[0], set()).add(job_id)
    found: set[str] = set()

    def take(traces: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for trace in traces:
            job_id = trace.get("id")
            if isinstance(job_id, str) and job_id not in found:
                found.add(job_id)
                yield trace

    for shard in sorted(by_shard):
        yield from take(iter_shard_traces(shard, {i: True for i in by_shard[shard]}))
    for shard in match(layout.traces_glob()):
        missing = {i: True for i in wanted if i not in found}
        if not missing:
            return
        if shard in by_shard and by_shard[shard] <= found:
            continue
        yield from take(iter_shard_traces(shard, missing))
