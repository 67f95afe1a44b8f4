"""Bad input never crashes the run and is never dropped: every line ends in exactly one row."""

from __future__ import annotations

import io
import json
import re
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from beam_pipelines import annotate
from beam_pipelines.agent.records import MAX_IMAGES
from beam_pipelines.serve import TritonServer

from .helpers import png
from .runs import FAST, annotate_run, run_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OPTIONS = ["A", "B", "C", "D"]


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def bomb_png(side: int = 100_000) -> bytes:
    """A PNG header declaring side x side pixels, with (almost) no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def zoo() -> dict[str, tuple[bytes, str | None]]:
    """Image files -> (bytes, the failure class they must end in, or None when usable)."""
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    jpeg = encoded(noise, "JPEG", quality=90)
    frames = [Image.new("P", (40, 30), i) for i in (1, 2)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    deep = Image.fromarray((rng.integers(0, 65535, (30, 40))).astype(np.uint16))
    return {
        "empty.jpg": (b"", "image_empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "image_truncated"),
        "garbage.png": (b"not an image at all " * 20, "image_corrupt"),
        "bomb.png": (bomb_png(), "image_too_large"),
        "cmyk.jpg": (encoded(noise.convert("CMYK"), "JPEG"), None),
        "palette.png": (encoded(noise.convert("P"), "PNG"), None),
        "deep16.png": (encoded(deep, "PNG"), None),
        "animated.gif": (gif.getvalue(), None),
    }


def test_every_line_ends_in_one_row_with_its_error_class(
    tmp_path: Path, corpus: Path, triton
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    good = [json.loads(line) for line in corpus.read_text().splitlines()[:3]]
    lines: list[str] = [json.dumps(job) for job in good]
    expected: dict[str, str | None] = {job["id"]: None for job in good}

    for name, (data, error_class) in zoo().items():
        (images / name).write_bytes(data)
        job = {
            "id": f"zoo-{name}",
            "image": str(images / name),
            "question": "Which?",
            "options": OPTIONS,
            "answer": "A",
        }
        lines.append(json.dumps(job))
        expected[job["id"]] = error_class

    base = {"image": good[0]["image"], "question": "What?", "options": OPTIONS}
    awkward_ids = ["a/b/../../etc/passwd", "../..", "with space/and\\back"]
    for job_id in awkward_ids:
        lines.append(json.dumps({**base, "id": job_id}))
        expected[job_id] = None
    bad_lines = {
        "{this is not json": "invalid_json",
        "[1, 2, 3]": "invalid_json",
        json.dumps({"id": "no-question", "image": good[0]["image"]}): "missing_field",
        json.dumps({"id": "no-image", "question": "q"}): "missing_field",
        json.dumps({**base, "id": "huge", "question": "x" * (1 << 20)}): "question_too_long",
        json.dumps({**base, "id": "missing", "image": str(tmp_path / "nope.jpg")}): "image_missing",
        json.dumps({**base, "id": good[1]["id"]}): "duplicate_id",
    }
    lines += list(bad_lines)
    lines.insert(2, "")  # blank lines are not jobs
    lines.append("   ")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(lines) + "\n")

    result = annotate_run(jobs, tmp_path / "out", triton.grpc_url)
    answers, failures = run_rows(result)

    non_blank = [line for line in lines if line.strip()]
    assert len(answers) + len(failures) == len(non_blank)
    got_classes = sorted(f["error_class"] for f in failures if f["stage"] in ("read", "prepare"))
    want_classes = sorted([c for c in expected.values() if c] + list(bad_lines.values()))
    assert got_classes == want_classes
    # Each bad line keeps its input: the raw text when it was not a JSON object.
    raw_inputs = [f["input"] for f in failures if f["error_class"] == "invalid_json"]
    assert sorted(raw_inputs) == ["[1, 2, 3]", "{this is not json"]
    huge = next(f for f in failures if f["error_class"] == "question_too_long")
    assert len(huge["input"]["question"]) == 1 << 20
    # Every usable job reached the agent: an answer row, or at worst an agent-stage failure.
    reached = {r["id"] for r in answers} | {
        f["id"] for f in failures if f["stage"] not in ("read", "prepare")
    }
    usable = {job_id for job_id, c in expected.items() if c is None}
    assert usable <= reached
    duplicate = next(f for f in failures if f["error_class"] == "duplicate_id")
    assert duplicate["input"]["question"] == "What?"  # the later line is the duplicate


FORMATS = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def documented_error_classes() -> set[str]:
    """The classes the failure-row table of docs/formats.md lists (`| stage | error_class |`)."""
    text = FORMATS.read_text()
    section = text[text.index("### Failure rows") :]
    section = section[: section.index("\n### ", 1)]
    classes: set[str] = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 3 and re.fullmatch(r"`[a-z]+`", cells[1]):
            classes.update(re.findall(r"`([a-z0-9_]+)`", cells[2]))
    return classes


# -- one line never takes the run down, and never vanishes (issue #16) -----------------------

SCRIPTED_REPO = Path(__file__).resolve().parent / "scripted_repo"


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A real tritonserver with the scripted `agent_vlm`: it answers every job at once."""
    log = tmp_path_factory.mktemp("scripted") / "tritonserver.log"
    with TritonServer(SCRIPTED_REPO, log_file=log, startup_timeout_s=120) as server:
        yield server


def run_lines(tmp_path: Path, url: str, lines: list[bytes]) -> tuple[list[dict], list[dict]]:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_bytes(b"\n".join(lines) + b"\n")
    return run_rows(annotate_run(jobs, tmp_path / "out", url))


def image(tmp_path: Path) -> str:
    path = tmp_path / "image.png"
    path.write_bytes(png())
    return str(path)


def job(tmp_path: Path, job_id: str, **fields: object) -> bytes:
    line = {"id": job_id, "image": image(tmp_path), "question": "What?", **fields}
    return json.dumps(line).encode()


def test_an_image_uri_nothing_reads_is_its_lines_failure_row(
    tmp_path: Path, scripted: TritonServer
) -> None:
    """An ftp:// image used to raise out of PrepareImages and take the whole run down."""
    lines = [
        job(tmp_path, "fine"),
        job(tmp_path, "ftp", image="ftp://example.com/a.png"),
        job(tmp_path, "gopher", image="gopher://example.com/a.png"),
        job(tmp_path, "data", image="data:image/png;base64,iVBORw0KGgo="),
        job(tmp_path, "loopback", image="http://127.0.0.1:9/a.png"),
        job(tmp_path, "metadata", image="http://169.254.169.254/latest/meta-data"),
    ]
    answers, failures = run_lines(tmp_path, scripted.grpc_url, lines)
    assert [r["id"] for r in answers] == ["fine"]
    classes = {f["id"]: f["error_class"] for f in failures}
    assert classes == {
        "ftp": "unsupported_uri",
        "gopher": "unsupported_uri",
        "data": "unsupported_uri",
        "loopback": "image_blocked",
        "metadata": "image_blocked",
    }
    assert all(f["stage"] == "prepare" and f["input"]["image"] for f in failures)


def test_text_that_is_not_unicode_is_its_lines_failure_row(
    tmp_path: Path, scripted: TritonServer
) -> None:
    """A lone surrogate (valid JSON) in the id, the question or an extra field, and bytes that
    are not UTF-8, used to crash the run in a coder or a writer."""
    lines = [
        job(tmp_path, "fine"),
        job(tmp_path, "\ud800"),
        job(tmp_path, "question", question="What \udfff?"),
        job(tmp_path, "extra", source={"note": "\ud83d"}),
        b'{"id": "latin1", "question": "caf\xe9", "image": "x.png"}',
    ]
    answers, failures = run_lines(tmp_path, scripted.grpc_url, lines)
    assert [r["id"] for r in answers] == ["fine"]
    by_class = {f["error_class"]: f for f in failures}
    assert sorted(by_class) == ["invalid_id", "invalid_unicode", "invalid_utf8"]
    assert len(failures) == 4
    invalid_id = by_class["invalid_id"]
    assert invalid_id["input"]["id"] == "\ud800" and invalid_id["id"] is None
    unicode_ids = {f["id"] for f in failures if f["error_class"] == "invalid_unicode"}
    assert unicode_ids == {"question", "extra"}
    # The whole line is kept: its bytes come back from the escapes.
    assert by_class["invalid_utf8"]["input"].encode("utf-8", "surrogateescape") == lines[-1]


def test_bad_image_lists_are_their_lines_failure_rows(
    tmp_path: Path, scripted: TritonServer
) -> None:
    good = image(tmp_path)
    missing = str(tmp_path / "nope.png")

    def listed(job_id: str, images: object, **fields: object) -> bytes:
        return json.dumps({"id": job_id, "images": images, "question": "What?", **fields}).encode()

    lines = [
        listed("pair", [good, good]),
        listed("both", [good], image=good),
        listed("empty", []),
        listed("not-a-list", good),
        listed("number", [good, 7]),
        listed("blank", [good, " "]),
        listed("many", [good] * (MAX_IMAGES + 1)),
        listed("second-missing", [good, missing]),
    ]
    answers, failures = run_lines(tmp_path, scripted.grpc_url, lines)
    assert [r["id"] for r in answers] == ["pair"]
    classes = {f["id"]: (f["stage"], f["error_class"]) for f in failures}
    assert classes == {
        "both": ("read", "invalid_field"),
        "empty": ("read", "missing_field"),
        "not-a-list": ("read", "invalid_field"),
        "number": ("read", "invalid_field"),
        "blank": ("read", "missing_field"),
        "many": ("read", "too_many_images"),
        "second-missing": ("prepare", "image_missing"),
    }
    named = next(f for f in failures if f["id"] == "second-missing")
    assert named["message"].startswith(f"images[1] ({missing}): ")
    assert {c for _, c in classes.values()} <= documented_error_classes()


def test_an_id_spelling_another_lines_failure_key_hides_nothing(
    tmp_path: Path, scripted: TritonServer
) -> None:
    """Ten lines in, ten rows out: an id equal to the reader's old key for the failure row of
    line 2 made the join keep only the failure."""
    source = str(tmp_path / "jobs.jsonl")
    lines = [job(tmp_path, f"job-{i}") for i in range(8)]
    lines.insert(1, b"{not json")
    lines.append(job(tmp_path, f"\x00failure\x00{source}\x002"))
    answers, failures = run_lines(tmp_path, scripted.grpc_url, lines)
    assert len(answers) + len(failures) == len(lines) == 10
    assert sorted(f["error_class"] for f in failures) == ["invalid_id", "invalid_json"]


# -- fuzz: any line, any field, any URI, any id ----------------------------------------------

#: Text hypothesis does not make by itself: lone surrogates, controls, NUL, key look-alikes.
AWKWARD = st.sampled_from(
    ["\ud800", "\udfff", "a\x00b", "\x00failure\x00jobs.jsonl\x001", "\x1b[31m", "é/../x", "#1"]
)
TEXT = st.one_of(st.text(max_size=20), AWKWARD, st.text(max_size=3).map(lambda t: t * 200))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def uris(image: str) -> st.SearchStrategy[object]:
    """Every kind of image URI; none that would reach a network (loopback is refused)."""
    return (
        st.sampled_from(
            [
                image,
                f"file://{image}",
                image + ".missing",
                "ftp://example.com/a.png",
                "http://127.0.0.1:9/a.png",
                "https://169.254.169.254/latest",
                "data:image/png;base64,AAAA",
                "C:\\images\\a.png",
                "",
            ]
        )
        | JSON
    )


def lines(image: str) -> st.SearchStrategy[bytes]:
    ids = st.sampled_from(["a", "b", "a/b"]) | JSON  # repeated ids, and anything else
    optional = {"id": ids, "options": JSON, "answer": JSON, "meta": JSON, "extra": JSON}
    job = st.fixed_dictionaries({"image": uris(image), "question": TEXT | JSON}, optional=optional)
    # Multi-image jobs: lists of any URIs (empty, too long, holding anything), sometimes with an
    # `image` beside them.
    image_lists = st.lists(uris(image), max_size=3) | st.lists(
        st.just(image), min_size=MAX_IMAGES, max_size=MAX_IMAGES + 1
    )
    listed = st.fixed_dictionaries(
        {"images": image_lists | JSON, "question": TEXT | JSON},
        optional={**optional, "image": uris(image)},
    )
    as_json = (job | listed | JSON).map(lambda value: json.dumps(value).encode())
    raw = st.binary(max_size=60).map(lambda data: data.replace(b"\n", b" "))
    return st.one_of(as_json, as_json, raw)


def non_blank(data: bytes) -> int:
    """Records as the reader counts them: lines whose text is not blank."""
    return sum(1 for line in data.split(b"\n") if line.decode("utf-8", "surrogateescape").strip())


def run_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_lines_end_in_one_row_each_and_a_rerun_changes_nothing_answered(
    tmp_path: Path, scripted: TritonServer, data: st.DataObject
) -> None:
    case = Path(tempfile.mkdtemp(dir=tmp_path))
    picked = data.draw(st.lists(lines(image(case)), min_size=1, max_size=12))
    jobs = case / "jobs.jsonl"
    jobs.write_bytes(b"\n".join(picked) + b"\n")
    expected = non_blank(jobs.read_bytes())

    first = annotate_run(jobs, case / "out", scripted.grpc_url, "--tools=", "--run_id=first")
    assert "DONE" in first.state.upper()  # the command's exit code 0
    answers, failures = run_rows(first)
    assert len(answers) + len(failures) == expected
    assert {f["error_class"] for f in failures} <= documented_error_classes()
    answered = [row["id"] for row in answers]
    assert len(answered) == len(set(answered))
    before = run_files(case / "out" / "runs")

    second = annotate_run(jobs, case / "out", scripted.grpc_url, "--tools=", "--run_id=second")
    assert "DONE" in second.state.upper()
    again, failed_again = run_rows(second)
    assert second.summary.skipped + len(again) + len(failed_again) == expected
    assert not {row["id"] for row in again} & set(answered)  # nothing answered is redone
    after = run_files(case / "out" / "runs")
    assert {k: v for k, v in after.items() if k in before} == before  # nor rewritten


def test_an_output_root_that_cannot_be_written_stops_the_run_with_a_message(
    tmp_path: Path, scripted: TritonServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not about one line: the run stops before anything is written, and says why."""
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_bytes(job(tmp_path, "fine") + b"\n")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    argv = [f"--input={jobs}", f"--output={blocked / 'out'}", f"--endpoint={scripted.grpc_url}"]
    assert annotate.main([*argv, *FAST]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "a-file" in error and "Traceback" not in error
    assert blocked.read_text() == "not a folder"
