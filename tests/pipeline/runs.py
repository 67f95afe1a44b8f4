"""Running annotate in tests, and reading a run's outputs back."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow.parquet as pq

from beam_pipelines import annotate
from beam_pipelines.annotate import AnnotateResult
from beam_pipelines.outputs.readers import read_answers, read_failures

#: Economical settings: CI runs the whole suite on two shared cores.
FAST = ("--max_turns=4", "--max_in_flight=8", "--max_tokens=256", "--progress=off")


def annotate_run(
    input: str | Path, output: str | Path, endpoint: str, *extra: str
) -> AnnotateResult:
    """annotate on `endpoint` (`KIND:URL`, or a Triton server's bare gRPC address)."""
    return annotate.run(
        [f"--input={input}", f"--output={output}", f"--endpoint={endpoint}", *FAST, *extra]
    )


def all_answers(output: str | Path) -> list[dict[str, Any]]:
    """Every answer row under an output root, across runs, without deduplication."""
    rows: list[dict[str, Any]] = []
    for run in sorted(Path(output, "runs").iterdir()):
        for shard in sorted((run / "answers").glob("part-*.parquet")):
            rows += pq.read_table(shard).to_pylist()
    return rows


def run_rows(result: AnnotateResult) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The run's answer rows and failure rows."""
    layout = result.layout
    return read_answers(layout.answers_glob()), read_failures(layout.failures_glob())


def trace(uri: str) -> dict[str, Any]:
    shard, _, quoted = uri.partition("#")
    with gzip.open(shard, "rt") as f:
        for line in f:
            record = json.loads(line)
            if record["id"] == unquote(quoted):
                return record
    raise KeyError(uri)


def image_uris(record: dict[str, Any]) -> Sequence[str]:
    """Every image a trace refers to: message image parts and observation images."""
    uris = [
        part["image_url"]["url"]
        for message in record["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]
    for step in record["steps"]:
        if step.get("observation"):
            uris += [image["uri"] for image in step["observation"]["images"]]
    return uris
