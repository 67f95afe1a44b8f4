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
        (good_png() + b"trailing", "data after its end"),
    ],
)
def test_every_chunk_is_checked(data, problem):
    found = png_problem(data, LIMIT)
    assert found is not None and problem in found


def test_a_well_formed_png_that_does_not_decode_is_refused():
    bad = SIGNATURE + ihdr(10, 10) + chunk(b"IDAT", zlib.compress(b"\0" * 3)) + IEND
    assert png_problem(bad, LIMIT) is None
    assert "cannot be used" in _check_images([bad], SandboxLimits())
