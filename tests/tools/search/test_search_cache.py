"""The result cache: normalised keys, storage, freshness, and the provider wrappers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tools.search.cache import (
    CachedImageSearch,
    CachedPages,
    CachedTextSearch,
    ResultCache,
    normalize_query,
    normalize_url,
    request_key,
)
from tools.search.results import ImageHit, TextHit, WebPage
from tools.search.storage import GCSStorage, LocalStorage, open_storage


def test_queries_normalise_case_space_and_unicode() -> None:
    assert normalize_query("  Codebook\tsymbol  K ") == "codebook symbol k"
    assert normalize_query("ＡＢＣ") == "abc"  # full-width letters (NFKC)


def test_urls_normalise_scheme_host_port_and_fragment() -> None:
    assert normalize_url("HTTP://Example.COM:80/a?b=1#top") == "http://example.com/a?b=1"
    assert normalize_url("https://example.com") == "https://example.com/"
    assert normalize_url("https://example.com:8443/x") == "https://example.com:8443/x"


def test_request_keys_separate_kinds_and_providers() -> None:
    request = {"query": "q", "limit": 5}
    keys = {
        request_key("text_search", "serper", request),
        request_key("text_search", "brave", request),
        request_key("image_search", "serper", request),
        request_key("text_search", "serper", {"query": "q", "limit": 6}),
    }
    assert len(keys) == 4
    assert request_key("text_search", "serper", dict(reversed(request.items()))) in keys


def test_local_storage_round_trip_and_bad_keys(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    assert storage.get("ab/x.json") is None
    storage.put("ab/x.json", b"one")
    storage.put("ab/x.json", b"two")
    assert storage.get("ab/x.json") == b"two"
    assert [p.name for p in (tmp_path / "ab").iterdir()] == ["x.json"]  # no temporaries left
    for bad in ("../x", "/abs", "a//b", ""):
        with pytest.raises(ValueError):
            storage.put(bad, b"")


def test_open_storage() -> None:
    assert isinstance(open_storage("/tmp/x"), LocalStorage)
    gcs = open_storage("gs://bucket/some/prefix")
    assert isinstance(gcs, GCSStorage) and gcs.prefix == "some/prefix"
    with pytest.raises(ValueError):
        open_storage("s3://bucket/x")


def test_entries_expire_and_damaged_ones_are_misses(tmp_path: Path) -> None:
    cache = ResultCache(LocalStorage(tmp_path), max_age_s=60)
    cache.put("k" * 64, "value", {"q": 1})
    assert cache.get("k" * 64) == "value"
    cache.max_age_s = 0.0
    time.sleep(0.01)
    assert cache.get("k" * 64) is None
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / ("d" * 64 + ".json")).write_text("{not json")
    assert cache.get("d" * 64) is None
    assert (cache.hits, cache.misses) == (1, 2)


@dataclass
class CountingProvider:
    name: str = "counting"
    calls: list[object] = field(default_factory=list)

    def search(self, query: object, limit: int) -> list:
        self.calls.append(query)
        if isinstance(query, bytes):
            return [ImageHit("t", "http://x/i.png", "http://x/p")]
        return [TextHit(f"about {query}", f"http://x/{len(self.calls)}", "s")]

    def fetch(self, url: str) -> WebPage:
        self.calls.append(url)
        return WebPage(url, "T", "text", truncated=True)


def test_cached_providers_ask_once_per_normalised_request(tmp_path: Path) -> None:
    cache = ResultCache(LocalStorage(tmp_path))
    inner = CountingProvider()
    text = CachedTextSearch(inner, cache)
    first = text.search("Codebook K", 5)
    assert text.search("  codebook   k", 5) == first
    text.search("codebook k", 3)
    images = CachedImageSearch(inner, cache)
    assert images.search(b"png", 5) == images.search(b"png", 5)
    pages = CachedPages(inner, cache)
    assert pages.fetch("http://X.com/a#b") == pages.fetch("http://x.com/a")
    assert len(inner.calls) == 4
    assert cache.hits == 3
    # A second cache on the same storage (a rerun) pays nothing.
    rerun = CachedTextSearch(CountingProvider(), ResultCache(LocalStorage(tmp_path)))
    assert rerun.search("codebook k", 5) == first
    assert rerun.provider.calls == []  # type: ignore[attr-defined]
