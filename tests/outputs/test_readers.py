"""Reading outputs back: answers (one per id), failures, text shards, answered ids, runs."""

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.agent.records import answer_schema
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.outputs.readers import (
    iter_lines,
    list_runs,
    read_answered_ids,
    read_answers,
    read_failures,
    resolve_run,
)


def answer(job_id: str, **kw: Any) -> dict[str, Any]:
    base = {
        "id": job_id,
        "status": "answered",
        "turns": 1,
        "tool_calls": 0,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "model": "m",
        "protocol": "r1v4",
    }
    return {**base, **kw}


def write_answers(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=answer_schema()), buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def test_answered_ids_are_read_from_the_id_column(tmp_path: Path) -> None:
    path = tmp_path / "part-1.parquet"
    write_answers(path, [answer("a/b"), answer("../c")])
    assert read_answered_ids(str(path)) == ["a/b", "../c"]


def test_answers_are_one_per_id_across_shards_and_a_damaged_shard_is_skipped(
    tmp_path: Path,
) -> None:
    layout = OutputLayout(str(tmp_path), "r")
    answers = Path(layout.answers_dir)
    write_answers(answers / "part-1.parquet", [answer("a", turns=1), answer("b")])
    write_answers(answers / "part-2.parquet", [answer("a", turns=2)])
    (answers / "part-3.parquet").write_bytes(b"not parquet")
    rows = read_answers(layout.answers_glob())
    assert sorted(r["id"] for r in rows) == ["a", "b"]
    assert next(r for r in rows if r["id"] == "a")["turns"] == 1  # the first read wins


def test_failure_rows_skip_lines_that_are_not_objects(tmp_path: Path) -> None:
    layout = OutputLayout(str(tmp_path), "r")
    shard = Path(layout.failures_dir) / "part-1.jsonl"
    shard.parent.mkdir(parents=True)
    shard.write_text('{"id": "a", "error_class": "x"}\n\nnot json\n[1]\n{"id": "b"}\n')
    assert [f["id"] for f in read_failures(layout.failures_glob())] == ["a", "b"]
    assert read_failures(OutputLayout(str(tmp_path), "none").failures_glob()) == []


def test_text_shards_are_read_line_by_line_compressed_or_not(tmp_path: Path) -> None:
    (tmp_path / "part-1.jsonl").write_text('{"a": 1}\n\n')
    (tmp_path / "part-2.jsonl.gz").write_bytes(gzip.compress(b'{"b": 2}\n{"c": 3}\n'))
    lines = list(iter_lines(str(tmp_path / "part-*")))
    assert [json.loads(line) for line in lines] == [{"a": 1}, {"b": 2}, {"c": 3}]


def test_runs_are_listed_oldest_first_and_resolved(tmp_path: Path) -> None:
    for run_id in ("20260102T000000Z-b", "20260101T000000Z-a"):
        manifest = Path(OutputLayout(str(tmp_path), run_id).manifest)
        manifest.parent.mkdir(parents=True)
        manifest.write_text("{}")
    assert list_runs(str(tmp_path)) == ["20260101T000000Z-a", "20260102T000000Z-b"]
    assert resolve_run(str(tmp_path), None).run_id == "20260102T000000Z-b"
    with pytest.raises(FileNotFoundError):
        resolve_run(str(tmp_path), "missing")
