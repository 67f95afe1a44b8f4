"""The model judge's reading of a reply (asking a served model: test_regenerate.py)."""

from __future__ import annotations

from beam_pipelines.filters import parse_verdict


def test_judge_verdicts() -> None:
    assert parse_verdict("<think>it does</think><answer>Yes</answer>") is True
    assert parse_verdict("<answer>no</answer>") is False
    assert parse_verdict("<think>yes? no?</think><answer>maybe</answer>") is None
    assert parse_verdict("no, it does not") is False
