"""The report in a real headless Chromium: no console errors, navigation, no script from traces.

Screenshots are saved under `test-artifacts/report/` (git-ignored).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from beam_pipelines.report import build_report
from beam_pipelines.report.pages import page_name

from .conftest import Page
from .synthetic import XSS, XSS_ID, write_run

pytestmark = pytest.mark.integration


def open_report(page: Page, index: str) -> None:
    page.page.goto(Path(index).resolve().as_uri())
    page.page.wait_for_load_state("load")


def visible_rows(page: Page) -> list[str]:
    return page.page.locator("#trajectories tbody tr:visible td:first-child").all_inner_texts()


def test_the_list_filters_and_a_click_opens_the_trajectory(
    synthetic_root: Path, tmp_path: Path, page: Page
) -> None:
    index = build_report(str(synthetic_root), report_dir=str(tmp_path)).index
    open_report(page, index)
    assert page.page.locator("#summary").is_visible()
    assert len(visible_rows(page)) == 9
    page.page.fill("#q", "zoom-rel")
    assert [r.strip() for r in visible_rows(page)] == ["zoom-relative"]
    page.page.fill("#q", "")
    page.page.select_option("#f-status", "failed")
    assert [r.strip() for r in visible_rows(page)] == ["model-error"]
    page.page.select_option("#f-status", "")
    page.page.select_option("#f-correct", "yes")
    assert len(visible_rows(page)) == 4
    page.page.select_option("#f-correct", "")
    page.page.select_option("#f-tool", "-")
    assert len(visible_rows(page)) == 4  # the plain and ungraded jobs called no tool
    page.page.select_option("#f-tool", "")
    page.screenshot("synthetic-index.png")

    page.page.click("a.traj:text-is('crop-then-zoom')")
    page.page.wait_for_load_state("load")
    assert page.page.url.endswith(page_name("crop-then-zoom"))
    assert page.page.inner_text("#trajectory-id") == "crop-then-zoom"
    assert page.page.locator("#job-image svg rect").count() == 2
    assert page.page.locator("#job-image img").evaluate("img => img.naturalWidth") > 0
    assert page.page.locator(".thumbs img").count() == 2
    page.screenshot("synthetic-trajectory.png")
    assert page.errors == [] and page.dialogs == []


def test_script_and_html_in_model_text_render_as_text(
    synthetic_root: Path, tmp_path: Path, page: Page
) -> None:
    index = build_report(str(synthetic_root), report_dir=str(tmp_path)).index
    open_report(page, index)
    page.page.fill("#q", "xss")
    page.page.click("a.traj:visible")
    page.page.wait_for_load_state("load")
    assert page.page.url.endswith(page_name(XSS_ID))
    assert page.page.inner_text("#trajectory-id") == XSS_ID
    assert page.page.locator("pre.think").first.inner_text() == f"Thinking {XSS}"
    assert page.page.locator("pre.answer").inner_text() == f"B {XSS}"
    assert page.page.locator("b").count() == 0
    assert page.page.evaluate("typeof window.__xss") == "undefined"
    page.screenshot("script-in-model-text.png")
    assert page.dialogs == [] and page.errors == []


@pytest.mark.slow
def test_a_real_pipeline_runs_report_opens_in_chromium(
    pipeline_output: Path, tmp_path: Path, page: Page
) -> None:
    result = build_report(str(pipeline_output))
    assert result.trajectories == 4 and result.pages == 4
    open_report(page, result.index)
    assert page.page.locator("#trajectories tbody tr").count() == 4
    page.screenshot("pipeline-index.png")
    first = page.page.locator("a.traj").first
    job_id = first.inner_text()
    first.click()
    page.page.wait_for_load_state("load")
    assert page.page.inner_text("#trajectory-id") == job_id
    assert page.page.locator("#job-image img").evaluate("img => img.naturalWidth") > 0
    assert page.page.locator("section.turn").count() >= 1
    page.screenshot("pipeline-trajectory.png")
    assert page.errors == [] and page.dialogs == []


def test_the_list_pages_through_a_longer_run(tmp_path: Path, page: Page) -> None:
    write_run(tmp_path / "root", extra_answered=60)
    open_report(page, build_report(str(tmp_path / "root")).index)
    assert len(visible_rows(page)) == 50
    assert page.page.inner_text("#shown").startswith("1–50 of 66")
    page.page.click("#next")
    assert len(visible_rows(page)) == 16 and page.page.is_disabled("#next")
    page.page.click("th:text-is('turns')")  # sorting starts over at the first page
    assert len(visible_rows(page)) == 50
    assert visible_rows(page)[0].strip() in ("crop-then-zoom", "format-then-max-turns")
    assert page.errors == []
