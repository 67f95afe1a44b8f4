"""The result cache in a bucket: GCSStorage against gcp-storage-emulator on loopback."""

from __future__ import annotations

from typing import Any

import pytest

from tools.search.cache import CachedTextSearch, ResultCache
from tools.search.results import TextHit
from tools.search.storage import GCSStorage

pytestmark = pytest.mark.integration

BUCKET = "search-cache"


@pytest.fixture(scope="module")
def client(gcs_emulator: Any) -> Any:
    """The shared emulator's client, with this module's bucket made."""
    gcs_emulator.create_bucket(BUCKET)
    return gcs_emulator


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
