"""Storing images content-addressed: a full-resolution PNG and the model's view of it.

Shared by `PrepareImages` (the job image's view) and `ExecuteTools` (tool outputs and their
views). Every stored image is `images/<sha256 of its PNG bytes>.png`, written once.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from beam_pipelines.agent.images import (
    encode_png,
    load_image,
    model_view,
    sha256_hex,
    stored_png,
)
from beam_pipelines.agent.records import ImageRef
from beam_pipelines.io.files import write_once
from beam_pipelines.outputs.layout import OutputLayout


@dataclass(frozen=True)
class ImageStore:
    """Where images go and the model's pixel budget."""

    layout: OutputLayout
    max_pixels: int

    def put_png(self, png: bytes, width: int, height: int) -> ImageRef:
        """Store PNG bytes (once) and return their reference."""
        sha = sha256_hex(png)
        uri = self.layout.image_uri(sha)
        write_once(uri, png)
        return ImageRef(uri=uri, sha256=sha, width=width, height=height)

    def put_view(self, image: Image.Image) -> ImageRef:
        """Store the model's view of a decoded image."""
        view = model_view(image, self.max_pixels)
        return self.put_png(encode_png(view), view.width, view.height)

    def put_tool_image(self, png: bytes) -> tuple[ImageRef, ImageRef]:
        """Store a tool's full-resolution PNG output and its view; both references.

        The bytes are decoded with the safe loader first, so a tool cannot smuggle a bomb or
        a corrupt file into the trace; `ImageError` propagates to the caller.
        """
        image = load_image(png)
        # Stored as plain RGB without metadata: as it came if it already is (`stored_png`).
        full = self.put_png(stored_png(png, image), image.width, image.height)
        return full, self.put_view(image)
