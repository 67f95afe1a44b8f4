"""Provider interfaces, one per tool kind; the tools talk only to these.

A provider does one request for one query, image or URL and returns plain records
(``tools.search.results``). Offline providers read the local corpus (``tools.search.corpus``);
online ones call an HTTP API (``serper``, ``brave``) or fetch the page (``http_pages``). Caching
(``tools.search.cache``) wraps any of them from outside, so a provider never caches itself.

``name`` identifies a provider's results: it is part of every cache key, so two providers never
share cached answers.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from tools.search.results import ImageHit, TextHit, WebPage


@runtime_checkable
class TextSearchProvider(Protocol):
    """Web search: a query -> ranked results."""

    name: str

    def search(self, query: str, limit: int) -> list[TextHit]: ...


@runtime_checkable
class ImageSearchProvider(Protocol):
    """Reverse image search: encoded image bytes -> pages holding that image."""

    name: str

    def search(self, image: bytes, limit: int) -> list[ImageHit]: ...


@runtime_checkable
class PageProvider(Protocol):
    """Web pages: a URL -> the page's text (extracted, bounded by the provider's limits)."""

    name: str

    def fetch(self, url: str) -> WebPage: ...


@runtime_checkable
class PageSummarizer(Protocol):
    """The ``goal`` hook of ``web_visit``: what a page says about a goal, in a budget."""

    def summarize(self, page: WebPage, goal: str, budget_chars: int) -> str: ...
