"""Skip-done and duplicate ids: one join on id decides what each candidate job becomes.

An id that has an answer row anywhere under the output root (any run) is done: all of its
input lines are skipped. Ids that only have failure rows are not done, so a rerun retries
them. Among the remaining lines of one id, the first by (file, position) is the job and every
other one is a `duplicate_id` failure row; the choice is deterministic, so a rerun makes the
same one.

Answer shards are only ever written whole (see `outputs.writers`), so a killed run leaves
nothing half-written; a shard that cannot be read anyway (written by something else) is
counted and reported rather than failing the run, and its ids are simply not skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.io.fileio import EmptyMatchTreatment, MatchFiles
from apache_beam.metrics import Metrics

from beam_pipelines.agent.records import Failure, Job
from beam_pipelines.io.readers import READ_STAGE, Candidate, Key, where
from beam_pipelines.outputs.readers import read_answered_ids

log = logging.getLogger(__name__)


class ReadAnsweredIds(beam.DoFn):
    """File metadata -> `(id, True)` for every answer row in the shard."""

    def __init__(self) -> None:
        self._unreadable = Metrics.counter("annotate", "unreadable_answer_shards")

    def process(self, metadata: Any) -> Iterable[tuple[str, bool]]:
        try:
            ids = read_answered_ids(metadata.path)
        except Exception as e:  # a foreign or damaged file must not stop the run
            log.warning("skip-done: cannot read %s: %s", metadata.path, e)
            self._unreadable.inc()
            return
        for job_id in ids:
            yield job_id, True


def select_jobs(
    elements: list[Candidate | Failure], done: bool
) -> tuple[Job | None, list[Failure], int]:
    """For one key's elements: the job to run (or None), failure rows, and how many lines are
    skipped.

    Every element ends as exactly one of the three: a failure row passes through (a read
    error is never skipped: it has no answer to be skipped for; under its own key it is
    alone), and the candidates of an id are skipped when it is done, else the first is the job
    and the others are duplicates.
    """
    failures = [e for e in elements if isinstance(e, Failure)]
    candidates = [e for e in elements if isinstance(e, Candidate)]
    if done:
        return None, failures, len(candidates)
    if not candidates:
        return None, failures, 0
    ordered = sorted(candidates, key=lambda c: c.order)
    first = ordered[0]
    duplicates = [
        Failure(
            input=c.raw,
            stage=READ_STAGE,
            error_class="duplicate_id",
            message=f"{where(c.source, c.position)}: id {first.job.id!r} also appears at "
            f"{where(first.source, first.position)}, which is the one processed",
            id=first.job.id,
        )
        for c in ordered[1:]
    ]
    return first.job, failures + duplicates, 0


class SelectJobs(beam.DoFn):
    """`(key, {"jobs": [...], "done": [...]})` -> the Job to run and/or failure rows."""

    def __init__(self) -> None:
        self._skipped = Metrics.counter("annotate", "jobs_skipped_done")
        self._duplicates = Metrics.counter("annotate", "duplicate_ids")

    def process(self, element: tuple[Key, dict[str, Any]]) -> Iterable[Job | Failure]:
        _, grouped = element
        job, failures, skipped = select_jobs(list(grouped["jobs"]), bool(list(grouped["done"])))
        if skipped:
            self._skipped.inc(skipped)
        for failure in failures:
            if failure.error_class == "duplicate_id":
                self._duplicates.inc()
            yield failure
        if job is not None:
            yield job


class SkipDoneAndDuplicates(beam.PTransform):
    """Keyed candidates and failures -> jobs to run and failure rows, in one collection.

    Without `answers_glob`, no answer shard is read: the candidates were already checked
    against an index of answered ids (an incremental run, `io/incremental.py`), and only the
    duplicate ids among them are decided here.
    """

    def __init__(self, answers_glob: str | None) -> None:
        super().__init__()
        self._answers_glob = answers_glob

    def expand(self, candidates: beam.PCollection) -> beam.PCollection:
        if self._answers_glob is None:
            done = candidates.pipeline | "NoAnswersRead" >> beam.Create([])
        else:
            done = (
                candidates.pipeline
                | "MatchAnswers" >> MatchFiles(self._answers_glob, EmptyMatchTreatment.ALLOW)
                | "AnsweredIds" >> beam.ParDo(ReadAnsweredIds())
            )
        return (
            {"jobs": candidates, "done": done}
            | "JoinOnId" >> beam.CoGroupByKey()
            | "Select" >> beam.ParDo(SelectJobs())
        )
