"""Filter test fixtures: a rendered synthetic scene and crops of it, for the judges."""

from __future__ import annotations

import pytest
from pipeline.helpers import stored


@pytest.fixture(scope="package")
def scene(tmp_path_factory: pytest.TempPathFactory):
    """A rendered synthetic scene with a yellow square holding F, and crops of it."""
    from beam_pipelines.synthetic import Marker, Scene, render

    target = Marker("yellow", "square", "F", 500, 500, 150)
    other = Marker("blue", "circle", "K", 1500, 1500, 150)
    image = render(Scene(seed=5, markers=(target, other)))
    folder = tmp_path_factory.mktemp("scene")
    original = folder / "scene.jpg"
    image.save(original, quality=92)
    at_target = stored(folder, image.crop((420, 420, 580, 580)), "target")
    elsewhere = stored(folder, image.crop((1000, 100, 1160, 260)), "empty")
    return original, target, at_target, elsewhere
