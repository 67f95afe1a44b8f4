"""Readers: input expansion, every record kind, and a failure row for every bad line."""

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.agent.records import Failure
from beam_pipelines.io.readers import (
    Candidate,
    InputFile,
    ReadRecords,
    expand_input,
    failure_key,
    iter_records,
    parse_record,
)

JOB = {"id": "a", "image": "img.png", "question": "What?", "options": ["x", "y"], "answer": "B"}


def test_jsonl_skips_blank_lines_and_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(json.dumps(JOB) + "\n\n   \n" + "{not json\n")
    records = list(iter_records(InputFile(str(path), "jsonl"), None))
    assert [p for p, _ in records] == [1, 4]
    assert records[1][1] == "{not json"


def test_compressed_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(JOB) + "\n").encode()))
    assert expand_input(str(path), images=False) == [InputFile(str(path), "jsonl")]
    assert len(list(iter_records(InputFile(str(path), "jsonl"), None))) == 1


def test_parquet_rows(tmp_path: Path) -> None:
    path = tmp_path / "jobs.parquet"
    pq.write_table(pa.Table.from_pylist([JOB, {**JOB, "id": "b"}]), path)
    records = list(iter_records(InputFile(str(path), "parquet"), None))
    assert [(p, r["id"]) for p, r in records] == [(1, "a"), (2, "b")]
    assert isinstance(parse_record(str(path), 1, records[0][1]), Candidate)


def test_folder_glob_and_file_expansion(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_text("{}\n")
    (tmp_path / "a.parquet").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not input")
    (tmp_path / "sub").mkdir()
    kinds = [(Path(f.path).name, f.kind) for f in expand_input(str(tmp_path), images=False)]
    assert kinds == [("a.parquet", "parquet"), ("b.jsonl", "jsonl")]
    assert len(expand_input(str(tmp_path / "*.jsonl"), images=False)) == 1
    assert len(expand_input(f"file://{tmp_path}/b.jsonl", images=False)) == 1


def test_image_folder_makes_one_job_per_image(tmp_path: Path) -> None:
    for name in ("x.jpg", "y.png"):
        (tmp_path / name).write_bytes(b"...")
    files = expand_input(str(tmp_path), images=True)
    assert [f.kind for f in files] == ["image", "image"]
    ((_, raw),) = iter_records(files[0], "Describe the image.")
    parsed = parse_record(files[0].path, 1, raw)
    assert isinstance(parsed, Candidate)
    assert parsed.job.question == "Describe the image." and parsed.job.id.startswith("h-")


def test_nothing_to_read_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        expand_input(str(tmp_path / "missing.jsonl"), images=False)
    with pytest.raises(FileNotFoundError):
        expand_input(str(tmp_path), images=False)


@pytest.mark.parametrize(
    ("raw", "error_class"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        (json.dumps({"id": "x", "image": "i.png"}), "missing_field"),
        (json.dumps({"id": "x", "question": "q"}), "missing_field"),
        (json.dumps({**JOB, "options": "x"}), "invalid_field"),
        (json.dumps({**JOB, "question": "q" * (1 << 20)}), "question_too_long"),
    ],
)
def test_bad_records_become_failures_that_keep_the_input(raw: str, error_class: str) -> None:
    parsed = parse_record("f.jsonl", 3, raw)
    assert isinstance(parsed, Failure)
    assert parsed.error_class == error_class and parsed.stage == "read"
    if error_class == "invalid_json":  # not a JSON object: the raw line itself
        assert parsed.input == raw
    else:
        assert parsed.input == json.loads(raw)


def test_failure_keys_never_collide_with_ids() -> None:
    assert failure_key("f", 1) != failure_key("f", 2) != failure_key("g", 1)
    assert not isinstance(failure_key("f", 1), str)  # ids are strings


def test_a_file_that_cannot_be_read_is_one_failure_row_and_the_others_stand(
    tmp_path: Path,
) -> None:
    good = tmp_path / "a.jsonl"
    good.write_text(json.dumps(JOB) + "\n")
    cut = tmp_path / "b.jsonl.gz"  # a damaged stream: zlib.error, which used to end the run
    cut.write_bytes(gzip.compress(b"x" * 5000)[:20] + b"\xff" * 40)
    footer = tmp_path / "c.parquet"
    footer.write_bytes(b"PAR1 not really parquet PAR1")
    files = [InputFile(str(good), "jsonl"), InputFile(str(cut), "jsonl")]
    files.append(InputFile(str(footer), "parquet"))
    out = list(ReadRecords(prompt=None, limit=None).process(files))
    assert [k for k, v in out if isinstance(v, Candidate)] == ["a"]
    failures = {v.input["source"]: v for _, v in out if isinstance(v, Failure)}
    assert set(failures) == {str(cut), str(footer)}
    assert {f.error_class for f in failures.values()} == {"unreadable_input"}
