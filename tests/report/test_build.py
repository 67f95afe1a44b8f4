"""The report built from a scripted run written by the pipeline's own writers."""

from __future__ import annotations

import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markupsafe import escape

from beam_pipelines.__main__ import main
from beam_pipelines.outputs import readers as output_readers
from beam_pipelines.outputs.layout import OutputLayout
from beam_pipelines.report import build_report, print_report_path
from beam_pipelines.report.pages import page_name, script_hash

from .synthetic import RUN_ID, XSS, XSS_ID, write_run


@pytest.fixture(scope="module")
def report(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = build_report(str(synthetic_root), report_dir=str(out))
    assert result.run_id == RUN_ID
    assert (result.pages, result.trajectories) == (9, 9)
    assert result.index == str(out / "index.html")
    return out


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def pages(report: Path) -> list[Path]:
    return sorted((report / "trajectories").glob("*.html"))


def test_every_trajectory_has_a_page_linked_from_the_index(report: Path) -> None:
    index = read(report / "index.html")
    links = re.findall(r'<a class="traj" href="([^"]+)"', index)
    assert len(links) == 9
    assert sorted(report / link for link in links) == pages(report)
    for page in pages(report):
        assert '<a href="../index.html#trajectories-heading">' in read(page)


def test_the_summary_counts_every_row(report: Path) -> None:
    index = read(report / "index.html")
    cards = dict(
        (key, value)
        for value, key in re.findall(r'<div class="v">([^<]+)</div><div class="k">([^<(]+)', index)
    )
    assert cards["jobs finished"] == "10"
    assert (cards["answered"], cards["max_turns"], cards["failed"]) == ("7", "1", "2")
    assert cards["accuracy "] == "57.1%"  # 4 of 7 graded: 3 scripted + 2 of 3 plain
    assert "4/7 graded" in index
    assert "<code>invalid_json</code>" in index and "<code>model</code>" in index
    assert index.count('<svg class="chart"') == 3


class Elements(HTMLParser):
    """Every element of a page with its attributes, as a browser's tokenizer sees them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def test_all_model_and_tool_text_is_escaped(report: Path) -> None:
    files = [report / "index.html", *pages(report)]
    for path in files:
        text = read(path)
        assert XSS not in text
        elements = Elements(text).found
        scripts = [tag for tag, _ in elements if tag == "script"]
        assert len(scripts) == (1 if path.name == "index.html" else 0)
        assert not [tag for tag, _ in elements if tag in ("b", "iframe", "object", "embed")]
        handlers = [name for _, attrs in elements for name in attrs if name.startswith("on")]
        assert handlers == [], path
        assert not [a for tag, a in elements if tag == "img" and a.get("src") == "x"]
    xss_page = read(report / "trajectories" / page_name(XSS_ID))
    for shown in (f"Thinking {XSS}", f"B {XSS}", f"What is inside? {XSS}"):
        assert str(escape(shown)) in xss_page  # reasoning, answer, question: visible as text
    assert "<script" not in xss_page  # a trajectory page has no script at all
    assert "script-src &#39;none&#39;" in xss_page


def test_the_only_script_is_the_reports_own_and_its_hash_is_allowed(report: Path) -> None:
    index = read(report / "index.html")
    scripts = re.findall(r"<script>(.*?)</script>", index, flags=re.S)
    assert len(scripts) == 1
    policy = html.unescape(
        re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', index)[1]
    )
    assert f"script-src '{script_hash(scripts[0])}'" in policy
    assert "default-src 'none'" in policy


def test_assets_are_relative_and_present(report: Path) -> None:
    for page in pages(report):
        for src in re.findall(r'src="([^"]+)"', read(page)):
            assert not src.startswith(("/", "data:", "http", "file:")), src
            assert (page.parent / src).resolve().is_file(), src
    images = list((report / "assets").iterdir())
    assert images and all(p.stat().st_size > 0 for p in images)


def rects(page: str) -> list[tuple[float, float, float, float]]:
    found = re.findall(
        r'<rect x="([\d.-]+)" y="([\d.-]+)" width="([\d.]+)" height="([\d.]+)" fill="none"', page
    )
    return [tuple(float(v) for v in r) for r in found]


def test_crop_boxes_are_drawn_on_the_original(report: Path) -> None:
    crop = read(report / "trajectories" / page_name("crop-then-zoom"))
    # The second crop is of sub-image 1 (the first crop, 160 px shown as 128 px): mapped back.
    assert rects(crop) == [(570.0, 370.0, 160.0, 160.0), (610.0, 410.0, 80.0, 80.0)]
    assert 'viewBox="0 0 1024 768"' in crop
    zoom = read(report / "trajectories" / page_name("zoom-relative"))
    assert rects(zoom) == [(512.0, 384.0, 256.0, 192.0)]
    failed = read(report / "trajectories" / page_name("model-error"))
    assert rects(failed) == [(10.0, 20.0, 290.0, 380.0)]


def test_turns_show_reasoning_calls_observations_and_the_verdict(report: Path) -> None:
    crop = read(report / "trajectories" / page_name("crop-then-zoom"))
    assert crop.count('<section class="turn"') == 3
    assert "Too small to read; crop around the red square." in crop
    assert 'class="highlight"' in crop  # the code is highlighted by Pygments
    assert "zoomed twice" in crop and "sub-image 2" in crop
    assert '<span class="ok">correct</span>' in crop
    capped = read(report / "trajectories" / page_name("format-then-max-turns"))
    assert "format error" in capped and "not run: turn budget exhausted" in capped
    assert "ZeroDivisionError" in capped and "no answer within 3 turns" in capped
    failed = read(report / "trajectories" / page_name("model-error"))
    assert "server exploded" in failed and "status-failed" in failed
    assert "the job ended on this turn" in failed


def test_a_capped_report_samples_and_says_so(synthetic_root: Path, tmp_path: Path) -> None:
    result = build_report(str(synthetic_root), RUN_ID, max_trajectories=3, report_dir=str(tmp_path))
    assert (result.pages, result.trajectories) == (3, 9)
    index = read(tmp_path / "index.html")
    assert "a sample of 3 of the run&#39;s 9 trajectories" in index
    assert '<div class="v">10</div><div class="k">jobs finished' in index
    again = build_report(str(synthetic_root), max_trajectories=3, report_dir=str(tmp_path / "b"))
    assert sorted(p.name for p in (tmp_path / "trajectories").iterdir()) == sorted(
        p.name for p in (tmp_path / "b" / "trajectories").iterdir()
    )
    assert again.pages == 3


def test_only_the_wanted_traces_are_parsed(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real_loads = json.loads

    def counting_loads(text: str | bytes, *args, **kwargs):  # type: ignore[no-untyped-def]
        value = real_loads(text, *args, **kwargs)
        if isinstance(value, dict) and "messages" in value:
            parsed.append(value["id"])
        return value

    monkeypatch.setattr(output_readers.json, "loads", counting_loads)
    build_report(str(synthetic_root), max_trajectories=2, report_dir=str(tmp_path))
    assert len(parsed) == 2


def test_a_missing_trace_shard_leaves_the_row_without_a_page(tmp_path: Path) -> None:
    root = tmp_path / "root"
    layout = write_run(root)
    for shard in Path(layout.traces_dir).glob("part-*"):
        shard.unlink()
    result = build_report(str(root), report_dir=str(tmp_path / "r"))
    assert result.pages == 0
    assert read(tmp_path / "r" / "index.html").count("(trace not found)") == 6


def test_the_default_place_the_newest_run_and_file_uris(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_run(root)
    shutil.copytree(root / "runs" / RUN_ID, root / "runs" / "20250101T000000Z-older")
    result = build_report(f"file://{root}")
    assert result.run_id == RUN_ID
    assert Path(result.index.removeprefix("file://")) == root / "runs" / RUN_ID / "report" / (
        "index.html"
    )
    older = build_report(str(root), "20250101T000000Z-older")
    assert older.run_id == "20250101T000000Z-older"
    with pytest.raises(FileNotFoundError):
        build_report(str(root), "no-such-run")
    with pytest.raises(FileNotFoundError):
        build_report(str(tmp_path / "empty"))


def test_the_report_command(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    code = main(
        [
            "report",
            "--output",
            str(synthetic_root),
            "--max-trajectories",
            "4",
            "--report-dir",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'index.html'}" in printed
    assert len(list((out / "trajectories").iterdir())) == 4
    assert main(["report", "--output", str(tmp_path / "nothing")]) == 1
    assert main(["report", "--output", str(synthetic_root), "--max-trajectories", "-1"]) == 2


def test_the_end_of_a_run_prints_the_report_path(tmp_path: Path, capsys) -> None:
    root = tmp_path / "root"
    layout = write_run(root)
    print_report_path(layout)
    assert capsys.readouterr().out == f"report:    {layout.run_dir}/report/index.html\n"
    print_report_path(OutputLayout(str(tmp_path / "gone"), RUN_ID))  # never raises
    assert capsys.readouterr().out.startswith("report:    not written (FileNotFoundError")
