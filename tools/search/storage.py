"""A tiny object storage interface for the result cache and for publishing query images.

``open_storage("gs://bucket/prefix")`` is Google Cloud Storage (``google-cloud-storage``, the
``[gcp]`` extra, imported only then); any other string is a local folder. Keys are relative
paths with ``/`` separators. Writes are atomic: a reader never sees half an object.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Storage(Protocol):
    """Bytes by key."""

    def get(self, key: str) -> bytes | None: ...

    def put(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad storage key {key!r}")
    return key


class LocalStorage:
    """Objects as files under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / _check_key(key)).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self.root / _check_key(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class GCSStorage:
    """Objects in a Google Cloud Storage bucket under a prefix; the client is made lazily."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"bucket_name": self.bucket_name, "prefix": self.prefix}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["bucket_name"], state["prefix"])  # type: ignore[misc]

    def _bucket(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import storage  # the [gcp] extra

                self._client = storage.Client()
            return self._client.bucket(self.bucket_name)

    def _name(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        try:
            return self._bucket().blob(self._name(key)).download_as_bytes()
        except NotFound:
            return None

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._bucket().blob(self._name(key)).upload_from_string(data, content_type=content_type)


def open_storage(uri: str) -> Storage:
    """Storage for a ``gs://bucket/prefix`` URI or a local folder."""
    if uri.startswith("gs://"):
        bucket, _, prefix = uri[len("gs://") :].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {uri!r}")
        return GCSStorage(bucket, prefix)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported storage URI {uri!r} (a folder or gs://bucket/prefix)")
    return LocalStorage(uri.removeprefix("file://"))
