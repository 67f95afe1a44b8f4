"""Records: job validation, lossless round trips, the answer-row schema, safe keys."""

import hashlib
import json
import re

import pyarrow as pa
import pytest

from beam_pipelines.agent.images import ImageTruncatedError
from beam_pipelines.agent.records import (
    MAX_IMAGES,
    STATUSES,
    Failure,
    Final,
    ImageRef,
    InputError,
    Job,
    Observation,
    Step,
    ToolCall,
    ToolSpec,
    Trajectory,
    Usage,
    answer_row,
    answer_schema,
    job_content_id,
    parse_choice,
    safe_key,
)

REF = ImageRef("gs://b/images/ab.png", "ab" * 32, 640, 480)
VIEW = ImageRef("gs://b/images/cd.png", "cd" * 32, 128, 96)
VSTAR = {
    "id": "vstar-0042",
    "image": "gs://bucket/img/0042.jpg",
    "question": "What is the color of the cup?",
    "options": ["white", "red", "blue", "black"],
    "answer": "A",
    "meta": {"source": "vstar"},
}


def roundtrip(record):
    return type(record).from_dict(json.loads(json.dumps(record.to_dict())))


# -- Job ------------------------------------------------------------------------------------


def test_design_example_job() -> None:
    job = Job.from_dict(VSTAR)
    assert job == Job(
        id="vstar-0042",
        image="gs://bucket/img/0042.jpg",
        question="What is the color of the cup?",
        options=("white", "red", "blue", "black"),
        answer="A",
        meta={"source": "vstar"},
    )
    assert Job.from_dict(job.to_dict()) == job == roundtrip(job)
    assert Job.from_json(json.dumps(VSTAR)) == job


def test_r1v4_api_format_gets_a_stable_content_id() -> None:
    job = Job.from_json('{"image": "/data/a.jpg", "question": "What is this?"}')
    assert job.id == job_content_id("/data/a.jpg", "What is this?")
    assert job.id == Job.from_dict({"question": "What is this?", "image": "/data/a.jpg"}).id
    assert job.id != Job.from_dict({"image": "/data/a.jpg", "question": "What is that?"}).id
    assert job.id != Job.from_dict({"image": "/data/b.jpg", "question": "What is this?"}).id
    assert job.options == () and job.answer is None and job.meta == {}


def test_extra_keys_are_kept_in_meta() -> None:
    job = Job.from_dict({**VSTAR, "category": "attribute", "meta": {"source": "vstar"}})
    assert job.meta == {"source": "vstar", "category": "attribute"}


def test_answer_forms() -> None:
    assert Job.from_dict({**VSTAR, "answer": "c"}).answer == "C"
    assert Job.from_dict({**VSTAR, "answer": "blue"}).answer == "C"  # the option's text
    assert Job.from_dict({**VSTAR, "answer": ""}).answer is None
    free = {"image": "a", "question": "Which year?", "answer": "1999"}
    assert Job.from_dict(free).answer == "1999"
    assert Job.from_dict({**VSTAR, "options": []}).options == ()
    assert Job.from_dict({**VSTAR, "id": 42}).id == "42"


@pytest.mark.parametrize(
    ("change", "error_class", "fragment"),
    [
        ({"image": None}, "missing_field", "image"),
        ({"question": "  "}, "missing_field", "question"),
        ({"image": 3}, "invalid_field", "image must be a string"),
        ({"question": ["a"]}, "invalid_field", "question must be a string"),
        ({"id": ""}, "invalid_field", "id is empty"),
        ({"id": True}, "invalid_field", "id must be a string"),
        ({"id": {"a": 1}}, "invalid_field", "id must be a string"),
        ({"options": "A,B"}, "invalid_field", "options must be an array"),
        ({"options": ["only"]}, "invalid_field", "2 to 26"),
        ({"options": [str(i) for i in range(27)]}, "invalid_field", "2 to 26"),
        ({"options": ["a", 2]}, "invalid_field", "option 1"),
        ({"options": ["a", " "]}, "invalid_field", "option 1"),
        ({"answer": "E"}, "invalid_field", "A-D"),
        ({"answer": 1}, "invalid_field", "answer must be a string"),
        ({"meta": [1]}, "invalid_field", "meta must be an object"),
        ({"question": "x" * 1_000_000}, "question_too_long", "1000000 bytes"),
    ],
)
def test_invalid_jobs(change: dict, error_class: str, fragment: str) -> None:
    with pytest.raises(InputError) as e:
        Job.from_dict({**VSTAR, **change})
    assert e.value.error_class == error_class
    assert fragment in str(e.value)


def test_missing_keys_and_non_objects() -> None:
    with pytest.raises(InputError) as e:
        Job.from_dict({"question": "q"})
    assert e.value.error_class == "missing_field"
    for line in ["{not json", "", '"just a string"', "[1, 2]", "null"]:
        with pytest.raises(InputError) as e:
            Job.from_json(line)
        assert e.value.error_class == "invalid_json", line


# -- multi-image jobs -------------------------------------------------------------------------

PAIR = {"images": ["gs://b/before.jpg", "gs://b/after.jpg"], "question": "What changed?"}


def test_a_job_may_list_its_images() -> None:
    job = Job.from_dict({**PAIR, "id": "pair"})
    assert job.image == "gs://b/before.jpg" and job.images == tuple(PAIR["images"])
    assert job.uris == job.images
    assert job.to_dict() == {
        "id": "pair", "images": PAIR["images"], "question": "What changed?",
        "options": [], "answer": None, "meta": {},
    }  # fmt: skip
    assert Job.from_dict(job.to_dict()) == job == roundtrip(job) == Job.from_record(job.to_dict())
    single = Job.from_dict(VSTAR)
    assert single.images == () and single.uris == (single.image,)
    assert "images" not in single.to_dict()
    # A Parquet file that mixes both forms has both columns, one of them null.
    assert Job.from_dict({**PAIR, "image": None}).images == job.images
    assert Job.from_dict({**VSTAR, "images": None}) == single
    with pytest.raises(ValueError, match=r"images\[0\]"):
        Job(id="x", image="a", question="q", images=("b", "a"))


def test_content_ids_of_single_and_listed_images() -> None:
    # The single-image id is the hash it always was: existing runs keep their ids.
    payload = json.dumps(["/data/a.jpg", "What is this?"]).encode()
    legacy = "h-" + hashlib.sha256(payload).hexdigest()[:24]
    assert Job.from_dict({"image": "/data/a.jpg", "question": "What is this?"}).id == legacy
    listed = Job.from_dict({"images": ["/data/a.jpg"], "question": "What is this?"})
    assert listed.id == job_content_id(["/data/a.jpg"], "What is this?") != legacy
    pair = Job.from_dict(PAIR)
    assert pair.id == Job.from_dict(dict(PAIR)).id  # stable
    swapped = {**PAIR, "images": PAIR["images"][::-1]}
    assert Job.from_dict(swapped).id != pair.id  # the order is part of the job


@pytest.mark.parametrize(
    ("images", "error_class", "fragment"),
    [
        ([], "missing_field", "'images' is empty"),
        (["a", ""], "missing_field", "images[1] is empty"),
        (["a", 3], "invalid_field", "images[1] must be a string, got int"),
        (["a", {"uri": "b"}], "invalid_field", "images[1] must be a string, got an object"),
        ("a.png", "invalid_field", "images must be an array of URIs"),
        (["a"] * (MAX_IMAGES + 1), "too_many_images", f"the limit is {MAX_IMAGES}"),
    ],
)
def test_invalid_image_lists(images: object, error_class: str, fragment: str) -> None:
    with pytest.raises(InputError) as e:
        Job.from_dict({"id": "x", "question": "q", "images": images})
    assert e.value.error_class == error_class
    assert fragment in str(e.value)


def test_a_job_has_image_or_images_not_both() -> None:
    with pytest.raises(InputError) as e:
        Job.from_dict({**PAIR, "image": "gs://b/before.jpg"})
    assert e.value.error_class == "invalid_field"
    assert "either image or images" in str(e.value)
    assert len(Job.from_dict({**PAIR, "images": ["a"] * MAX_IMAGES}).uris) == MAX_IMAGES


def test_question_limit_is_configurable_and_counts_bytes() -> None:
    job = {"image": "a", "question": "é" * 600}  # 1200 bytes
    assert Job.from_dict(job, max_question_bytes=1200).question == "é" * 600
    with pytest.raises(InputError, match="1200 bytes"):
        Job.from_dict(job, max_question_bytes=1199)


# -- round trips ----------------------------------------------------------------------------


def trajectory(status: str = "answered", **changes) -> Trajectory:
    job = Job.from_dict(VSTAR)
    call = ToolCall("code", {"code": "save_image(image.crop((0, 0, 10, 10)))"})
    steps = (
        Step("crop", call, Observation("ok", (REF,), None, "code"), 1.5, 40),
        Step("", None, Observation("", (), "bad json", "format"), 0.5, 10, "bad json"),
        Step("again", call, None, 0.7, 12, "not run"),
    )
    fields = {
        "job": job,
        "protocol": "r1v4",
        "model": "tiny",
        "sampling": {"temperature": 0.2, "stop": ["</tool_call>", "</answer>"]},
        "original": REF,
        "view": VIEW,
        "messages": (
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "q"}]},
            {"role": "assistant", "content": "<think>a</think><answer>A</answer>"},
        ),
        "steps": steps,
        "final": Final("the cup is white", "A") if status == "answered" else None,
        "usage": Usage(100, 62),
        "status": status,
        "format_errors": 1,
        "error_class": None if status in ("answered", "running") else status,
        "error": None if status in ("answered", "running") else "stopped",
        "started_at": "2025-01-01T00:00:00+00:00",
        "finished_at": None if status == "running" else "2025-01-01T00:00:02.500000+00:00",
        "protocol_options": {"coordinates": "relative"},
        "tools": (ToolSpec("code", "Run Python.", {"type": "object"}),),
        "max_turns": 8,
        "max_format_errors": 2,
    }
    fields.update(changes)
    return Trajectory(**fields)


@pytest.mark.parametrize("status", STATUSES)
def test_trajectory_roundtrip(status: str) -> None:
    traj = trajectory(status)
    assert roundtrip(traj) == traj


def test_small_records_roundtrip() -> None:
    records = [
        REF,
        ToolCall("text_search", {"queries": ["a", "ü"]}),
        ToolSpec("code", "d", {"type": "object"}),
        Observation("t", (REF, VIEW), "e", "code"),
        Step("t", None, None, 0.0, 0),
        Final("t", "B"),
        Usage(1, 2),
        Failure({"id": "x"}, "read", "invalid_field", "bad", 1, None, "x"),
        Failure("{not json", "read", "invalid_json", "bad"),
        Failure({"id": "y"}, "generate", "format", "bad", 3, "gs://t/x.json.gz", "y"),
    ]
    for record in records:
        assert roundtrip(record) == record


def test_a_multi_image_trajectory_records_every_image() -> None:
    job = Job.from_dict({**PAIR, "id": "pair"})
    second = ImageRef("gs://b/after.jpg", "ef" * 32, 320, 240)
    second_view = ImageRef("gs://b/images/12.png", "12" * 32, 128, 96)
    traj = trajectory(job=job, more_originals=(second,), more_views=(second_view,))
    assert traj.originals == (REF, second) and traj.views == (VIEW, second_view)
    trace = traj.to_dict()
    assert trace["originals"] == [REF.to_dict(), second.to_dict()]
    assert trace["views"] == [VIEW.to_dict(), second_view.to_dict()]
    assert trace["original"] == REF.to_dict() and trace["job"]["images"] == PAIR["images"]
    assert roundtrip(traj) == traj
    # A single-image trace has the keys it always had.
    assert not {"originals", "views"} & set(trajectory().to_dict())
    assert "images" not in trajectory().to_dict()["job"]
    with pytest.raises(ValueError, match="one view per original"):
        trajectory(more_originals=(second,))


def test_trace_field_order_starts_with_the_design_fields() -> None:
    keys = list(trajectory().to_dict())
    assert keys[:11] == [
        "id", "model", "protocol", "sampling", "status", "messages",
        "steps", "final", "usage", "started_at", "finished_at",
    ]  # fmt: skip


def test_failure_from_errors_keeps_the_class() -> None:
    failure = Failure.from_error({"x": 1}, "read", InputError("missing_field", "no image"))
    assert (failure.error_class, failure.message) == ("missing_field", "no image")
    failure = Failure.from_error("raw", "prepare", ImageTruncatedError("cut"), attempts=2)
    assert failure.error_class == "image_truncated" and failure.attempts == 2
    assert Failure.from_error({}, "tools", TimeoutError("slow")).error_class == "TimeoutError"


# -- answer rows ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", STATUSES)
def test_answer_schema_accepts_every_status(status: str) -> None:
    row = answer_row(trajectory(status), "gs://out/traces/part-0.jsonl.gz")
    table = pa.Table.from_pylist([row], schema=answer_schema())
    assert table.num_rows == 1
    assert table.column("status")[0].as_py() == status
    assert list(row) == answer_schema().names


def test_answer_row_values() -> None:
    row = answer_row(trajectory(), "t.json")
    assert row["answer"] == "A" and row["choice"] == "A" and row["correct"] is True
    assert row["turns"] == 1 and row["tool_calls"] == 1  # the un-run call does not count
    assert (row["prompt_tokens"], row["completion_tokens"]) == (100, 62)
    assert row["latency_s"] == pytest.approx(2.5)
    assert row["trace_uri"] == "t.json" and row["error"] is None


def test_answer_row_without_ground_truth_or_options() -> None:
    job = Job.from_dict({"image": "a", "question": "Year?"})
    row = answer_row(trajectory(job=job, final=Final("", "1999")), None)
    assert row["choice"] is None and row["correct"] is None
    job = Job.from_dict({"image": "a", "question": "Year?", "answer": "1999."})
    assert answer_row(trajectory(job=job, final=Final("", " 1999 ")), None)["correct"] is True
    wrong = answer_row(trajectory(job=Job.from_dict({**VSTAR, "answer": "B"})), None)
    assert wrong["correct"] is False
    failed = answer_row(trajectory("failed"), None)
    assert failed["answer"] is None and failed["correct"] is False


@pytest.mark.parametrize(
    ("answer", "choice"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B. red", "B"),
        ("b", "B"),
        ("a red one", None),
        ("  C\n", "C"),
        ("red", "B"),
        ("Red.", "B"),
        ("The answer is D", "D"),
        ("Option (C)", "C"),
        ("\\boxed{A}", "A"),
        ("E", None),
        ("I don't know", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_choice(answer: str | None, choice: str | None) -> None:
    assert parse_choice(answer, ("white", "red", "blue", "black")) == choice


# -- safe keys ------------------------------------------------------------------------------

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@pytest.mark.parametrize(
    "job_id",
    [
        "vstar-0042",
        "a/b",
        "a b",
        "a_b",
        "..",
        ".",
        "../../etc/passwd",
        "/abs/path",
        "   ",
        "",
        "猫の写真 🐱",
        "Ünïcödé",
        "x" * 500,
        "a\x00b\nc",
        "CON",
        "-rf",
    ],
)
def test_safe_key_is_safe(job_id: str) -> None:
    key = safe_key(job_id)
    assert _SAFE.match(key), key
    assert ".." not in key and "/" not in key
    assert len(key) <= 64 + 1 + 16
    assert safe_key(job_id) == key  # stable


def test_safe_keys_are_unique_and_readable() -> None:
    ids = ["a/b", "a b", "a_b", "a-b", "a//b", "A/B", "..", ".", "", "x" * 500, "x" * 499]
    keys = [safe_key(i) for i in ids]
    assert len(set(keys)) == len(ids)
    assert safe_key("vstar-0042").startswith("vstar-0042-")
    assert safe_key("Ünïcödé").startswith("Unicode-")
    # Pinned: object names written by earlier runs must still be found by later ones.
    digest = hashlib.sha256(b"vstar-0042").hexdigest()[:16]
    assert safe_key("vstar-0042") == f"vstar-0042-{digest}"
