"""Skip-done and duplicate ids, decided per key after the join."""

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from beam_pipelines.agent.records import Failure, Job, answer_schema
from beam_pipelines.io.readers import Candidate
from beam_pipelines.io.resume import read_answered_ids, select_jobs


def candidate(source: str, position: int, job_id: str = "a") -> Candidate:
    job = Job(id=job_id, image="i.png", question=f"q{source}{position}")
    return Candidate(source=source, position=position, job=job, raw=job.to_dict())


def test_first_line_wins_and_the_others_are_duplicates() -> None:
    lines = [candidate("b.jsonl", 1), candidate("a.jsonl", 9), candidate("a.jsonl", 2)]
    job, failures, skipped = select_jobs("a", lines, done=False)
    assert job is not None and job.question == "qa.jsonl2"
    assert [f.error_class for f in failures] == ["duplicate_id", "duplicate_id"]
    assert {f.input["question"] for f in failures} == {"qb.jsonl1", "qa.jsonl9"}
    assert skipped == 0


def test_done_ids_are_skipped_with_all_their_lines() -> None:
    job, failures, skipped = select_jobs("a", [candidate("a", 1), candidate("a", 2)], done=True)
    assert job is None and failures == [] and skipped == 2


def test_read_failures_pass_through() -> None:
    failure = Failure(input="{x", stage="read", error_class="invalid_json", message="m")
    assert select_jobs("\x00failure", [failure], done=False) == (None, [failure], 0)


def test_answered_ids_are_read_from_the_id_column(tmp_path: Path) -> None:
    rows = [
        {
            "id": i,
            "status": "answered",
            "turns": 1,
            "tool_calls": 0,
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "model": "m",
            "protocol": "r1v4",
        }
        for i in ("a/b", "../c")
    ]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=answer_schema()), buffer)
    path = tmp_path / "part-1.parquet"
    path.write_bytes(buffer.getvalue())
    assert read_answered_ids(str(path)) == ["a/b", "../c"]
