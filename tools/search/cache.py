"""The result cache: online providers' answers kept by normalised request.

Regenerating trajectories re-asks the same questions; a cache in a local folder or a bucket
(``tools.search.storage``) means a rerun pays no API call twice. A key is the SHA-256 of the
canonical JSON of ``{kind, provider, request}``, where the request is normalised first:
queries are NFKC-normalised, whitespace-collapsed and case-folded (search engines ignore case
and spacing), URLs get a lower-case scheme and host, no default port and no fragment, and
images are named by the SHA-256 of their bytes. Only successes are cached; entries older than
``max_age_s`` (when set) count as missing. The ``Cached*`` classes wrap any provider and are
providers themselves.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import unicodedata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tools.search.providers import ImageSearchProvider, PageProvider, TextSearchProvider
from tools.search.results import (
    ImageHit,
    TextHit,
    WebPage,
    hits_json,
    image_hits_from_json,
    text_hits_from_json,
)
from tools.search.storage import Storage

CACHE_FORMAT = 1


def normalize_query(query: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", query).split()).casefold()


def normalize_url(url: str) -> str:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port in (None, default) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def request_key(kind: str, provider: str, request: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"format": CACHE_FORMAT, "kind": kind, "provider": provider, "request": request},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResultCache:
    """Text values by request key in a ``Storage``, with hit/miss counts."""

    def __init__(self, storage: Storage, max_age_s: float | None = None) -> None:
        self.storage = storage
        self.max_age_s = max_age_s
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"storage": self.storage, "max_age_s": self.max_age_s, "hits": 0, "misses": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @staticmethod
    def _path(key: str) -> str:
        return f"{key[:2]}/{key}.json"

    def get(self, key: str) -> str | None:
        raw = self.storage.get(self._path(key))
        value = None
        if raw is not None:
            try:
                entry = json.loads(raw)
                fresh = self.max_age_s is None or time.time() - entry["at"] <= self.max_age_s
                value = entry["value"] if fresh else None
            except (ValueError, KeyError, TypeError):
                value = None  # a damaged entry is a miss; the next put repairs it
        with self._lock:
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
        return value

    def put(self, key: str, value: str, request: dict[str, Any]) -> None:
        entry = {"at": time.time(), "request": request, "value": value}
        self.storage.put(
            self._path(key), json.dumps(entry, ensure_ascii=False).encode(), "application/json"
        )


class CachedTextSearch:
    """A ``TextSearchProvider`` answered from the cache when it can."""

    def __init__(self, provider: TextSearchProvider, cache: ResultCache) -> None:
        self.provider = provider
        self.cache = cache
        self.name = provider.name

    def search(self, query: str, limit: int) -> list[TextHit]:
        request = {"query": normalize_query(query), "limit": limit}
        key = request_key("text_search", self.name, request)
        cached = self.cache.get(key)
        if cached is not None:
            return text_hits_from_json(cached)
        hits = self.provider.search(query, limit)
        self.cache.put(key, hits_json(hits), request)
        return hits


class CachedImageSearch:
    """An ``ImageSearchProvider`` answered from the cache when it can."""

    def __init__(self, provider: ImageSearchProvider, cache: ResultCache) -> None:
        self.provider = provider
        self.cache = cache
        self.name = provider.name

    def search(self, image: bytes, limit: int) -> list[ImageHit]:
        request = {"image_sha256": hashlib.sha256(image).hexdigest(), "limit": limit}
        key = request_key("image_search", self.name, request)
        cached = self.cache.get(key)
        if cached is not None:
            return image_hits_from_json(cached)
        hits = self.provider.search(image, limit)
        self.cache.put(key, hits_json(hits), request)
        return hits


class CachedPages:
    """A ``PageProvider`` answered from the cache when it can."""

    def __init__(self, provider: PageProvider, cache: ResultCache) -> None:
        self.provider = provider
        self.cache = cache
        self.name = provider.name

    def fetch(self, url: str) -> WebPage:
        request = {"url": normalize_url(url)}
        key = request_key("web_visit", self.name, request)
        cached = self.cache.get(key)
        if cached is not None:
            return WebPage(**json.loads(cached))
        page = self.provider.fetch(url)
        self.cache.put(key, json.dumps(page.__dict__, ensure_ascii=False), request)
        return page
