"""The `final_think` filter: the last reasoning step must name the answer as a word."""

from __future__ import annotations

from pathlib import Path

from pipeline.helpers import say, started

from beam_pipelines.filters import FinalThinkAgrees


def test_final_think_filter(tmp_path: Path) -> None:
    f = FinalThinkAgrees()
    assert f.check(say(started(tmp_path), "<think>It is y.</think><answer>B</answer>")) is None
    assert f.check(say(started(tmp_path), "<think>So B.</think><answer>B</answer>")) is None
    disagree = say(started(tmp_path), "<think>It is x.</think><answer>B</answer>")
    assert f.check(disagree) == "the final reasoning does not name the answer B ('y')"
    # "y" inside another word does not count.
    assert f.check(say(started(tmp_path), "<think>yes, yellow</think><answer>B</answer>"))
