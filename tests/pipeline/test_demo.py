"""`python -m beam_pipelines demo`: the synthetic corpus, both tools, the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_pipelines.__main__ import main
from tools.search.corpus import CACHE_ENV

from .runs import all_answers, trace

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_annotates_zoom_global_and_search_questions(
    tmp_path: Path, triton, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The offline search's default corpus is built on first use; here in a folder of the test's.
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    argv = ["demo", f"--output={tmp_path}", "--n=10", f"--triton-url={triton.grpc_url}"]
    assert main([*argv, "--progress=off", "--max_tokens=256"]) == 0

    corpus = tmp_path / "corpus" / "jobs.jsonl"
    jobs = [json.loads(line) for line in corpus.read_text().splitlines()]
    kinds = {job["meta"]["kind"] for job in jobs}
    # The default seed's first ten jobs: zoom, global and search questions.
    assert {"zoom", "colour", "search"} <= kinds, kinds
    rows = all_answers(tmp_path / "annotations")
    assert sorted(row["id"] for row in rows) == sorted(job["id"] for job in jobs)
    search_job = next(job["id"] for job in jobs if job["meta"]["kind"] == "search")
    steps = trace(next(row for row in rows if row["id"] == search_job)["trace_uri"])["steps"]
    calls = [step["tool_call"]["name"] for step in steps if step.get("tool_call")]
    assert calls == ["code", "text_search"], calls
    assert "accuracy" in capsys.readouterr().out

    # A second demo reuses the corpus it wrote and starts its annotations afresh.
    stamp = corpus.stat().st_mtime_ns
    assert main([*argv, "--progress=off", "--max_tokens=256"]) == 0
    assert corpus.stat().st_mtime_ns == stamp
    assert len(all_answers(tmp_path / "annotations")) == len(jobs)
