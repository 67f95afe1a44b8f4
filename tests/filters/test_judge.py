"""The `judge` filter's input: each tool image paired with the reasoning after it."""

from __future__ import annotations

from pathlib import Path

from beam_pipelines.filters import image_claims

from .helpers import judged


def test_image_claims_pair_each_image_with_the_next_reasoning(tmp_path: Path, scene) -> None:
    _, _, at_target, _ = scene
    traj = judged(tmp_path, scene, at_target, "The zoomed yellow square holds F.")
    (claim,) = image_claims(traj)
    assert claim.step == 1 and claim.image == at_target
    assert claim.reasoning == "The zoomed yellow square holds F."
    assert claim.view == at_target.uri
