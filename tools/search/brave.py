"""Brave Search: web search through the Brave Search API.

``GET {base}/res/v1/web/search?q=…&count=…`` with the key in ``X-Subscription-Token`` (read
from ``BRAVE_API_KEY`` by default) answers ``{"web": {"results": [{title, url, description}]}}``;
descriptions carry ``<strong>`` highlights, which are removed. Brave has no reverse image
search, so it provides ``text_search`` only.
"""

from __future__ import annotations

import html
import re

from tools.search.http_api import ApiClient
from tools.search.results import ProviderError, TextHit

DEFAULT_BASE_URL = "https://api.search.brave.com"
DEFAULT_KEY_ENV = "BRAVE_API_KEY"
MAX_COUNT = 20  # the API's limit per request
_TAG = re.compile(r"<[^>]+>")


def plain(text: str) -> str:
    """HTML fragment -> text."""
    return " ".join(html.unescape(_TAG.sub("", text)).split())


class BraveTextSearch:
    """``TextSearchProvider``: Brave web results."""

    name = "brave"

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def search(self, query: str, limit: int) -> list[TextHit]:
        answer = self.client.request_json(
            "GET", "/res/v1/web/search", params={"q": query, "count": min(limit, MAX_COUNT)}
        )
        if not isinstance(answer, dict):
            raise ProviderError("Brave Search returned an unexpected answer.")
        web = answer.get("web") or {}
        results = web.get("results") if isinstance(web, dict) else None
        return [
            TextHit(
                title=plain(str(item.get("title", ""))),
                url=str(item["url"]),
                snippet=plain(str(item.get("description", ""))),
            )
            for item in results or []
            if isinstance(item, dict) and item.get("url")
        ][:limit]
