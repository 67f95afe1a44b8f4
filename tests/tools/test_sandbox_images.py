"""The parent's check of images coming back from a sandbox: every chunk, then a full decode."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from tools.sandbox import SandboxLimits, _check_images, png_problem

LIMIT = 4096 * 4096


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def ihdr(width: int, height: int) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))


def good_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


SIGNATURE = b"\x89PNG\r\n\x1a\n"
IEND = chunk(b"IEND", b"")


def test_a_plain_png_passes_both_checks():
    assert png_problem(good_png(), LIMIT) is None
    assert _check_images([good_png()], SandboxLimits()) is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"GIF89a" + bytes(40), "not a PNG"),
        (SIGNATURE + ihdr(20000, 20000)[:16], "20000x20000 pixels, over the limit"),
        (SIGNATURE + ihdr(0, 10) + IEND, "0x10 pixels, over the limit"),
        (
            SIGNATURE + ihdr(10, 10) + ihdr(9000, 9000) + chunk(b"IDAT", b"") + IEND,
            "more than one header",
        ),
        (SIGNATURE + ihdr(10, 10) + chunk(b"acTL", bytes(8)) + IEND, "an animated PNG"),
        (SIGNATURE + ihdr(10, 10) + chunk(b"IDAT", b"x")[:-1] + b"\0" + IEND, "damaged"),
        (SIGNATURE + ihdr(10, 10) + chunk(b"IDAT", b"x" * 100)[:50], "truncated"),
        (SIGNATURE + ihdr(10, 10), "truncated"),
        (SIGNATURE + ihdr(10, 10)[:20], "truncated"),
        (good_png() + b"trailing", "data after its end"),
    ],
)
def test_every_chunk_is_checked(data, problem):
    found = png_problem(data, LIMIT)
    assert found is not None and problem in found


def idat(raw: bytes) -> bytes:
    return chunk(b"IDAT", zlib.compress(raw))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        # 10 rows of a filter byte and 10 grey pixels: 110 bytes, not 3 or 100 MB
        (SIGNATURE + ihdr(10, 10) + idat(b"\0" * 3) + IEND, "does not match its size"),
        (SIGNATURE + ihdr(10, 10) + idat(b"\0" * (100 << 20)) + IEND, "does not match"),
        (SIGNATURE + ihdr(10, 10) + chunk(b"IDAT", b"\x78\x9c garbage") + IEND, "does not"),
        (SIGNATURE + ihdr(10, 10) + chunk(b"IDAT", zlib.compress(bytes(110))[:-6]) + IEND, "not"),
    ],
)
def test_image_data_must_inflate_to_the_declared_size(data, problem):
    found = _check_images([data], SandboxLimits())
    assert found is not None and problem in found


def test_a_hand_made_png_of_the_right_size_passes():
    assert png_problem(SIGNATURE + ihdr(10, 10) + idat(bytes(110)) + IEND, LIMIT) is None


def test_interlaced_and_invalid_headers_are_refused():
    header = struct.pack(">IIBBBBB", 10, 10, 8, 0, 0, 0, 1)
    interlaced = SIGNATURE + chunk(b"IHDR", header) + idat(bytes(110)) + IEND
    assert "interlaced" in png_problem(interlaced, LIMIT)
    header = struct.pack(">IIBBBBB", 10, 10, 7, 5, 0, 0, 0)
    assert "invalid header" in png_problem(SIGNATURE + chunk(b"IHDR", header) + IEND, LIMIT)
