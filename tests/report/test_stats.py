"""Streaming run statistics, the bounded sample, and the SVG charts."""

from __future__ import annotations

import random

import pytest

from beam_pipelines.report import charts
from beam_pipelines.report.stats import Candidate, RunStats, Sample


def candidate(i: int) -> Candidate:
    return Candidate(id=f"job-{i}", status="answered", trace_uri=None)


def test_the_sample_is_bounded_and_does_not_depend_on_order() -> None:
    ids = list(range(1000))
    first, second = Sample(25), Sample(25)
    for i in ids:
        first.offer(candidate(i))
    random.Random(3).shuffle(ids)
    for i in ids:
        second.offer(candidate(i))
    assert len(first) == len(second) == 25
    assert [c.id for c in first.candidates()] == [c.id for c in second.candidates()]
    kept = first.candidates()[0]
    first.offer(kept)  # an id offered again while kept is not kept twice
    assert len(first) == 25 and kept.id in first


def test_a_run_smaller_than_the_cap_is_kept_whole() -> None:
    sample = Sample(50)
    for i in range(7):
        sample.offer(candidate(i))
    assert sorted(c.id for c in sample.candidates()) == sorted(f"job-{i}" for i in range(7))


def test_a_zero_cap_keeps_nothing_but_counts() -> None:
    sample = Sample(0)
    sample.offer(candidate(1))
    assert len(sample) == 0
    with pytest.raises(ValueError):
        Sample(-1)


def row(job_id: str, status: str = "answered", correct: bool | None = True, **kw) -> dict:
    base = {
        "id": job_id,
        "status": status,
        "correct": correct,
        "turns": 2,
        "tool_calls": 1,
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "latency_s": 1.5,
    }
    return {**base, **kw}


def test_run_stats_count_each_id_once() -> None:
    stats = RunStats()
    assert stats.add_answer(row("a"))
    assert not stats.add_answer(row("a"))
    stats.add_answer(row("b", correct=False, turns=4, tool_calls=3))
    stats.add_answer(row("c", status="max_turns", correct=None, latency_s=None))
    traced = {"error_class": "model", "stage": "agent", "trace_uri": "s#d", "message": "x" * 900}
    assert [stats.add_failure({**traced, "id": f"f{i % 6}"}) for i in range(7)] == [True] * 6 + [
        False
    ]
    assert not stats.add_failure({"error_class": "invalid_json", "stage": "read", "message": "b"})
    assert not stats.add_failure({**traced, "id": "a"})  # answered: its trace is already shown
    assert (stats.counts.finished, stats.counts.duplicate_rows) == (12, 1)
    assert stats.trajectories == 3 + 6  # answered ids, then failed ids that have a trace
    assert stats.turns == {2: 2, 4: 1}
    assert stats.tool_calls_per_job == {1: 2, 3: 1}
    assert stats.mean_latency_s == 1.5
    assert stats.failure_stages["model"] == {"agent": 8}
    assert len(stats.failure_examples["model"]) == 5
    assert len(stats.failure_examples["model"][0].message) < 510


def test_integer_bars_fill_gaps_and_fold_the_tail() -> None:
    assert charts.integer_bars({1: 2, 3: 1}) == [("1", 2), ("2", 0), ("3", 1)]
    folded = charts.integer_bars({0: 1, 100: 2, 200: 3}, max_bars=5)
    assert folded[-1] == ("≥4", 5) and len(folded) == 5


def test_binned_bars_cover_every_value() -> None:
    bars = charts.binned_bars([0.1, 0.2, 0.2, 5.0], bins=4)
    assert sum(count for _, count in bars) == 4 and len(bars) == 4
    assert charts.binned_bars([2.0, 2.0]) == [("2s", 2)]
    assert charts.binned_bars([]) == []


def test_chart_text_is_escaped() -> None:
    svg = charts.bar_chart([("<script>", 3)], "a <b>", "x & y")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "x &amp; y" in svg
    assert svg.startswith("<svg") and "<rect" in svg
    assert "no data" in charts.bar_chart([], "t", "x")
