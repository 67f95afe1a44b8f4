"""Safe image decoding and the model's view of an image.

Input images are untrusted bytes from a corpus: they may be empty, truncated, corrupt,
decompression bombs, or in any of Pillow's modes. ``load_image`` turns them into a fully
decoded RGB image or raises one ``ImageError`` subclass whose ``error_class`` becomes the
failure row's class, so bad input ends as a clear dead-letter row (docs/formats.md, "Failure rows").

``model_view`` is the downscale the model sees (Qwen3-VL style: sides multiples of 32). The
embedded tiny model was trained on views made by this function, so its arithmetic and its
resampling filter must not change without retraining it. Tools always work on the original.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tools import png

#: Default decompression-bomb limit (pixels); Pillow's own warning threshold, which we also
#: treat as an error, caps it in any case.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485

#: Qwen3-VL's patch grid: the view's sides are multiples of this.
VIEW_FACTOR = 32

#: What partially transparent images are composited onto.
BACKGROUND = (255, 255, 255)

#: The only chunks a plain stored PNG holds.
_PLAIN_CHUNKS = (b"IHDR", b"IDAT", b"IEND")

#: The EXIF tag that says how the stored pixels must be turned to stand upright.
EXIF_ORIENTATION = 0x0112

#: zlib level of stored PNGs: level 1 encodes a 1 MP photo-like view ~6x faster than Pillow's
#: default 6 (87 vs 575 ms of CPU) for ~16 % more bytes, on the path of every job.
PNG_COMPRESS_LEVEL = 1


class ImageError(ValueError):
    """An image that cannot be used; ``error_class`` says why (for failure rows)."""

    error_class = "image_error"


class ImageEmptyError(ImageError):
    error_class = "image_empty"


class ImageCorruptError(ImageError):
    error_class = "image_corrupt"


class ImageTruncatedError(ImageError):
    error_class = "image_truncated"


class ImageTooLargeError(ImageError):
    error_class = "image_too_large"


class ImageUnsupportedError(ImageError):
    error_class = "image_unsupported"


# Formats Pillow cannot read but that are real images: "unsupported", not "corrupt".
_UNSUPPORTED_SIGNATURES = (
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"%PDF", "PDF"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "SVG/XML"),
)


def _unsupported_format(data: bytes) -> str | None:
    head = data[:64].lstrip()
    for offset, signature, name in _UNSUPPORTED_SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return name
    return None


def load_image(data: bytes, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode image bytes into a fully loaded RGB image, upright (EXIF orientation applied).

    Animated images give their first frame; transparency is composited on white; 16-bit and
    float greyscale is scaled to 8 bits. Raises an ``ImageError`` subclass on bad input.
    """
    if not data:
        raise ImageEmptyError("the image file is empty (0 bytes)")
    with warnings.catch_warnings():
        # Pillow warns (rather than raises) between its limit and twice its limit: a bomb is
        # a bomb either way. Not thread-safe in 3.11, but only ever tightens the filter.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageTooLargeError(f"decompression bomb: {e}") from None
        except UnidentifiedImageError:
            kind = _unsupported_format(data)
            if kind:
                raise ImageUnsupportedError(f"{kind} images are not supported") from None
            raise ImageCorruptError("not a readable image (unknown or damaged format)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise _decode_error(e) from None

        width, height = image.size
        if width <= 0 or height <= 0:
            raise ImageCorruptError(f"the image declares an empty size {width}x{height}")
        if width * height > max_image_pixels:
            raise ImageTooLargeError(
                f"{width}x{height} = {width * height} pixels exceeds the limit of "
                f"{max_image_pixels}"
            )
        try:
            image.seek(0)  # first frame of animations and multi-page files
            _decode(image)
            rgb = _to_rgb(_upright(image))
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageTooLargeError(f"decompression bomb: {e}") from None
        except MemoryError:
            raise ImageTooLargeError(f"{width}x{height} does not fit in memory") from None
        except Exception as e:  # Pillow's plugins raise many types on bad data
            raise _decode_error(e) from None
    rgb.info = {}  # no metadata (EXIF, ICC, comments) travels into encoded views
    return rgb


def _decode_error(error: Exception) -> ImageError:
    # Pillow reports a short file as OSError("image file is truncated ...") when decoding, or
    # "Truncated File Read" when the cut falls inside the headers; anything else is damage.
    if "truncated" in str(error).lower():
        return ImageTruncatedError(f"the image file is truncated: {error}")
    return ImageCorruptError(f"cannot decode the image: {error}")


def _decode(image: Image.Image) -> None:
    # Force a full decode now: Pillow is lazy, and a truncated file would otherwise fail much
    # later. (This relies on ImageFile.LOAD_TRUNCATED_IMAGES staying False, Pillow's default:
    # with it set, truncated files come back silently grey. Nothing in the project sets it.)
    image.load()


def _upright(image: Image.Image) -> Image.Image:
    try:
        if image.getexif().get(EXIF_ORIENTATION, 1) in (1, None):
            return image  # exif_transpose would return a full-size copy that changes nothing
        return ImageOps.exif_transpose(image) or image
    except Exception:
        # A damaged EXIF block should not lose an otherwise good image; keep it as stored.
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image  # freshly decoded (or transposed) by load_image: already its own pixels
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _deep_to_rgb(image)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        "transparency" in image.info and mode in ("P", "L", "RGB", "1")
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")  # 1, L, P, CMYK, YCbCr, HSV
    except ValueError as e:
        raise ImageUnsupportedError(f"cannot convert mode {mode} to RGB: {e}") from None


def _deep_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale to 8 bits, scaled rather than clipped."""
    values = np.asarray(image)
    if values.dtype.kind == "f":
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if lo >= 0.0 and hi <= 1.0:
            lo, hi = 0.0, 1.0  # a normalised float image
        scaled = (np.nan_to_num(values, nan=lo) - lo) / max(hi - lo, 1e-12) * 255.0
    else:
        values = values.astype(np.int64)
        lo, hi = int(values.min()), int(values.max())
        if image.mode.startswith("I;16") or (lo >= 0 and hi <= 65535):
            # 16-bit data (also 16-bit PNGs that Pillow opens as "I"): full range to 0..255.
            scaled = values / 257.0
        else:
            scaled = (values - lo) / max(hi - lo, 1) * 255.0
    grey = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    return grey.convert("RGB")


def view_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The (width, height) of the model view of a ``width`` x ``height`` image.

    Sides are multiples of 32, at least 32; the aspect ratio is kept as far as the grid
    allows; the area is at most ``max_pixels``; the view is never larger than the original
    on a side except to reach the 32-pixel minimum (unlike Qwen's ``smart_resize``, which
    rounds up: the pipeline never resends an image larger than needed).
    """
    f = VIEW_FACTOR
    if max_pixels < f * f:
        raise ValueError(f"max_pixels must be at least {f * f}, got {max_pixels}")
    if width < 1 or height < 1:
        raise ValueError(f"empty image {width}x{height}")
    w, h = max(f, width // f * f), max(f, height // f * f)
    if w * h > max_pixels:
        beta = math.sqrt(width * height / max_pixels)
        # The epsilon keeps exact ratios exact (1536 / 12.0 / 32 must floor to 4, not 3).
        w = max(f, math.floor(width / beta / f + 1e-9) * f)
        h = max(f, math.floor(height / beta / f + 1e-9) * f)
        # A side held at the 32 minimum (very thin images) leaves the other side too long.
        if w * h > max_pixels:
            if h == f:
                w = max(f, max_pixels // h // f * f)
            elif w == f:
                h = max(f, max_pixels // w // f * f)
        while w * h > max_pixels:  # float rounding at the boundary: shrink the longer side
            if w >= h:
                w -= f
            else:
                h -= f
    return w, h


def model_view(image: Image.Image, max_pixels: int) -> Image.Image:
    """The downscaled view of ``image`` the model sees (see ``view_size``); BICUBIC, fixed."""
    size = view_size(image.width, image.height, max_pixels)
    view = image.copy() if size == image.size else image.resize(size, Image.Resampling.BICUBIC)
    view.info = {}
    return view


def encode_png(image: Image.Image) -> bytes:
    """Deterministic PNG bytes (no metadata), the storage format of views and tool images."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def is_plain_png(data: bytes) -> bool:
    """Whether ``data`` is already a plain stored PNG: 8-bit RGB, not interlaced, and nothing
    but sound IHDR, IDAT and IEND chunks (no metadata). Such tool output is stored as it came
    (`stored_png`), sparing a re-encode of every crop; the pixels are the same either way."""
    if len(data) < 33 or not data.startswith(png.SIGNATURE) or data[12:16] != b"IHDR":
        return False
    if data[24:29] != bytes((8, 2, 0, 0, 0)):  # depth 8, RGB, deflate, adaptive, no interlace
        return False
    try:
        return all(kind in _PLAIN_CHUNKS for _, kind, _ in png.chunks(data))
    except png.PngStructureError:
        return False


def stored_png(data: bytes, image: Image.Image) -> bytes:
    """The bytes stored for a tool's PNG ``data``, which ``load_image`` decoded as ``image``:
    ``data`` itself when it is plain (`is_plain_png`), else ``image`` re-encoded."""
    return data if is_plain_png(data) else encode_png(image)


def sha256_hex(data: bytes) -> str:
    """The content address of stored bytes (``images/<sha256>.png``)."""
    return hashlib.sha256(data).hexdigest()
