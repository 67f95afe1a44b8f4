"""The embedded model on search questions: zoom, then look the character up in the codebook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_pipelines.synthetic import write_corpus
from tools.search.corpus import CorpusSpec, build_corpus

from .runs import annotate_run, run_rows, trace

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_search_questions_are_answered_through_the_codebook(tmp_path: Path, triton) -> None:
    jobs = write_corpus(tmp_path / "jobs", 12, seed=31, zoom_fraction=0.0, search_fraction=1.0)
    # The default corpus's codebook (seed 0), without its gallery: the same pages to search.
    codebook = build_corpus(tmp_path / "codebook", CorpusSpec(seed=0, plates=0))
    result = annotate_run(
        jobs,
        tmp_path / "out",
        triton.grpc_url,
        "--tools=code,text_search",
        f"--tool_option=text_search.corpus={codebook.root}",
        "--tool_option=text_search.max_results=1",
    )
    answers, failures = run_rows(result)
    assert len(answers) + len(failures) == 12
    # Four codewords per question: chance is 25 %; the codeword is only in the search result.
    assert result.summary.counts.accuracy is not None and result.summary.counts.accuracy >= 0.5
    jobs_by_id = {job["id"]: job for job in map(json.loads, jobs.read_text().splitlines())}
    read_right = 0
    for row in answers:
        steps = trace(row["trace_uri"])["steps"]
        calls = [step["tool_call"] for step in steps if step.get("tool_call")]
        assert [call["name"] for call in calls] == ["code", "text_search"], calls
        # The query names the character the zoom read.
        char = jobs_by_id[row["id"]]["meta"]["target"]["char"]
        read_right += calls[1]["arguments"] == {"queries": [f"codebook symbol {char}"]}
    assert read_right >= len(answers) * 0.75
