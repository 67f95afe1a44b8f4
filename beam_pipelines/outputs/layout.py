"""Where a run's outputs live under the output root, the globs that find them, trace URIs.

```
<root>/images/<sha256>.png                          content-addressed, shared by all runs
<root>/runs/<run_id>/answers/part-*.parquet         answer rows (records.answer_schema())
<root>/runs/<run_id>/traces/part-*.jsonl.gz         one trace per job
<root>/runs/<run_id>/failures/part-*.jsonl          dead-letter rows
<root>/runs/<run_id>/manifest.json                  options, versions, counts, start/end
<root>/runs/<run_id>/counts.json                    final counts, counted from the outputs
<root>/runs/<run_id>/inputs.json                    the files an incremental run read (its end)
<root>/index/index.json, done-<run_id>.parquet      incremental runs' index (io/incremental.py)
<root>/runs/<run_id>/{kept,rejected,sft}/part-*     regenerate's filter outputs
<root>/runs/<run_id>/filter_counts.json             what the filters did
```

Every reader of the outputs finds them through these paths and globs; nothing else builds
them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from beam_pipelines.io.files import join

ANSWER_SHARDS = "part-*.parquet"
TRACE_SHARDS = "part-*.jsonl.gz"
FAILURE_SHARDS = "part-*.jsonl"


@dataclass(frozen=True)
class OutputLayout:
    """Paths of one run under an output root."""

    root: str
    run_id: str

    @property
    def run_dir(self) -> str:
        return join(self.root, "runs", self.run_id)

    @property
    def answers_dir(self) -> str:
        return join(self.run_dir, "answers")

    @property
    def traces_dir(self) -> str:
        return join(self.run_dir, "traces")

    @property
    def failures_dir(self) -> str:
        return join(self.run_dir, "failures")

    @property
    def images_dir(self) -> str:
        return join(self.root, "images")

    @property
    def manifest(self) -> str:
        return join(self.run_dir, "manifest.json")

    @property
    def counts(self) -> str:
        """The run's final counts: written at the end of a run that waited, by `status`
        after a detached (Dataflow, flex template) one."""
        return join(self.run_dir, "counts.json")

    @property
    def inputs_read(self) -> str:
        """The input files an incremental run read, written as its last step."""
        return join(self.run_dir, "inputs.json")

    @property
    def index_dir(self) -> str:
        return join(self.root, "index")

    @property
    def index_state(self) -> str:
        """The incremental runs' index: the runs merged and the input files they read."""
        return join(self.index_dir, "index.json")

    def done_index(self, run_id: str) -> str:
        """The sorted answered ids of the merged runs, as the launch of `run_id` wrote them."""
        return join(self.index_dir, f"done-{run_id}.parquet")

    @property
    def kept_dir(self) -> str:
        return join(self.run_dir, "kept")

    @property
    def rejected_dir(self) -> str:
        return join(self.run_dir, "rejected")

    @property
    def sft_dir(self) -> str:
        return join(self.run_dir, "sft")

    @property
    def filter_counts(self) -> str:
        return join(self.run_dir, "filter_counts.json")

    def image_uri(self, sha256: str) -> str:
        return join(self.images_dir, f"{sha256}.png")

    def answers_glob(self) -> str:
        return join(self.answers_dir, ANSWER_SHARDS)

    def traces_glob(self) -> str:
        return join(self.traces_dir, TRACE_SHARDS)

    def failures_glob(self) -> str:
        return join(self.failures_dir, FAILURE_SHARDS)

    def all_answers_glob(self) -> str:
        """Answer shards of every run under the root: what skip-done reads."""
        return join(self.root, "runs", "*", "answers", ANSWER_SHARDS)

    def all_traces_glob(self) -> str:
        """Trace shards of every run under the root: what regenerate filters."""
        return join(self.root, "runs", "*", "traces", TRACE_SHARDS)

    def all_manifests_glob(self) -> str:
        """The manifest of every run under the root."""
        return join(self.root, "runs", "*", "manifest.json")


def trace_uri(shard: str, job_id: str) -> str:
    """Where one job's trace is: its shard and, after `#`, the url-quoted id."""
    return f"{shard}#{quote(job_id, safe='')}"


def split_trace_uri(uri: str | None) -> tuple[str, str] | None:
    """`<shard>#<url-quoted id>` -> (shard, id), or None for anything else."""
    if not uri or "#" not in uri:
        return None
    shard, _, quoted = uri.rpartition("#")
    return shard, unquote(quoted)
