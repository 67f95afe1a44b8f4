"""Small file operations over Beam's FileSystems, with the guarantees the writers rely on.

Every result file is written whole: on a local disk through a temporary name and an atomic
rename, on object stores directly (an object becomes visible only when its upload completes).
A run killed at any moment therefore leaves only complete files behind, which is what makes
resume safe; writing a file again replaces it whole, which is what makes a retried bundle
harmless (`outputs.writers` names shards by their content).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from urllib.parse import urlparse

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def normalize(path: str) -> str:
    """`file://` URIs as plain paths: Beam's FileSystems knows local paths, not `file://`."""
    return urlparse(path).path if path.startswith("file://") else path


def join(base: str, *parts: str) -> str:
    """Join path segments onto a local path or URI."""
    base = normalize(base)
    return FileSystems.join(base.rstrip("/") if base not in ("/",) else base, *parts)


def is_local(path: str) -> bool:
    """True for plain paths and file:// URIs."""
    return urlparse(path).scheme in ("", "file")


def read_bytes(path: str) -> bytes:
    """The whole content of a file (no decompression)."""
    with FileSystems.open(normalize(path), compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def exists(path: str) -> bool:
    return FileSystems.exists(normalize(path))


def write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` so that no reader ever sees a partial file."""
    path = normalize(path)
    if is_local(path):
        target = path
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        tmp = os.path.join(os.path.dirname(target), f".tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


def write_once(path: str, data: bytes) -> bool:
    """Write content-addressed data unless it is already there; True when written.

    Two workers writing the same hash write the same bytes, so a lost race is harmless.
    """
    if exists(path):
        return False
    write_bytes(path, data)
    return True
