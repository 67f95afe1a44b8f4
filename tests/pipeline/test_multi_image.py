"""Multi-image jobs (`images: [...]`) through every stage: prepare, the model's first turn, the
tools (by index), the trace, replay, the report and the SFT export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from PIL import Image

from beam_pipelines import annotate
from beam_pipelines.agent import loop
from beam_pipelines.agent.records import FailedJob, Job
from beam_pipelines.filters.replay import ToolReplay
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.report import build_report
from beam_pipelines.report.pages import page_name
from beam_pipelines.sft_export import sft_record
from beam_pipelines.transforms.execute_tools import ToolRuntime, run_turn
from beam_pipelines.transforms.images import ImageStore
from beam_pipelines.transforms.prepare import JobImageError, start_trajectory
from tools.registry import tool_specs
from tools.zoom import ZoomTool

from .helpers import USAGE, png
from .runs import FAST, annotate_run, run_rows, trace

RED, BLUE, GREEN = (200, 30, 30), (20, 40, 220), (30, 180, 60)


def images(tmp_path: Path) -> list[str]:
    """Three job images of different colours and sizes."""
    paths = []
    for name, size, colour in [("red", (64, 48), RED), ("blue", (40, 30), BLUE)]:
        path = tmp_path / f"{name}.png"
        path.write_bytes(png(*size, colour))
        paths.append(str(path))
    green = tmp_path / "green.jpg"
    Image.new("RGB", (300, 200), GREEN).save(green, "JPEG", quality=95)
    return [*paths, str(green)]


def store(tmp_path: Path) -> ImageStore:
    return ImageStore(OutputLayout(str(tmp_path / "out"), "r"), max_pixels=32 * 32)


def test_prepare_stores_a_view_of_every_image_in_order(tmp_path: Path) -> None:
    uris = images(tmp_path)
    job = Job.from_dict({"id": "three", "images": uris, "question": "Which is green?"})
    traj = start_trajectory(job, store(tmp_path), "r1v4", [], "m", {}, 4)
    assert [ref.uri for ref in traj.originals] == uris
    assert [(ref.width, ref.height) for ref in traj.originals] == [(64, 48), (40, 30), (300, 200)]
    for original, view in zip(traj.originals, traj.views, strict=True):
        assert view.uri.endswith(f"{view.sha256}.png") and view.width * view.height <= 32 * 32
        assert Image.open(view.uri).getpixel((0, 0)) == Image.open(original.uri).getpixel((0, 0))
    parts = traj.messages[1]["content"]
    assert [p["image_url"]["url"] for p in parts[:3]] == [v.uri for v in traj.views]
    assert parts[3] == {"type": "text", "text": "Which is green?"}


def test_one_bad_image_fails_the_job_and_names_it(tmp_path: Path) -> None:
    uris = images(tmp_path)
    missing = str(tmp_path / "nope.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    cases = [(missing, 1, "image_missing"), (str(broken), 2, "image_corrupt")]
    for bad, index, error_class in cases:
        listed = [*uris[:index], bad, *uris[index:]]
        job = Job.from_dict({"id": "x", "images": listed, "question": "q"})
        with pytest.raises(JobImageError) as e:
            start_trajectory(job, store(tmp_path), "r1v4", [], "m", {}, 4)
        assert (e.value.index, e.value.uri, e.value.error_class) == (index, bad, error_class)
        assert str(e.value).startswith(f"images[{index}] ({bad}): ")


def zoom_call(traj, arguments: dict) -> object:
    body = json.dumps({"name": "image_zoom_in_tool", "arguments": arguments})
    out, calls = loop.advance(
        traj,
        f"<think>zoom</think><tool_call>{body}</tool_call>",
        finish_reason="stop",
        usage=USAGE,
        latency_s=0.0,
    )
    assert calls, out.steps
    return out


def test_zoom_works_on_the_image_its_index_names(tmp_path: Path) -> None:
    uris = images(tmp_path)
    job = Job.from_dict({"id": "z", "images": uris, "question": "q"})
    absolute = {"image_zoom_in_tool": {"coordinates": "absolute"}}
    specs = tool_specs(["image_zoom_in_tool"], **absolute)
    traj = start_trajectory(job, store(tmp_path), "zoom", specs, "m", {}, 8)
    runtime = ToolRuntime(["image_zoom_in_tool"], workers=1, settings=absolute)
    tool = ZoomTool(coordinates="absolute")
    for index, colour in [(2, GREEN), (1, BLUE), (None, RED)]:
        arguments: dict = {"bbox_2d": [0, 0, 10, 10]}
        if index is not None:
            arguments["image_index"] = index
        traj = run_turn(zoom_call(traj, arguments), runtime, store(tmp_path), 30).outcome
        assert not isinstance(traj, FailedJob), traj
        (crop,) = traj.steps[-1].observation.images
        pixel = Image.open(crop.uri).getpixel((crop.width // 2, crop.height // 2))
        assert max(abs(a - b) for a, b in zip(pixel, colour, strict=True)) <= 3, (index, pixel)
        # The box is in pixels of that image's own view.
        original, view = traj.originals[index or 0], traj.views[index or 0]
        x0, y0, x1, y1 = tool.crop_box(
            [0, 0, 10, 10], (original.width, original.height), (view.width, view.height)
        )
        expected = tool.enlarge(Image.new("RGB", (x1 - x0, y1 - y0))).size
        assert (crop.width, crop.height) == expected
    call = zoom_call(traj, {"bbox_2d": [0, 0, 5, 5], "image_index": 3})
    too_far = run_turn(call, runtime, store(tmp_path), 30).outcome
    assert "at most 2" in too_far.steps[-1].observation.error


# -- a whole run: annotate, trace, replay, report, SFT export -------------------------------

CODE = "save_image(images[1].crop((0, 0, 8, 8)))"


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory: pytest.TempPathFactory):
    """annotate on the in-process scripted model: a pair whose code call opens `images[1]`, a
    pair with a missing second image, and a single-image job."""
    tmp_path = tmp_path_factory.mktemp("multi")
    red, blue, _ = images(tmp_path)
    call = json.dumps({"name": "code", "arguments": {"code": CODE}})
    jobs = [
        {"id": "pair", "images": [red, blue], "question": f"CALL {call}"},
        {"id": "broken", "images": [red, str(tmp_path / "nope.png")], "question": "q"},
        {"id": "single", "image": red, "question": "What?"},
    ]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(j) + "\n" for j in jobs))
    argv = [
        f"--input={tmp_path / 'jobs.jsonl'}",
        f"--output={tmp_path / 'out'}",
        "--endpoint=scripted:call",
        "--tools=code",
        "--run_id=multi",
        *FAST,
    ]
    result = annotate.run(argv, test_pipeline=BeamTestPipeline(runner="FnApiRunner"))
    return tmp_path, result


@pytest.mark.integration  # the code tool's sandbox
def test_the_code_tool_opens_the_second_image_in_a_run(scripted_run) -> None:
    tmp_path, result = scripted_run
    answers, failures = run_rows(result)
    rows = {row["id"]: row for row in answers}
    assert sorted(rows) == ["pair", "single"] and rows["single"]["answer"] == "unscripted"
    assert json.loads(rows["pair"]["answer"]) == {"result": "<sub-image 1>", "type": "code"}
    (failure,) = failures
    assert (failure["id"], failure["stage"], failure["error_class"]) == (
        "broken",
        "prepare",
        "image_missing",
    )
    assert failure["message"].startswith(f"images[1] ({tmp_path / 'nope.png'}): ")
    assert failure["input"]["images"][1] == str(tmp_path / "nope.png")

    record = trace(rows["pair"]["trace_uri"])
    assert [o["uri"] for o in record["originals"]] == record["job"]["images"]
    assert record["original"] == record["originals"][0] and len(record["views"]) == 2
    first_turn = record["messages"][1]["content"]
    assert [p["type"] for p in first_turn] == ["image_url", "image_url", "text"]
    assert [p["image_url"]["url"] for p in first_turn[:2]] == [v["uri"] for v in record["views"]]
    (crop,) = record["steps"][0]["observation"]["images"]
    with Image.open(crop["uri"]) as stored:  # the crop is the second image's
        assert stored.convert("RGB").getcolors() == [(64, BLUE)]
    single = trace(rows["single"]["trace_uri"])
    assert "originals" not in single and "images" not in single["job"]


@pytest.mark.integration  # the replay filter runs the code again in the sandbox
def test_replay_reruns_the_call_on_the_same_image(scripted_run) -> None:
    _, result = scripted_run
    answers, _ = run_rows(result)
    pair = loop.from_trace(trace(next(r for r in answers if r["id"] == "pair")["trace_uri"]))
    replay = ToolReplay(tools=("code",))
    try:
        assert replay.check(pair) is None
    finally:
        replay.teardown()


@pytest.mark.integration
def test_the_report_shows_every_job_image_with_its_crops(scripted_run) -> None:
    tmp_path, _ = scripted_run
    report = tmp_path / "report"
    build_report(str(tmp_path / "out"), report_dir=str(report))
    page = (report / "trajectories" / page_name("pair")).read_text()
    figures = dict(re.findall(r'<div class="figure" id="([^"]+)">(.*?)</div>', page, re.DOTALL))
    assert sorted(figures) == ["job-image", "job-image-2"]
    assert 'alt="job image 1"' in figures["job-image"] and "<rect" not in figures["job-image"]
    assert 'alt="job image 2" width="40" height="30"' in figures["job-image-2"]
    assert '<rect x="0.0" y="0.0" width="8.0" height="8.0"' in figures["job-image-2"]
    for src in re.findall(r'<img src="\.\./([^"]+)" alt="job image', page):
        assert (report / src).is_file()
    single = (report / "trajectories" / page_name("single")).read_text()
    assert 'id="job-image"' in single and 'alt="job image"' in single
    assert "job-image-2" not in single


@pytest.mark.integration
def test_the_sft_row_has_every_image_part_in_order(scripted_run) -> None:
    _, result = scripted_run
    answers, _ = run_rows(result)
    record = trace(next(r for r in answers if r["id"] == "pair")["trace_uri"])
    row = sft_record(loop.from_trace(record))
    views = [v["uri"] for v in record["views"]]
    crop_view = record["messages"][3]["content"][1]["image_url"]["url"]
    assert row["images"] == [*views, crop_view]
    user = row["messages"][1]["content"]
    assert [p["type"] for p in user] == ["image_url", "image_url", "text"]
    assert [p["image_url"]["url"] for p in user[:2]] == views


@pytest.mark.integration
@pytest.mark.slow
def test_a_multi_image_job_through_the_real_server(tmp_path: Path, corpus: Path, triton) -> None:
    """The embedded model behind tritonserver takes a first turn with two views."""
    first, second = (json.loads(line) for line in corpus.read_text().splitlines()[:2])
    job = {"id": "pair", "images": [first["image"], second["image"]], "question": "Which?"}
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps(job) + "\n")
    answers, failures = run_rows(annotate_run(jobs, tmp_path / "out", triton.grpc_url))
    assert failures == [] and [row["id"] for row in answers] == ["pair"]
    record = trace(answers[0]["trace_uri"])
    parts = record["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert record["usage"]["prompt_tokens"] > 0
    for view in record["views"]:
        assert Image.open(view["uri"]).size == (view["width"], view["height"])
