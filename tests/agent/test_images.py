"""Safe image loading over a zoo of awkward files, and the model's view."""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from beam_pipelines.agent.images import (
    ImageCorruptError,
    ImageEmptyError,
    ImageError,
    ImageTooLargeError,
    ImageTruncatedError,
    ImageUnsupportedError,
    encode_png,
    is_plain_png,
    load_image,
    model_view,
    sha256_hex,
    stored_png,
    view_size,
)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noisy(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` but carries (almost) no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def close(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


# -- failures, each with its own class ------------------------------------------------------


def test_zero_byte_file() -> None:
    with pytest.raises(ImageEmptyError) as e:
        load_image(b"")
    assert e.value.error_class == "image_empty"


def test_truncated_jpeg() -> None:
    data = encode(noisy(256, 256), "JPEG", quality=90)
    with pytest.raises(ImageTruncatedError) as e:
        load_image(data[: len(data) * 6 // 10])
    assert e.value.error_class == "image_truncated"


def test_jpeg_cut_inside_its_headers_is_truncated_too() -> None:
    data = encode(noisy(64, 64), "JPEG")
    with pytest.raises(ImageTruncatedError):
        load_image(data[:300])


def test_truncated_png() -> None:
    data = encode(noisy(256, 256), "PNG")
    with pytest.raises(ImageTruncatedError):
        load_image(data[: len(data) // 2])


def test_png_decompression_bomb_with_huge_declared_size() -> None:
    with pytest.raises(ImageTooLargeError) as e:
        load_image(png_with_size(100_000, 100_000))
    assert e.value.error_class == "image_too_large"


def test_pillow_bomb_warning_is_an_error_too() -> None:
    # 10000 x 10000 is between Pillow's warning and error thresholds.
    with pytest.raises(ImageTooLargeError):
        load_image(png_with_size(10_000, 10_000), max_image_pixels=10**12)


def test_bomb_limit_is_configurable() -> None:
    data = encode(Image.new("RGB", (2000, 1000)), "PNG")
    assert load_image(data).size == (2000, 1000)
    with pytest.raises(ImageTooLargeError, match="2000000 pixels"):
        load_image(data, max_image_pixels=1_000_000)


def test_garbage_is_corrupt() -> None:
    with pytest.raises(ImageCorruptError) as e:
        load_image(b"this is not an image" * 10)
    assert e.value.error_class == "image_corrupt"


def test_damaged_png_data_is_corrupt() -> None:
    data = bytearray(encode(noisy(64, 64), "PNG"))
    start = data.index(b"IDAT") + 8
    data[start : start + 200] = b"\xff" * 200
    with pytest.raises(ImageError) as e:
        load_image(bytes(data))
    assert e.value.error_class in ("image_corrupt", "image_truncated")


def test_known_but_unsupported_formats() -> None:
    with pytest.raises(ImageUnsupportedError) as e:
        load_image(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 100)
    assert e.value.error_class == "image_unsupported"
    with pytest.raises(ImageUnsupportedError):
        load_image(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>')


def test_error_classes_are_distinct_image_errors() -> None:
    classes = [
        ImageEmptyError,
        ImageCorruptError,
        ImageTruncatedError,
        ImageTooLargeError,
        ImageUnsupportedError,
    ]
    assert all(issubclass(c, ImageError) for c in classes)
    assert len({c.error_class for c in classes}) == len(classes)


# -- awkward files that must load -----------------------------------------------------------


def test_cmyk_jpeg() -> None:
    image = load_image(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"))
    assert image.mode == "RGB"
    assert close(image.getpixel((8, 8)), RED)


def test_16_bit_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    image = load_image(data)
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_float_tiff_is_scaled() -> None:
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    image = load_image(encode(Image.fromarray(values, mode="F"), "TIFF"))
    assert [image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_palette_png_with_transparency_is_composited_on_white() -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, *RED])
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    image = load_image(encode(palette, "PNG", transparency=0))
    assert image.getpixel((0, 0)) == WHITE
    assert image.getpixel((1, 0)) == RED


@pytest.mark.parametrize(
    ("mode", "color", "expected"),
    [
        ("RGBA", (0, 0, 255, 0), WHITE),
        ("RGBA", (0, 0, 255, 255), BLUE),
        ("RGBA", (0, 0, 0, 128), (127, 127, 127)),
        ("LA", (0, 0), WHITE),
        ("LA", (0, 255), (0, 0, 0)),
    ],
)
def test_alpha_is_composited_on_white(
    mode: str, color: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    image = load_image(encode(Image.new(mode, (4, 4), color), "PNG"))
    assert image.mode == "RGB"
    assert close(image.getpixel((0, 0)), expected, tolerance=1)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE, WHITE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    image = load_image(data)
    assert image.getpixel((4, 4)) == RED


def test_exif_rotated_jpeg_is_upright() -> None:
    stored = Image.new("RGB", (200, 100), RED)
    stored.paste(BLUE, (100, 0, 200, 100))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image = load_image(encode(stored, "JPEG", exif=exif, quality=95))
    assert image.size == (100, 200)
    assert close(image.getpixel((50, 20)), RED)
    assert close(image.getpixel((50, 180)), BLUE)
    assert "exif" not in image.info


def test_wrong_extension_is_read_by_content(tmp_path) -> None:
    path = tmp_path / "photo.jpg"  # a PNG, whatever the name says
    path.write_bytes(encode(Image.new("RGB", (5, 5), BLUE), "PNG"))
    assert load_image(path.read_bytes()).getpixel((0, 0)) == BLUE


@pytest.mark.parametrize(("size", "view"), [((1, 1), (32, 32)), ((20000, 20), (512, 32))])
def test_extreme_sizes(size: tuple[int, int], view: tuple[int, int]) -> None:
    image = load_image(encode(Image.new("RGB", size, RED), "PNG"))
    assert image.size == size
    assert model_view(image, 16384).size == view


def test_greyscale_and_bilevel() -> None:
    assert load_image(encode(Image.new("L", (3, 3), 200), "PNG")).getpixel((1, 1)) == (200,) * 3
    assert load_image(encode(Image.new("1", (3, 3), 1), "PNG")).getpixel((1, 1)) == WHITE


# -- the model's view -----------------------------------------------------------------------


def test_square_1536_view_is_exactly_128() -> None:
    assert model_view(noisy(1536, 1536), 16384).size == (128, 128)


def test_view_is_deterministic() -> None:
    image = noisy(1000, 700)
    first = encode_png(model_view(image, 16384))
    assert first == encode_png(model_view(image.copy(), 16384))
    assert sha256_hex(first) == sha256_hex(encode_png(model_view(image, 16384)))


def test_view_of_a_small_image_is_not_upscaled() -> None:
    assert view_size(100, 70, 16384) == (96, 64)
    assert view_size(64, 64, 1_000_000) == (64, 64)


def test_view_rejects_a_budget_below_one_patch() -> None:
    with pytest.raises(ValueError):
        view_size(100, 100, 1000)


@given(
    width=st.integers(1, 30000),
    height=st.integers(1, 30000),
    max_pixels=st.integers(1024, 4_000_000),
)
def test_view_size_properties(width: int, height: int, max_pixels: int) -> None:
    w, h = view_size(width, height, max_pixels)
    assert w % 32 == 0 and h % 32 == 0
    assert w >= 32 and h >= 32
    assert w * h <= max_pixels
    assert w <= max(width, 32) and h <= max(height, 32)
    if w > 64 and h > 64:
        # The aspect ratio is kept up to the 32-pixel grid (one extra step at the boundary).
        ratio = width / height
        assert ratio * (1 - 64 / w) - 1e-9 <= w / h <= ratio / (1 - 64 / h) + 1e-9


def test_encode_png_roundtrips_and_has_no_metadata() -> None:
    image = noisy(40, 30)
    image.info["comment"] = b"secret"
    data = encode_png(image)
    back = Image.open(io.BytesIO(data))
    assert back.size == (40, 30) and back.mode == "RGB"
    assert np.array_equal(np.asarray(back), np.asarray(image))
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def _with_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """``png`` with one more chunk just before IEND (the last 12 bytes)."""
    chunk = struct.pack(">I", len(body)) + kind + body
    chunk += struct.pack(">I", zlib.crc32(kind + body))
    return png[:-12] + chunk + png[-12:]


def _interlaced(png: bytes) -> bytes:
    """``png`` with its header saying Adam7 interlacing (and a CRC that matches)."""
    header = png[12:28] + b"\x01"
    return png[:12] + header + struct.pack(">I", zlib.crc32(header)) + png[33:]


def test_plain_png_is_what_encode_png_writes_and_nothing_else() -> None:
    image = noisy(40, 30)
    plain = encode_png(image)
    assert is_plain_png(plain)
    assert is_plain_png(encode(image, "PNG", compress_level=9))  # any zlib level is plain
    damaged = bytearray(plain)
    damaged[-20] ^= 0xFF  # inside the last IDAT: its CRC no longer matches
    not_plain = {
        "text chunk": _with_chunk(plain, b"tEXt", b"Comment\x00hello"),
        "gamma": _with_chunk(plain, b"gAMA", struct.pack(">I", 45455)),
        "RGBA": encode(image.convert("RGBA"), "PNG"),
        "greyscale": encode(image.convert("L"), "PNG"),
        "16-bit": encode(Image.new("I;16", (8, 8)), "PNG"),
        "interlaced": _interlaced(plain),
        "trailing bytes": plain + b"junk",
        "truncated": plain[:-6],
        "bad CRC": bytes(damaged),
        "JPEG": encode(image, "JPEG"),
        "empty": b"",
    }
    for name, data in not_plain.items():
        assert not is_plain_png(data), name


def test_stored_png_keeps_plain_bytes_and_reencodes_the_rest() -> None:
    image = noisy(40, 30)
    plain = encode(image, "PNG", compress_level=1)
    assert stored_png(plain, load_image(plain)) is plain
    tagged = _with_chunk(plain, b"tEXt", b"Comment\x00secret")
    stored = stored_png(tagged, load_image(tagged))
    assert stored == encode_png(load_image(tagged)) and b"secret" not in stored
    assert np.array_equal(np.asarray(load_image(stored)), np.asarray(image))
