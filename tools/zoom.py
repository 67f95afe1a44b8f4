"""``image_zoom_in_tool``: crop a box of the full-resolution original and enlarge it.

The DeepEyes / Qwen function-calling zoom: ``{"bbox_2d": [x1, y1, x2, y2], "label"?: str}``.
The coordinate convention is a setting, stated in the tool's description so the model knows it:

- ``"relative"`` (Qwen3-VL grounding): integers 0..1000 on both axes of the image;
- ``"absolute"`` (Qwen2.5-VL / DeepEyes): pixels of the image *as the model was shown it*
  (``ToolContext.view_size``; the original's own pixels when that is not given).

In a multi-image job the tool also takes ``image_index`` (0 for the first image shown, the
default), and its description says so; a single-image job's header is unchanged.

The box is mapped onto the original, clamped to it, widened around its centre to at least
``min_side`` pixels per side, cropped, and enlarged so that its longer side reaches
``target_side`` (by at most ``max_upscale``; a crop already that large is returned as is: the
model view downscales it later). It runs in-process: no model code is executed, and the
original's size is checked before it is decoded.
"""

from __future__ import annotations

import io
import math
from typing import Any

from PIL import Image

from tools.base import Tool, ToolArgumentsError, ToolContext, ToolExecutionError, ToolResult
from tools.sandbox_runner import open_original

COORDINATES = ("relative", "absolute")
RELATIVE_SCALE = 1000

_BOX_TEXT = {
    "relative": (
        "relative coordinates: integers from 0 to 1000 on both axes, where [0, 0] is the "
        "top-left and [1000, 1000] the bottom-right corner of the image"
    ),
    "absolute": (
        "absolute pixel coordinates in the image as it is shown to you, where [0, 0] is the "
        "top-left corner"
    ),
}


def _description(coordinates: str) -> str:
    return (
        "Zoom in on a region of the image by cropping it to a bounding box and return the "
        f"enlarged crop. The box uses {_BOX_TEXT[coordinates]}."
    )


def _parameters(coordinates: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "bbox_2d": {
                "type": "array",
                "items": {"type": "number"},
                "minItems": 4,
                "maxItems": 4,
                "description": (
                    "The region as [x1, y1, x2, y2]: (x1, y1) is its top-left and (x2, y2) "
                    f"its bottom-right corner, in {coordinates} coordinates."
                ),
            },
            "label": {
                "type": "string",
                "description": "The name of the object in the region (optional).",
            },
        },
        "required": ["bbox_2d"],
        "additionalProperties": False,
    }


def _image_index(images: int) -> dict[str, Any]:
    return {
        "type": "integer",
        "minimum": 0,
        "maximum": images - 1,
        "description": (
            "Which image to zoom in on: 0 for the first image shown, 1 for the second, and so "
            "on (default 0)."
        ),
    }


class ZoomTool(Tool):
    """Crop-and-enlarge on the full-resolution original (see the module docstring).

    The declared header is the default ``relative`` one; an ``absolute`` tool states its
    convention in its own description and schema.
    """

    name = "image_zoom_in_tool"
    title = "Image zoom"
    description = _description("relative")
    parameters = _parameters("relative")
    kind = "cpu"

    def __init__(
        self,
        *,
        coordinates: str = "relative",
        target_side: int = 512,
        max_upscale: float = 4.0,
        min_side: int = 28,
        max_image_pixels: int = 64_000_000,
    ) -> None:
        if coordinates not in COORDINATES:
            raise ValueError(f"coordinates must be one of {COORDINATES}, not {coordinates!r}")
        if target_side < 1 or min_side < 1 or max_upscale < 1 or max_image_pixels < 1:
            raise ValueError("target_side, min_side, max_image_pixels >= 1 and max_upscale >= 1")
        self.coordinates = coordinates
        self.target_side = target_side
        self.max_upscale = max_upscale
        self.min_side = min_side
        self.max_image_pixels = max_image_pixels
        self.description = _description(coordinates)
        self.parameters = _parameters(coordinates)

    def description_for(self, images: int) -> str:
        if images == 1:
            return self.description
        return (
            f"{self.description} There are {images} images: image_index chooses the one to "
            "zoom in on (0 is the first)."
        )

    def parameters_for(self, images: int) -> dict[str, Any]:
        if images == 1:
            return self.parameters
        properties = {**self.parameters["properties"], "image_index": _image_index(images)}
        return {**self.parameters, "properties": properties}

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        index = int(arguments.get("image_index", 0))  # 2.0 is an integer in JSON
        if not 0 <= index < len(context.images):
            count = len(context.images)
            return ToolResult.failure(
                ToolArgumentsError(
                    f"image_index {index} does not name an image: there "
                    + (f"are {count} images, 0 to {count - 1}." if count > 1 else "is one, 0.")
                )
            )
        try:
            image = open_original(context.images[index], self.max_image_pixels)
            box = self.crop_box(arguments["bbox_2d"], image.size, context.view_size_of(index))
            crop = image.crop(box)
            crop = self.enlarge(crop)
        except ToolArgumentsError as error:
            return ToolResult.failure(error)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            return ToolResult.failure(ToolExecutionError(f"The image could not be zoomed: {error}"))
        buffer = io.BytesIO()
        crop.save(buffer, format="PNG", compress_level=1)
        return ToolResult(text="", images=(buffer.getvalue(),))

    def crop_box(
        self,
        bbox: list[float],
        size: tuple[int, int],
        view_size: tuple[int, int] | None = None,
    ) -> tuple[int, int, int, int]:
        """The box in the original's pixels: mapped, clamped, at least ``min_side`` a side."""
        width, height = size
        x1, y1, x2, y2 = (float(v) for v in bbox)
        if x1 > x2 or y1 > y2:
            raise ToolArgumentsError(
                f"bbox_2d {_show(bbox)} is not [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2: "
                "give the top-left corner first, then the bottom-right corner."
            )
        if self.coordinates == "relative":
            scale_x, scale_y = width / RELATIVE_SCALE, height / RELATIVE_SCALE
            frame = f"[0, 0, {RELATIVE_SCALE}, {RELATIVE_SCALE}]"
        else:
            view_w, view_h = view_size or size
            scale_x, scale_y = width / view_w, height / view_h
            frame = f"[0, 0, {view_w}, {view_h}]"
        left, right = _clamp_span(x1 * scale_x, x2 * scale_x, width)
        top, bottom = _clamp_span(y1 * scale_y, y2 * scale_y, height)
        if left is None or top is None:
            raise ToolArgumentsError(
                f"bbox_2d {_show(bbox)} lies outside the image, which spans {frame} in "
                f"{self.coordinates} coordinates."
            )
        left, right = _widen(left, right, self.min_side, width)
        top, bottom = _widen(top, bottom, self.min_side, height)
        return (
            math.floor(left),
            math.floor(top),
            min(math.ceil(right), width),
            min(math.ceil(bottom), height),
        )

    def enlarge(self, crop: Image.Image) -> Image.Image:
        """Upscale so the longer side reaches ``target_side``, by at most ``max_upscale``."""
        longer = max(crop.size)
        if longer >= self.target_side:
            return crop
        scale = min(self.target_side / longer, self.max_upscale)
        size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
        return crop.resize(size, Image.Resampling.BICUBIC)


def _clamp_span(low: float, high: float, limit: int) -> tuple[float, float] | tuple[None, None]:
    """The span clamped to [0, limit]; (None, None) when it lies entirely outside."""
    if high < 0 or low > limit or (high == low and (high <= 0 or low >= limit)):
        return None, None
    return max(low, 0.0), min(high, float(limit))


def _widen(low: float, high: float, minimum: int, limit: int) -> tuple[float, float]:
    """Grow the span around its centre to ``minimum`` (or the whole axis), inside [0, limit]."""
    need = min(minimum, limit)
    if high - low >= need:
        return low, high
    centre = (low + high) / 2
    low, high = centre - need / 2, centre + need / 2
    if low < 0:
        low, high = 0.0, float(need)
    elif high > limit:
        low, high = float(limit - need), float(limit)
    return low, high


def _show(bbox: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in bbox) + "]"
