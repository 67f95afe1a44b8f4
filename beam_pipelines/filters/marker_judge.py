"""The `marker` judge: the heuristic for the synthetic "zoom to read" task, whose markers'
colours and shapes (`beam_pipelines.synthetic`) are its ground truth."""

from __future__ import annotations

import re
from collections.abc import Mapping

from beam_pipelines import synthetic
from beam_pipelines.agent.images import load_image
from beam_pipelines.agent.records import Trajectory
from beam_pipelines.filters.base import ImageClaim, ImageJudge
from beam_pipelines.io.files import read_bytes

MARKER_COLOURS, MARKER_SHAPES = synthetic.COLOURS, synthetic.SHAPES
_NAMED_MARKER = re.compile(
    rf"\b({'|'.join(MARKER_COLOURS)})\s+({'|'.join(MARKER_SHAPES)}|marker)\b", re.IGNORECASE
)
_READ_CHARACTER = re.compile(r"\b(?:holds|reads|shows|contains)\s+(?:an?\s+)?\"?([A-Z])\b")


def colour_fraction(png: bytes, colour: tuple[int, int, int], tolerance: float = 60.0) -> float:
    """The share of an image's pixels within `tolerance` (Euclidean RGB) of `colour`."""
    import numpy as np

    pixels = np.asarray(load_image(png), dtype=np.float32).reshape(-1, 3)
    if not len(pixels):
        return 0.0
    distance = np.linalg.norm(pixels - np.asarray(colour, dtype=np.float32), axis=1)
    return float((distance <= tolerance).mean())


class MarkerJudge(ImageJudge):
    """The heuristic judge of the synthetic "zoom to read" task (`beam_pipelines/synthetic.py`).

    The reasoning after a crop names a marker ("The zoomed yellow square holds X."). The crop
    must show it: at least `min_fraction` of its pixels within `tolerance` (RGB distance) of
    that marker colour (the scenes' clutter is pale and grey, so only markers are saturated).
    When the job's `meta.target` (which the corpus writes) is the marker named, its shape and
    character are known too: the reasoning must give the target's shape, and a character it
    reads off a crop that shows the target must be the target's. Reasoning that names no
    marker makes no claim about the image and passes.
    """

    name = "marker"

    def __init__(self, min_fraction: float = 0.04, tolerance: float = 60.0) -> None:
        self.min_fraction = min_fraction
        self.tolerance = tolerance

    def judge(self, traj: Trajectory, claim: ImageClaim) -> str | None:
        named = _NAMED_MARKER.search(claim.reasoning)
        if named is None:
            return None
        colour, shape = named.group(1).lower(), named.group(2).lower()
        png = read_bytes(claim.image.uri)
        fraction = colour_fraction(png, MARKER_COLOURS[colour], self.tolerance)
        if fraction < self.min_fraction:
            return (
                f"the reasoning names the {colour} {shape}, but the image shows no {colour} "
                f"marker ({fraction:.1%} {colour} pixels)"
            )
        target = traj.job.meta.get("target")
        if not isinstance(target, Mapping) or target.get("colour") != colour:
            return None
        if shape != "marker" and shape != target.get("shape"):
            return f"the {colour} marker is a {target.get('shape')}, the reasoning says {shape}"
        read = _READ_CHARACTER.search(claim.reasoning[named.start() :])
        if read and read.group(1) != target.get("char"):
            return (
                f"the image shows the {colour} {target.get('shape')} holding "
                f"{target.get('char')}, the reasoning reads {read.group(1)}"
            )
        return None
