"""Serper (serper.dev): Google web search and Google Lens, the providers R1V4 used.

``POST {base}/search`` with ``{"q", "num"}`` answers ``{"organic": [{title, link, snippet}]}``;
``POST {base}/lens`` with ``{"url"}`` answers matches under ``organic`` (older answers:
``visual_matches`` / ``visualMatches``) with ``title, source, link, imageUrl``. Lens takes an
image *URL*, so a query image is first published (``ImagePublisher``: content-addressed into
a storage whose objects are served at ``base_url``, e.g. a bucket with public reads). The key
is sent in the ``X-API-KEY`` header, read from ``SERPER_API_KEY`` by default.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

from PIL import Image

from tools.search.http_api import ApiClient
from tools.search.results import ImageHit, ProviderError, TextHit
from tools.search.storage import Storage

DEFAULT_BASE_URL = "https://google.serper.dev"
DEFAULT_KEY_ENV = "SERPER_API_KEY"
_IMAGE_TYPES = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
}


def _items(answer: Any, *fields: str) -> list[dict[str, Any]]:
    if not isinstance(answer, dict):
        raise ProviderError("The search provider returned an unexpected answer.")
    for field in fields:
        items = answer.get(field)
        if isinstance(items, list):
            return [item for item in items if isinstance(item, dict)]
    return []


class SerperTextSearch:
    """``TextSearchProvider``: Google results through Serper."""

    name = "serper"

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def search(self, query: str, limit: int) -> list[TextHit]:
        answer = self.client.request_json("POST", "/search", json={"q": query, "num": limit})
        return [
            TextHit(
                title=str(item.get("title", "")),
                url=str(item["link"]),
                snippet=str(item.get("snippet", "")),
            )
            for item in _items(answer, "organic")
            if item.get("link")
        ][:limit]


class ImagePublisher:
    """Puts query images where an image search API can fetch them; returns their URLs."""

    def __init__(self, storage: Storage, base_url: str) -> None:
        self.storage = storage
        self.base_url = base_url.rstrip("/")

    def publish(self, image: bytes) -> str:
        try:
            with Image.open(io.BytesIO(image)) as probe:
                kind = probe.format or ""
        except OSError as error:
            raise ProviderError(f"The image could not be read: {error}") from error
        extension, content_type = _IMAGE_TYPES.get(kind, ("png", "image/png"))
        if kind not in _IMAGE_TYPES:  # re-encode what a search engine may not read
            with Image.open(io.BytesIO(image)) as source:
                out = io.BytesIO()
                source.convert("RGB").save(out, format="PNG")
                image = out.getvalue()
        key = f"{hashlib.sha256(image).hexdigest()}.{extension}"
        self.storage.put(key, image, content_type)
        return f"{self.base_url}/{key}"


class SerperImageSearch:
    """``ImageSearchProvider``: Google Lens through Serper (the image is published first)."""

    name = "serper-lens"

    def __init__(self, client: ApiClient, publisher: ImagePublisher) -> None:
        self.client = client
        self.publisher = publisher

    def search(self, image: bytes, limit: int) -> list[ImageHit]:
        url = self.publisher.publish(image)
        answer = self.client.request_json("POST", "/lens", json={"url": url})
        hits = []
        for item in _items(answer, "organic", "visual_matches", "visualMatches"):
            link = item.get("link")
            if not link:
                continue
            source = item.get("imageUrl") or item.get("thumbnailUrl") or item.get("source", "")
            hits.append(
                ImageHit(title=str(item.get("title", "")), source=str(source), link=str(link))
            )
        return hits[:limit]
