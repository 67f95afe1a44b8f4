"""Incremental runs (`--incremental`): a run reads only the input files no earlier run has
read, and checks the ids it reads against a compact index of answered ids, so its cost is
that of its new inputs plus the index, not of everything ever annotated.

```
<root>/index/index.json            the runs merged so far, and every input file they read
                                   (path -> size, mtime): what the next run does not read again
<root>/index/done-<run_id>.parquet the answered ids of those runs: one sorted column `id`
<root>/runs/<run_id>/inputs.json   the files the run read; written by its last stage, after
                                   every shard, so it says the run ended
```

At launch (`plan_run`), the runs not merged yet (normally just the previous one) are merged:
the `id` column of their answer shards joins the done index, and the files of those that wrote
`inputs.json` join the read files. A run that ended without `inputs.json` (killed, failed, or
with failures worth retrying: `RETRY_CLASSES`) adds its answered ids only, so its files are
read again by the next run and their unanswered jobs retried. Then the input glob is listed
(metadata only) and only the files that are new or changed (size or modification time; a
rewritten GCS object has a new one) are read. Runs must not overlap (the schedulers see to
it): a run merged while it still writes would have its later answers missing from the index.

Inside the pipeline, `SkipIndexedDone` drops every candidate whose id the index holds; each
worker process loads the index once (a sorted Arrow column, searched by bisection).
"""

from __future__ import annotations

import bisect
import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from beam_pipelines.agent.records import FailedJob, Failure
from beam_pipelines.io.files import exists, read_bytes, write_bytes
from beam_pipelines.io.readers import Candidate, InputFile, expand_input, input_pattern
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.outputs.readers import list_runs, match, read_answered_ids

log = logging.getLogger(__name__)

#: Failure classes that may pass (a server or store that was down, a missing API key): a run
#: that has any does not mark its files read, so the next run reads them again and retries.
RETRY_CLASSES = frozenset(
    {"model_unavailable", "model_deadline", "tool_unavailable", "image_unreadable"}
)


@dataclass(frozen=True)
class FileState:
    """What an input file was when it was read: a change of either means it is read again."""

    size: int
    mtime: float

    @classmethod
    def of(cls, metadata: Any) -> FileState:
        return cls(int(metadata.size_in_bytes), float(metadata.last_updated_in_seconds))


@dataclass
class IndexState:
    """`index/index.json`: the merged runs, the files they read, and the done index's file."""

    runs: list[str] = field(default_factory=list)
    files: dict[str, FileState] = field(default_factory=dict)
    done: str | None = None
    ids: int = 0

    @classmethod
    def load(cls, layout: OutputLayout) -> IndexState:
        if not exists(layout.index_state):
            return cls()
        data = json.loads(read_bytes(layout.index_state))
        files = {path: FileState(*state) for path, state in data["files"].items()}
        return cls(data["runs"], files, data["done"], data["ids"])

    def save(self, layout: OutputLayout) -> None:
        data = {
            "runs": self.runs,
            "files": {path: [s.size, s.mtime] for path, s in sorted(self.files.items())},
            "done": self.done,
            "ids": self.ids,
        }
        write_bytes(layout.index_state, json.dumps(data, indent=1).encode("utf-8") + b"\n")


@dataclass(frozen=True)
class IncrementalPlan:
    """What an incremental run reads: its new files, and the done index to skip ids by."""

    files: tuple[InputFile, ...]
    states: dict[str, FileState]
    done: str | None
    summary: dict[str, Any]


def _read_ids(path: str) -> pa.Array:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return pq.read_table(f, columns=["id"]).column("id").combine_chunks()


def _write_ids(path: str, ids: pa.Array) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": ids}), buffer, compression="zstd", use_dictionary=False)
    write_bytes(path, buffer.getvalue())


def merge_runs(layout: OutputLayout) -> IndexState:
    """Merge the runs under the root that the index does not cover yet (not this one) and
    write the index when any were; the index as it is now."""
    state = IndexState.load(layout)
    pending = [r for r in list_runs(layout.root) if r not in state.runs and r != layout.run_id]
    if not pending:
        return state
    parts = [_read_ids(state.done)] if state.done else []
    for run_id in pending:
        run = OutputLayout(layout.root, run_id)
        for shard in match(run.answers_glob()):
            try:
                parts.append(pa.array(read_answered_ids(shard), pa.string()))
            except Exception as e:  # a foreign or damaged shard: its ids are not skipped
                log.warning("incremental: cannot read %s: %s", shard, e)
        if exists(run.inputs_read):
            read = json.loads(read_bytes(run.inputs_read))["files"]
            state.files.update({path: FileState(*s) for path, s in read.items()})
    ids = pc.unique(pa.concat_arrays(parts)) if parts else pa.array([], pa.string())
    ids = ids.take(pc.sort_indices(ids))
    done = layout.done_index(layout.run_id)
    _write_ids(done, ids)
    previous = state.done
    state.runs += pending
    state.done, state.ids = done, len(ids)
    state.save(layout)  # the index moves to the new file only once it is whole
    if previous and previous != done:
        FileSystems.delete([previous])
    return state


def plan_run(layout: OutputLayout, input: str, images: bool) -> IncrementalPlan:
    """Merge the previous runs into the index and choose the input files this run reads."""
    state = merge_runs(layout)
    found = FileSystems.match([input_pattern(input)])[0].metadata_list
    states = {m.path: FileState.of(m) for m in found}
    files = [f for f in expand_input(input, images) if f.path in states]
    new = tuple(f for f in files if state.files.get(f.path) != states[f.path])
    summary = {
        "input_files": len(files),
        "new_files": len(new),
        "index_runs": len(state.runs),
        "index_ids": state.ids,
        "done_index": state.done,
    }
    return IncrementalPlan(new, {f.path: states[f.path] for f in new}, state.done, summary)


class _SortedIds:
    """A sorted Arrow string column as a sequence `bisect` can search (Arrow sorts strings by
    UTF-8 bytes, which is Python's code point order)."""

    def __init__(self, ids: pa.Array) -> None:
        self._ids = ids

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> str:
        return self._ids[i].as_py()

    def __contains__(self, job_id: object) -> bool:
        i = bisect.bisect_left(self, job_id)
        return i < len(self) and self[i] == job_id


class SkipIndexedDone(beam.DoFn):
    """Drops `(id, Candidate)` elements whose id the done index holds; failures pass."""

    def __init__(self, done: str | None) -> None:
        self._done = done
        self._handle = shared.Shared()
        self._skipped = Metrics.counter("annotate", "jobs_skipped_done")

    def setup(self) -> None:
        done = self._done

        def load() -> _SortedIds:
            return _SortedIds(_read_ids(done) if done else pa.array([], pa.string()))

        self._ids = self._handle.acquire(load, tag=done or "")

    def process(self, element: tuple[Any, Candidate | Failure]) -> Iterable[Any]:
        candidate = element[1]
        if isinstance(candidate, Candidate) and candidate.job.id in self._ids:
            self._skipped.inc()
            return
        yield element


def _retryable(result: Any) -> bool:
    return isinstance(result, FailedJob) and result.failure.error_class in RETRY_CLASSES


class CommitInputs(beam.PTransform):
    """The run's last stage: once every shard is written (`written`, WriteResults' output,
    has been consumed), write `runs/<run_id>/inputs.json` with the files it read, unless a
    job failed in a way a rerun may fix."""

    def __init__(
        self, layout: OutputLayout, states: Mapping[str, FileState], finished: beam.PCollection
    ) -> None:
        super().__init__()
        self._layout = layout
        self._states = dict(states)
        self._finished = finished

    def expand(self, written: beam.PCollection) -> beam.PCollection:
        retries = (
            self._finished
            | "Retryable" >> beam.Filter(_retryable)
            | "CountRetryable" >> beam.combiners.Count.Globally()
        )
        return (
            written
            | "AllWritten" >> beam.combiners.Count.Globally()
            | "WriteInputs"
            >> beam.Map(
                _write_inputs,
                layout=self._layout,
                states=self._states,
                retries=beam.pvalue.AsSingleton(retries),
            )
        )


def _write_inputs(
    _: int, layout: OutputLayout, states: Mapping[str, FileState], retries: int
) -> Sequence[str]:
    if retries:
        log.warning(
            "%d jobs failed in a way a rerun may fix: %s is not written, so the next "
            "incremental run reads this run's files again",
            retries,
            layout.inputs_read,
        )
        return []
    data = {"files": {path: [s.size, s.mtime] for path, s in sorted(states.items())}}
    write_bytes(layout.inputs_read, json.dumps(data, indent=1).encode("utf-8") + b"\n")
    return [layout.inputs_read]
