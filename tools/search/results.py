"""What search and visit providers return, in R1V4's observation shapes, and their errors.

R1V4 (SkyworkAI/Skywork-R1V, ``r1v4/inference/request_deepresearch.py``) documents the
observations as JSON: ``text_search`` is a list of ``{title, url, snippet}``, ``image_search``
a list of ``{title, source, link}`` where ``source`` is the matching image's URL and ``link``
the page it was found on, and ``web_visit`` the (possibly summarised) text of a page.

A provider raises ``ProviderError`` (a ``ToolExecutionError``: the model sees it as the call's
error and may retry or change course) for everything that went wrong with one request, and
``ToolUnavailableError`` only when it cannot work at all (no API key, no index).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

from tools.base import ToolExecutionError


@dataclass(frozen=True)
class TextHit:
    """One web search result."""

    title: str
    url: str
    snippet: str


@dataclass(frozen=True)
class ImageHit:
    """One reverse image search result: the matching image's URL and the page it is on."""

    title: str
    source: str
    link: str


@dataclass(frozen=True)
class WebPage:
    """A fetched page as text (already extracted from HTML), with what was cut."""

    url: str
    title: str
    text: str
    truncated: bool = False


Hit = TypeVar("Hit", TextHit, ImageHit)


class ProviderError(ToolExecutionError):
    """One request failed (HTTP error, timeout, bad response, page refused); for the model."""


class BlockedURLError(ProviderError):
    """A URL that ``web_visit`` refuses to fetch (private address, bad scheme, ...)."""


def hits_json(hits: Iterable[TextHit | ImageHit]) -> str:
    """The observation text of a search: a JSON list in R1V4's shape."""
    return json.dumps([asdict(hit) for hit in hits], ensure_ascii=False)


def text_hits_from_json(text: str) -> list[TextHit]:
    """Inverse of ``hits_json`` for text hits (cache entries)."""
    return [TextHit(**item) for item in json.loads(text)]


def image_hits_from_json(text: str) -> list[ImageHit]:
    """Inverse of ``hits_json`` for image hits (cache entries)."""
    return [ImageHit(**item) for item in json.loads(text)]


def merge_hits(groups: Sequence[Sequence[Hit]], limit: int) -> list[Hit]:
    """One flat list from several queries' results: each query's first ``limit``, in order,
    without repeating a page that an earlier query already returned."""
    seen: set[str] = set()
    merged: list[Hit] = []
    for hits in groups:
        for hit in hits[:limit]:
            key = hit.url if isinstance(hit, TextHit) else hit.link
            if key not in seen:
                seen.add(key)
                merged.append(hit)
    return merged
