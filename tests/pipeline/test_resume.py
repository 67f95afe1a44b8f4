"""Skip-done and duplicate ids, decided per key after the join."""

from beam_pipelines.agent.records import Failure, Job
from beam_pipelines.io.readers import Candidate
from beam_pipelines.io.resume import select_jobs


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
