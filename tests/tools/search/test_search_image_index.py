"""Robustness of the offline image index to crops, rescaling and re-encoding.

The figures are printed (``-s``) and recorded in docs/tools.md; the assertions hold margins
under them. Random crops are drawn with a fixed seed, so the run is reproducible.
"""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from tools.base import ToolArgumentsError
from tools.search.corpus import Corpus, CorpusSpec, paint_plate
from tools.search.image_index import LocalImageSearch


def encoded(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def random_crop(rng: random.Random, image: Image.Image, area: float) -> Image.Image:
    width, height = image.size
    aspect = rng.uniform(0.6, 1.6)
    crop_w = min(width, (area * width * height * aspect) ** 0.5)
    crop_h = min(height, area * width * height / crop_w)
    x, y = rng.uniform(0, width - crop_w), rng.uniform(0, height - crop_h)
    return image.crop((round(x), round(y), round(x + crop_w), round(y + crop_h)))


def test_whole_plates_are_found_first(corpus: Corpus) -> None:
    search = LocalImageSearch(corpus.image_index_path)
    for plate in corpus.plates[:8]:
        hits = search.search((corpus.root / plate.file).read_bytes(), 3)
        assert hits[0].link == plate.page_url
        assert hits[0].source == plate.image_url


@pytest.mark.slow
def test_crops_rescaled_and_reencoded_are_found(corpus: Corpus) -> None:
    search = LocalImageSearch(corpus.image_index_path)
    plates = [Image.open(corpus.root / p.file).convert("RGB") for p in corpus.plates]
    rng = random.Random(11)
    found = {"small": [0, 0], "large": [0, 0]}
    for _ in range(40):
        k = rng.randrange(len(plates))
        area = rng.uniform(0.2, 1.0)
        crop = random_crop(rng, plates[k], area)
        scale = rng.uniform(0.3, 3.0)
        crop = crop.resize(
            (max(8, round(crop.width * scale)), max(8, round(crop.height * scale))),
            Image.Resampling.BICUBIC,
        )
        hits = search.search(encoded(crop, rng.randint(50, 95)), 1)
        bucket = found["small" if area < 0.5 else "large"]
        bucket[0] += bool(hits) and hits[0].link == corpus.plates[k].page_url
        bucket[1] += 1
    rates = {name: hit / total for name, (hit, total) in found.items()}
    print(f"\nimage index rank-1 rate (crop area 20-50% / 50-100%): {rates}")
    assert rates["small"] >= 0.85 and rates["large"] >= 0.9


def test_unindexed_images_find_nothing(corpus: Corpus) -> None:
    search = LocalImageSearch(corpus.image_index_path)
    stranger = CorpusSpec(seed=12345)
    found = [search.search(encoded(paint_plate(stranger, i), 90), 5) for i in range(12)]
    print(f"\nunindexed images with a result: {sum(bool(f) for f in found)} of {len(found)}")
    assert sum(bool(f) for f in found) <= 1


def test_unreadable_and_tiny_images_are_the_callers_problem(corpus: Corpus) -> None:
    search = LocalImageSearch(corpus.image_index_path)
    with pytest.raises(ToolArgumentsError, match="could not be read"):
        search.search(b"not an image", 3)
    with pytest.raises(ToolArgumentsError, match="too small"):
        search.search(encoded(Image.new("RGB", (5, 40)), 90), 3)


def test_flat_images_match_nothing(corpus: Corpus) -> None:
    search = LocalImageSearch(corpus.image_index_path)
    assert search.search(encoded(Image.new("RGB", (200, 200), (120, 30, 30)), 90), 3) == []
