"""Images the report shows, copied next to its pages and referenced by relative paths.

Pages never inline image bytes: each image is written once under `<report>/assets/`, named by
the SHA-256 its trace gives it, so the report opens from a file system or an object store's
static hosting. A stored tool image (PNG, already decoded and re-encoded by the pipeline) is
copied byte for byte when it is small; anything larger, and every job image (whose EXIF
orientation the pipeline applied before measuring it), is decoded with the pipeline's safe
loader and written as a JPEG of at most `max_side` pixels a side.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field

from beam_pipelines.agent.images import ImageError, load_image, sha256_hex
from beam_pipelines.agent.records import ImageRef
from beam_pipelines.io.files import join, read_bytes, write_bytes

log = logging.getLogger(__name__)

ASSETS = "assets"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEX = re.compile(r"^[0-9a-f]{16,64}$")


@dataclass
class ImageCopier:
    """Copies images into `<report_dir>/assets/` once each; returns paths relative to it."""

    report_dir: str
    max_side: int = 1600
    max_copy_bytes: int = 2 << 20
    jpeg_quality: int = 85
    _done: dict[str, str | None] = field(default_factory=dict)
    copied: int = 0

    def copy(self, ref: ImageRef, *, reencode: bool = False) -> str | None:
        """The image's path relative to the report folder, or None when it cannot be read.

        `reencode` forces the decode-and-downscale path (used for job images).
        """
        key = ref.sha256 if _HEX.match(ref.sha256 or "") else None
        memo = f"{key or ref.uri}:{reencode}"
        if memo in self._done:
            return self._done[memo]
        path = self._copy(ref, key, reencode)
        self._done[memo] = path
        return path

    def _copy(self, ref: ImageRef, key: str | None, reencode: bool) -> str | None:
        try:
            data = read_bytes(ref.uri)
        except Exception as e:  # any storage error means "not shown", never a failed report
            log.warning("report: cannot read image %s: %s", ref.uri, e)
            return None
        name = key or sha256_hex(data)
        small = max(ref.width, ref.height) <= self.max_side and len(data) <= self.max_copy_bytes
        if not reencode and small and data.startswith(PNG_SIGNATURE):
            relative = f"{ASSETS}/{name}.png"
            write_bytes(join(self.report_dir, ASSETS, f"{name}.png"), data)
            self.copied += 1
            return relative
        try:
            image = load_image(data)
        except ImageError as e:
            log.warning("report: cannot decode image %s: %s", ref.uri, e)
            return None
        image.thumbnail((self.max_side, self.max_side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self.jpeg_quality)
        relative = f"{ASSETS}/{name}.jpg"
        write_bytes(join(self.report_dir, ASSETS, f"{name}.jpg"), buffer.getvalue())
        self.copied += 1
        return relative
