"""The result cache in a bucket: GCSStorage against gcp-storage-emulator on loopback."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tools.search.cache import CachedTextSearch, ResultCache
from tools.search.results import TextHit
from tools.search.storage import GCSStorage

pytestmark = pytest.mark.integration

BUCKET = "search-cache"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from gcp_storage_emulator.server import create_server
    from google.cloud import storage

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    anonymous = storage.Client.create_anonymous_client()
    anonymous.project = "test"
    try:
        yield anonymous
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


class OneAnswer:
    name = "one"

    def __init__(self) -> None:
        self.calls = 0

    def search(self, query: str, limit: int) -> list[TextHit]:
        self.calls += 1
        return [TextHit("t", "https://x.example/", query)]


def test_a_bucket_cache_serves_a_rerun(client: Any) -> None:
    storage = GCSStorage(BUCKET, "runs/cache", client=client)
    assert storage.get("ab/missing.json") is None
    first = CachedTextSearch(OneAnswer(), ResultCache(storage))
    hits = first.search("Kestrel", 5)
    rerun_provider = OneAnswer()
    rerun = CachedTextSearch(rerun_provider, ResultCache(GCSStorage(BUCKET, "runs/cache", client)))
    assert rerun.search("kestrel", 5) == hits and rerun_provider.calls == 0
    names = [blob.name for blob in client.list_blobs(BUCKET, prefix="runs/cache/")]
    assert len(names) == 1 and names[0].endswith(".json")
