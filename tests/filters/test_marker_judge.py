"""The marker judge on crops of a rendered synthetic scene."""

from __future__ import annotations

from pathlib import Path

from beam_pipelines.filters import ImageReasoningConsistency, MarkerJudge

from .helpers import judged


def test_marker_judge_checks_the_crop_against_the_named_marker(tmp_path: Path, scene) -> None:
    _, _, at_target, elsewhere = scene
    check = ImageReasoningConsistency(MarkerJudge()).check
    assert check(judged(tmp_path, scene, at_target, "The zoomed yellow square holds F.")) is None
    empty = judged(tmp_path, scene, elsewhere, "The zoomed yellow square holds F.")
    assert "the image shows no yellow marker" in check(empty)
    misread = judged(tmp_path, scene, at_target, "The zoomed yellow square holds X.")
    assert check(misread) == (
        "step 1 (marker): the image shows the yellow square holding F, the reasoning reads X"
    )
    wrong_shape = judged(tmp_path, scene, at_target, "The zoomed yellow circle holds F.")
    assert "is a square, the reasoning says circle" in check(wrong_shape)
    # Reasoning that names no marker makes no claim to check.
    assert check(judged(tmp_path, scene, elsewhere, "Now I can read it.")) is None
