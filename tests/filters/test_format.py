"""The `format` filter: malformed turns during the run, and turns with empty reasoning."""

from __future__ import annotations

from pathlib import Path

from pipeline.helpers import answered, say, started

from beam_pipelines.filters import FormatValid


def test_format_filter(tmp_path: Path) -> None:
    good = answered(started(tmp_path))
    assert FormatValid().check(good) is None
    bad = say(started(tmp_path), "no tags at all")
    assert bad.format_errors == 1
    assert FormatValid().check(answered(bad)) == "1 malformed turn(s) during the run"
    # A turn that parses but reasons about nothing.
    empty = say(started(tmp_path), "<think></think><answer>B</answer>")
    assert FormatValid().check(empty) == "turn 1: empty reasoning"
    # R1V4 may open a turn with </think>: the parser reads it, training data does not keep it.
    opened = say(started(tmp_path), "</think>I see it, a B.</think><answer>B</answer>")
    assert opened.format_errors == 0
    assert FormatValid().check(opened) == "turn 1: does not open with <think>"
