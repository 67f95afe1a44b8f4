"""Skip-done and duplicate ids, decided per key after the join."""

import json

from beam_pipelines.agent.records import Failure, Job
from beam_pipelines.io.readers import Candidate, failure_key, parse_record
from beam_pipelines.io.resume import select_jobs


def candidate(source: str, position: int, job_id: str = "a") -> Candidate:
    job = Job(id=job_id, image="i.png", question=f"q{source}{position}")
    return Candidate(source=source, position=position, job=job, raw=job.to_dict())


def test_first_line_wins_and_the_others_are_duplicates() -> None:
    lines = [candidate("b.jsonl", 1), candidate("a.jsonl", 9), candidate("a.jsonl", 2)]
    job, failures, skipped = select_jobs(lines, done=False)
    assert job is not None and job.question == "qa.jsonl2"
    assert [f.error_class for f in failures] == ["duplicate_id", "duplicate_id"]
    assert {f.input["question"] for f in failures} == {"qb.jsonl1", "qa.jsonl9"}
    assert skipped == 0


def test_done_ids_are_skipped_with_all_their_lines() -> None:
    job, failures, skipped = select_jobs([candidate("a", 1), candidate("a", 2)], done=True)
    assert job is None and failures == [] and skipped == 2


def test_read_failures_pass_through() -> None:
    failure = Failure(input="{x", stage="read", error_class="invalid_json", message="m")
    assert select_jobs([failure], done=False) == (None, [failure], 0)


def test_every_element_of_a_key_ends_in_a_row_or_a_skip() -> None:
    failure = Failure(input="{x", stage="read", error_class="invalid_json", message="m")
    job, failures, skipped = select_jobs([failure, candidate("a", 1)], done=False)
    assert job is not None and failures == [failure] and skipped == 0
    assert select_jobs([failure, candidate("a", 1)], done=True) == (None, [failure], 1)


def test_an_id_spelling_a_failure_key_is_an_input_error_and_keys_cannot_meet() -> None:
    """An id equal to what the reader used to key a failure row by made the join keep only
    the failure: the line vanished. Ids cannot hold NUL, and failure keys are not strings."""
    key = failure_key("jobs.jsonl", 2)
    assert not isinstance(key, str)
    parsed = parse_record("jobs.jsonl", 1, json.dumps({"id": "\x00failure\x00jobs.jsonl\x002"}))
    assert isinstance(parsed, Failure) and parsed.error_class == "invalid_id"
