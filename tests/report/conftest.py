"""Report test fixtures: a scripted run, a real pipeline run, and a headless Chromium.

The browser is Debian's `chromium` package driven by Playwright (never `playwright install`,
which downloads a browser). Browser tests are skipped only when no chromium binary exists.
Screenshots go to `test-artifacts/report/` (git-ignored) so they outlive the test run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beam_pipelines.serve import DEFAULT_MODEL_REPOSITORY

from .synthetic import write_run

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "report"
TINY_WEIGHTS = DEFAULT_MODEL_REPOSITORY / "agent_vlm" / "tiny"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output root with the scripted run (10 finished jobs, 9 with traces)."""
    root = tmp_path_factory.mktemp("synthetic-output")
    write_run(root, extra_answered=3)
    return root


@pytest.fixture(scope="session")
def pipeline_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output root written by the annotate pipeline on four synthetic jobs.

    The pipeline starts its own local Triton with the embedded tiny model, as `make demo`
    does. `REPORT_TEST_TRITON_URL` points it at a running server instead.
    """
    url = os.environ.get("REPORT_TEST_TRITON_URL")
    if not url and not any(TINY_WEIGHTS.glob("*.safetensors")):
        pytest.skip(f"needs the tiny model's weights in {TINY_WEIGHTS}: make train-tiny")
    from beam_pipelines import annotate
    from beam_pipelines.synthetic import write_corpus

    base = tmp_path_factory.mktemp("pipeline")
    jobs = write_corpus(base / "corpus", 4, seed=11)
    output = base / "output"
    annotate.run(
        [
            f"--input={jobs}",
            f"--output={output}",
            "--max_turns=4",
            "--max_in_flight=8",
            "--max_tokens=256",
            "--progress=off",
            *([f"--triton_url={url}"] if url else []),
        ]
    )
    return output


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's package) under Playwright."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("needs chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """A browser page that records console errors, page errors and dialogs."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on(
            "console",
            lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    opened = Page(browser)
    try:
        yield opened
    finally:
        opened.context.close()
