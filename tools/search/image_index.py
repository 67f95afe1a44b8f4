"""Offline reverse image search: multi-scale perceptual hashes, verified by colour correlation.

Indexing (``build_image_index``): every image is hashed (imagehash's 64-bit pHash) over a
pyramid of windows, at 100 %, 70 %, 50 % and 35 % of its width and of its height (aspect ratios
within about 2:1 of each other) and a stride of a quarter window, about 300 windows an image;
a 96-pixel colour thumbnail is kept for verification.

Search (``LocalImageSearch.search``), two stages:

1. *Shortlist.* The query is hashed over six windows of its own (the whole, the centre, the
   four corner regions at 70 %); each indexed image scores the mean, over the query windows,
   of its nearest window's Hamming distance. A crop of an indexed image has several windows
   that line up with index windows, so the true image scores low even when one window misses;
   the ``shortlist`` best images go on.
2. *Verification.* For each of them, the query is matched against the thumbnail by normalised
   cross-correlation of the three colour channels, over every position and a sweep of scales
   (the query spanning 30 %–100 % of the thumbnail's width or height). The best correlation is
   the image's score; images below ``min_score`` are dropped (an unknown image finds nothing),
   the rest are returned best first.

Robustness on the default corpus (measured by ``tests/tools/search/test_image_index.py``,
recorded in ``docs/tools.md``): crops down to a fifth of the area, rescaled 0.3–3×, re-encoded
as JPEG, are found at rank 1, and unindexed images are rejected.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from numpy.fft import irfft2, rfft2
from PIL import Image

from tools.base import ToolArgumentsError, ToolUnavailableError
from tools.search.results import ImageHit

HASH_SIDE = 256  # images are hashed from a grey copy this long on its longer side
THUMB_SIDE = 96
WINDOW_FRACTIONS = (1.0, 0.7, 0.5, 0.35)
WINDOW_STRIDE = 0.25
MAX_ASPECT_LOG = 0.75
QUERY_WINDOWS = (
    (0.0, 0.0, 1.0, 1.0),
    (0.1, 0.1, 0.9, 0.9),
    (0.0, 0.0, 0.7, 0.7),
    (0.3, 0.0, 1.0, 0.7),
    (0.0, 0.3, 0.7, 1.0),
    (0.3, 0.3, 1.0, 1.0),
)
SCALE_SWEEP = tuple(float(f) for f in np.geomspace(0.3, 1.0, 12))
MIN_TEMPLATE = 6
MIN_QUERY_SIDE = 8
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class IndexedImage:
    """What a match returns about an indexed image."""

    title: str
    image_url: str
    page_url: str


def windows(width: float, height: float) -> list[tuple[float, float, float, float]]:
    """The index windows of an image (boxes in its pixels)."""
    boxes = []
    for fw in WINDOW_FRACTIONS:
        for fh in WINDOW_FRACTIONS:
            if abs(np.log(fw / fh)) > MAX_ASPECT_LOG:
                continue
            w, h = fw * width, fh * height
            nx = 1 if fw >= 1 else int(np.ceil((1 - fw) / (fw * WINDOW_STRIDE) - 1e-9)) + 1
            ny = 1 if fh >= 1 else int(np.ceil((1 - fh) / (fh * WINDOW_STRIDE) - 1e-9)) + 1
            for i in range(nx):
                for j in range(ny):
                    x = 0.0 if nx == 1 else (width - w) * i / (nx - 1)
                    y = 0.0 if ny == 1 else (height - h) * j / (ny - 1)
                    boxes.append((x, y, x + w, y + h))
    return boxes


def _grey(image: Image.Image) -> Image.Image:
    grey = image.convert("L")
    scale = HASH_SIDE / max(grey.size)
    if scale < 1:
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.LANCZOS)
    return grey


def _hash(image: Image.Image) -> np.uint64:
    bits = imagehash.phash(image).hash.reshape(-1)
    return np.packbits(bits).view(">u8")[0].astype(np.uint64)


def _crop(image: Image.Image, box: Sequence[float]) -> Image.Image:
    left, top, right, bottom = (round(v) for v in box)
    return image.crop((left, top, max(right, left + 1), max(bottom, top + 1)))


def window_hashes(image: Image.Image) -> np.ndarray:
    """pHashes of every index window of ``image`` (uint64)."""
    grey = _grey(image)
    return np.array([_hash(_crop(grey, b)) for b in windows(*grey.size)], dtype=np.uint64)


def query_hashes(image: Image.Image) -> np.ndarray:
    """pHashes of the query's own windows (``QUERY_WINDOWS``)."""
    grey = _grey(image)
    w, h = grey.size
    boxes = [(x1 * w, y1 * h, x2 * w, y2 * h) for x1, y1, x2, y2 in QUERY_WINDOWS]
    return np.array([_hash(_crop(grey, b)) for b in boxes], dtype=np.uint64)


def thumbnail(image: Image.Image, side: int = THUMB_SIDE) -> np.ndarray:
    """The image as float RGB, ``side`` pixels on its longer side (box-filtered)."""
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return np.asarray(image.convert("RGB").resize(size, Image.Resampling.BOX), dtype=np.float64)


def build_image_index(images: Iterable[tuple[object, Image.Image]], path: str | Path) -> None:
    """Index ``(record, picture)`` pairs (records with ``title``, ``image_url``, ``page_url``)."""
    hashes, owners, thumbs, meta = [], [], [], []
    for number, (record, picture) in enumerate(images):
        found = window_hashes(picture)
        hashes.append(found)
        owners.append(np.full(len(found), number, dtype=np.int32))
        thumbs.append(thumbnail(picture).astype(np.uint8))
        meta.append(
            {
                "title": record.title,  # type: ignore[attr-defined]
                "image_url": record.image_url,  # type: ignore[attr-defined]
                "page_url": record.page_url,  # type: ignore[attr-defined]
            }
        )
    padded = np.zeros((len(thumbs), THUMB_SIDE, THUMB_SIDE, 3), dtype=np.uint8)
    sizes = np.zeros((len(thumbs), 2), dtype=np.int32)
    for i, thumb in enumerate(thumbs):
        padded[i, : thumb.shape[0], : thumb.shape[1]] = thumb
        sizes[i] = thumb.shape[:2]
    with Path(path).open("wb") as out:
        np.savez_compressed(
            out,
            hashes=np.concatenate(hashes) if hashes else np.zeros(0, np.uint64),
            owners=np.concatenate(owners) if owners else np.zeros(0, np.int32),
            thumbs=padded,
            sizes=sizes,
            meta=np.array(json.dumps(meta)),
        )


class _Thumb:
    """A thumbnail prepared for correlation: channel FFTs and integral images."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.shape = pixels.shape[:2]
        channels = np.moveaxis(pixels, 2, 0)
        self.spectrum = rfft2(channels)
        self.sums = np.pad(channels, ((0, 0), (1, 0), (1, 0))).cumsum(1).cumsum(2)
        self.squares = np.pad(channels**2, ((0, 0), (1, 0), (1, 0))).cumsum(1).cumsum(2)

    def correlation(self, template: np.ndarray) -> float:
        """Best normalised cross-correlation of ``template`` (h, w, 3) over all positions."""
        big_h, big_w = self.shape
        h, w = template.shape[:2]
        if h > big_h or w > big_w:
            return -1.0
        centred = np.moveaxis(template - template.mean(axis=(0, 1)), 2, 0)
        norm = float(np.sqrt((centred**2).sum()))
        if norm < 1e-6:  # a flat template correlates with nothing
            return -1.0
        product = (self.spectrum * np.conj(rfft2(centred, s=(big_h, big_w)))).sum(0)
        corr = irfft2(product, s=(big_h, big_w))[: big_h - h + 1, : big_w - w + 1]
        sums = _box(self.sums, h, w)
        variance = (_box(self.squares, h, w) - sums**2 / (h * w)).sum(0)
        score = corr / (np.sqrt(np.maximum(variance, 1e-6)) * norm)
        return float(score.max())


def _box(table: np.ndarray, h: int, w: int) -> np.ndarray:
    return table[:, h:, w:] - table[:, :-h, w:] - table[:, h:, :-w] + table[:, :-h, :-w]


class LocalImageSearch:
    """``ImageSearchProvider`` over an ``images.npz`` index (see the module docstring).

    Loaded on first use and shared by the threads of a pool; pickles without the loaded index.
    """

    name = "offline"

    def __init__(
        self,
        index_path: str | Path,
        *,
        min_score: float = 0.85,
        shortlist: int = 8,
        max_image_pixels: int = 64_000_000,
    ) -> None:
        self.index_path = Path(index_path)
        if not self.index_path.is_file():
            raise ToolUnavailableError(f"no image index at {self.index_path}")
        self.min_score = min_score
        self.shortlist = shortlist
        self.max_image_pixels = max_image_pixels
        self._lock = threading.Lock()
        self._loaded: tuple[np.ndarray, np.ndarray, list[_Thumb], list[IndexedImage]] | None = None

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_lock"] = None
        state["_loaded"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _index(self) -> tuple[np.ndarray, np.ndarray, list[_Thumb], list[IndexedImage]]:
        with self._lock:
            if self._loaded is None:
                with np.load(self.index_path) as data:
                    thumbs = [
                        _Thumb(data["thumbs"][i, :h, :w].astype(np.float64))
                        for i, (h, w) in enumerate(data["sizes"])
                    ]
                    meta = [IndexedImage(**m) for m in json.loads(str(data["meta"]))]
                    self._loaded = (data["hashes"], data["owners"], thumbs, meta)
            return self._loaded

    def __len__(self) -> int:
        return len(self._index()[3])

    def search(self, image: bytes, limit: int) -> list[ImageHit]:
        return [
            ImageHit(title=m.title, source=m.image_url, link=m.page_url)
            for m, _ in self.matches(self.decode(image))[:limit]
        ]

    def decode(self, data: bytes) -> Image.Image:
        """The query image, refused (for the model) when unreadable, tiny or huge."""
        try:
            with Image.open(io.BytesIO(data)) as probe:
                if probe.width * probe.height > self.max_image_pixels:
                    raise ToolArgumentsError(
                        f"The image is too large to search ({probe.width}x{probe.height})."
                    )
                picture = probe.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise ToolArgumentsError(f"The image could not be read: {error}") from error
        if min(picture.size) < MIN_QUERY_SIDE:
            raise ToolArgumentsError(
                f"The image is too small to search ({picture.width}x{picture.height} pixels); "
                f"crop a region at least {MIN_QUERY_SIDE} pixels on each side."
            )
        return picture

    def matches(self, picture: Image.Image) -> list[tuple[IndexedImage, float]]:
        """Indexed images that ``picture`` shows (or is a crop of), best first, with scores."""
        return [m for m in self.scores(picture) if m[1] >= self.min_score]

    def scores(self, picture: Image.Image) -> list[tuple[IndexedImage, float]]:
        """The shortlisted images with their verification scores, best first (no threshold)."""
        hashes, owners, thumbs, meta = self._index()
        if not meta:
            return []
        distance = np.zeros(len(meta))
        for query in query_hashes(picture):
            bits = _POPCOUNT[(hashes ^ query).view(np.uint8)].reshape(-1, 8).sum(1)
            nearest = np.full(len(meta), 64, dtype=np.int64)
            np.minimum.at(nearest, owners, bits)
            distance += nearest
        candidates = np.argsort(distance, kind="stable")[: self.shortlist]
        templates: dict[tuple[int, int], np.ndarray] = {}
        scored = []
        for k in candidates:
            scored.append((meta[k], self._verify(picture, thumbs[k], templates)))
        scored.sort(key=lambda m: -m[1])
        return scored

    @staticmethod
    def _verify(
        picture: Image.Image, thumb: _Thumb, templates: dict[tuple[int, int], np.ndarray]
    ) -> float:
        big_h, big_w = thumb.shape
        aspect = picture.width / picture.height
        best = -1.0
        for fraction in SCALE_SWEEP:
            for w, h in (
                (fraction * big_w, fraction * big_w / aspect),
                (fraction * big_h * aspect, fraction * big_h),
            ):
                size = (round(w), round(h))
                if min(size) < MIN_TEMPLATE or size[0] > big_w or size[1] > big_h:
                    continue
                if size not in templates:
                    templates[size] = np.asarray(
                        picture.resize(size, Image.Resampling.BOX), dtype=np.float64
                    )
                best = max(best, thumb.correlation(templates[size]))
        return best
