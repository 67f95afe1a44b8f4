"""The `answer` filter: option letters and their texts, free-form answers, no ground truth."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.helpers import answered, say, started

from beam_pipelines.agent import loop
from beam_pipelines.agent.records import Job
from beam_pipelines.filters import AnswerMatches


def test_answer_filter(tmp_path: Path) -> None:
    f = AnswerMatches()
    assert f.check(answered(started(tmp_path), "B")) is None
    assert f.check(answered(started(tmp_path), "y")) is None  # the option's text
    assert f.check(answered(started(tmp_path), "A")) == "answered A, the ground truth is B"
    assert "no ground truth" in f.check(answered(started(tmp_path, answer=None), "B"))
    unfinished = loop.fail(started(tmp_path), "max_turns", "out of turns")
    assert f.check(unfinished) == "no answer (status failed)"
    free = dataclasses.replace(
        started(tmp_path), job=Job(id="f", image="i", question="Capital?", answer="Paris")
    )
    assert f.check(say(free, "<think>It is Paris.</think><answer>paris.</answer>")) is None
    assert "ground truth is 'Paris'" in f.check(say(free, "<think>x</think><answer>Rome</answer>"))
