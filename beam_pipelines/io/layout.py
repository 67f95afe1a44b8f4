"""Where a run's outputs live under the output root (DESIGN.md section 3, a contract).

```
<root>/images/<sha256>.png                          content-addressed, shared by all runs
<root>/runs/<run_id>/answers/part-*.parquet         answer rows (records.answer_schema())
<root>/runs/<run_id>/traces/part-*.jsonl.gz         one trace per job
<root>/runs/<run_id>/failures/part-*.jsonl          dead-letter rows
<root>/runs/<run_id>/manifest.json                  options, versions, counts, start/end
```
"""

from __future__ import annotations

from dataclasses import dataclass

from beam_pipelines.io.files import join


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

    def image_uri(self, sha256: str) -> str:
        return join(self.images_dir, f"{sha256}.png")

    def all_answers_glob(self) -> str:
        """Answer shards of every run under the root: what skip-done reads."""
        return join(self.root, "runs", "*", "answers", "part-*.parquet")

    def answers_glob(self) -> str:
        return join(self.answers_dir, "part-*.parquet")

    def traces_glob(self) -> str:
        return join(self.traces_dir, "part-*.jsonl.gz")

    def failures_glob(self) -> str:
        return join(self.failures_dir, "part-*.jsonl")
