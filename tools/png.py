"""A PNG's chunk structure, walked once: the parent's check of images a sandbox returns
(`tools.sandbox.png_problem`) and the image store's test for a plain PNG
(`beam_pipelines.agent.images.is_plain_png`) read it through `chunks`. Nothing here inflates
or decodes image data."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PngStructureError(ValueError):
    """A PNG whose chunks do not hold together; the message reads "a truncated PNG",
    "a PNG whose b'IDAT' chunk is damaged", ..."""


def chunks(data: bytes) -> Iterator[tuple[int, bytes, memoryview]]:
    """`(offset, type, body)` of each chunk after the signature (not checked here), in order,
    the last being IEND. Raises `PngStructureError` when a chunk runs past the end, its CRC
    does not match, bytes follow IEND, or the data ends without one."""
    view, offset, end = memoryview(data), len(SIGNATURE), len(data)
    while True:
        if offset + 12 > end:
            raise PngStructureError("a truncated PNG")
        length, kind = struct.unpack_from(">I4s", data, offset)
        stop = offset + 12 + length
        if stop > end:
            raise PngStructureError("a truncated PNG")
        (crc,) = struct.unpack_from(">I", data, stop - 4)
        if zlib.crc32(view[offset + 4 : stop - 4]) != crc:
            raise PngStructureError(f"a PNG whose {kind!r} chunk is damaged")
        yield offset, kind, view[offset + 8 : stop - 4]
        offset = stop
        if kind == b"IEND":
            if offset != end:
                raise PngStructureError("a PNG with data after its end")
            return
