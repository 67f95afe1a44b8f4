"""The ``text_search``, ``image_search`` and ``web_visit`` tools (R1V4's DeepResearch tools).

Each tool validates the model's call, asks its provider once per query, image or URL, and
renders the observation in R1V4's shape: a JSON list of ``{title, url, snippet}`` (one flat
list for all queries, each query's results in order, repeats dropped), a JSON list of
``{title, source, link}``, or the pages' text within a character budget (focused on, or
summarised for, the call's ``goal``). A provider's failure becomes the call's error, for the
model to read; a missing index or API key raises ``ToolUnavailableError``.

Providers are built from the settings on first use (``tools.search.settings``), so building a
tool to read its header costs nothing and touches neither the network nor the corpus.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from tools.base import Chat, Tool, ToolArgumentsError, ToolContext, ToolError, ToolResult
from tools.search.extract import fit
from tools.search.providers import (
    ImageSearchProvider,
    PageProvider,
    PageSummarizer,
    TextSearchProvider,
)
from tools.search.results import ProviderError, WebPage, hits_json, merge_hits
from tools.search.settings import (
    ImageSearchSettings,
    TextSearchSettings,
    WebVisitSettings,
    image_provider,
    page_provider,
    summarizer,
    text_provider,
)

_SUB_IMAGE = re.compile(r"^<?\s*sub[-_ ]?image[-_ ]?(\d+)\s*>?$", re.IGNORECASE)
_JOB_IMAGE = re.compile(r"^images\[\s*(\d+)\s*\]$")


def _strings(description: str, max_items: int) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "minItems": 1,
        "maxItems": max_items,
        "description": description,
    }


def _text_parameters(s: TextSearchSettings) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"queries": _strings("search queries", s.max_queries)},
        "required": ["queries"],
        "additionalProperties": False,
    }


def _image_parameters(s: ImageSearchSettings) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "image_paths": _strings('"image" or "<sub-image N>" to search for', s.max_images)
        },
        "required": ["image_paths"],
        "additionalProperties": False,
    }


def _visit_parameters(s: WebVisitSettings) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "urls": _strings("http(s) URLs to read", s.max_urls),
            "goal": {"type": "string", "description": "what to look for on the pages"},
        },
        "required": ["urls"],
        "additionalProperties": False,
    }


class _LazyProvider:
    """Builds the provider from the settings on first use; pickles without it."""

    _settings: Any

    def __init__(self) -> None:
        self._provider: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        raise NotImplementedError

    @property
    def provider(self) -> Any:
        with self._lock:
            if self._provider is None:
                self._provider = self._build()
            return self._provider

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_provider": None, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class TextSearchTool(_LazyProvider, Tool):
    """``text_search {"queries": [str]}``: web search (see ``TextSearchSettings``)."""

    name = "text_search"
    title = "Text search"
    # FROZEN (docs/architecture.md): the tiny model was trained on this text.
    description = (
        "search the web for one or more text queries; each result has a title, url and snippet."
    )
    parameters = _text_parameters(TextSearchSettings())
    kind = "io"

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self._settings = TextSearchSettings(**settings)
        self.parameters = _text_parameters(self._settings)

    def _build(self) -> TextSearchProvider:
        return text_provider(self._settings)

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        queries = [q.strip() for q in arguments["queries"]]
        if not all(queries):
            return ToolResult.failure(ToolArgumentsError("A query is empty: write some words."))
        limit = self._settings.max_results
        try:
            groups = [self.provider.search(query, limit) for query in queries]
        except ToolError as error:
            return ToolResult.failure(error)
        return ToolResult(text=hits_json(merge_hits(groups, limit)))


def image_for(path: str, context: ToolContext) -> bytes:
    """The bytes an ``image_paths`` entry names: ``"image"``, ``"<sub-image N>"``, or in a
    multi-image job ``"images[i]"`` (the job's images, from 0; ``"image"`` is the first)."""
    name = path.strip()
    if name.casefold() in ("image", "<image>", "original", "the image"):
        return context.image
    originals = len(context.images)
    listed = _JOB_IMAGE.match(name)
    if listed and int(listed.group(1)) < originals:
        return context.images[int(listed.group(1))]
    match = _SUB_IMAGE.match(name)
    count = len(context.sub_images)
    if match and 1 <= int(match.group(1)) <= count:
        return context.sub_images[int(match.group(1)) - 1]
    available = '"image"' + (
        f', "images[i]" for i from 0 to {originals - 1}' if originals > 1 else ""
    )
    available += (
        f' or "<sub-image N>" for N from 1 to {count}' if count else " (no sub-images exist yet)"
    )
    raise ToolArgumentsError(f"Unknown image path {path!r}: use {available}.")


class ImageSearchTool(_LazyProvider, Tool):
    """``image_search {"image_paths": [str]}``: reverse image search (``ImageSearchSettings``)."""

    name = "image_search"
    title = "Image search"
    description = (
        'reverse image search for the original image ("image") or a sub-image '
        '("<sub-image N>"); each result has a title, source and link.'
    )
    parameters = _image_parameters(ImageSearchSettings())
    kind = "io"

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self._settings = ImageSearchSettings(**settings)
        self.parameters = _image_parameters(self._settings)

    def description_for(self, images: int) -> str:
        if images == 1:
            return self.description
        return (
            f'reverse image search for one of the {images} images ("images[0]", "images[1]", '
            '...; "image" is the first) or a sub-image ("<sub-image N>"); each result has a '
            "title, source and link."
        )

    def _build(self) -> ImageSearchProvider:
        return image_provider(self._settings)

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        limit = self._settings.max_results
        try:
            images = [image_for(path, context) for path in arguments["image_paths"]]
            groups = [self.provider.search(image, limit) for image in images]
        except ToolError as error:
            return ToolResult.failure(error)
        return ToolResult(text=hits_json(merge_hits(groups, limit)))


class WebVisitTool(_LazyProvider, Tool):
    """``web_visit {"urls": [str], "goal"?: str}``: read pages (``WebVisitSettings``)."""

    name = "web_visit"
    title = "Web content"
    description = "read web pages; say what you are looking for in goal to get the relevant part."
    parameters = _visit_parameters(WebVisitSettings())
    kind = "io"

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self._settings = WebVisitSettings(**settings)
        self._summarizer: PageSummarizer | None = None
        self._chat: Chat | None = None
        self.parameters = _visit_parameters(self._settings)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_summarizer": None, "_chat": None}

    def model_settings(self) -> Mapping[str, Any] | None:
        """The served model this tool asks (its ``summarize`` setting), if any."""
        return self._settings.summarize

    def attach_chat(self, chat: Chat) -> None:
        """The ``Chat`` that reaches the model ``model_settings`` names (set before first use)."""
        self._chat = chat

    def _build(self) -> PageProvider:
        self._summarizer = summarizer(self._settings, self._chat)
        return page_provider(self._settings)

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        urls = list(dict.fromkeys(u.strip() for u in arguments["urls"]))
        goal = (arguments.get("goal") or "").strip() or None
        budget = max(200, self._settings.max_chars // len(urls))
        provider = self.provider
        sections: list[str] = []
        failures: list[ToolError] = []
        for url in urls:
            try:
                page = provider.fetch(url)
            except ToolError as error:
                failures.append(error)
                sections.append(f"URL: {url}\n[could not be read: {error}]")
                continue
            sections.append(self._render(page, goal, budget))
        if len(failures) == len(urls):
            if len(urls) == 1:
                return ToolResult.failure(failures[0])
            message = " ".join(str(f) for f in failures)
            return ToolResult.failure(ProviderError(message))
        return ToolResult(text="\n\n---\n\n".join(sections))

    def _render(self, page: WebPage, goal: str | None, budget: int) -> str:
        header = f"Title: {page.title}\nURL: {page.url}\n" if page.title else f"URL: {page.url}\n"
        room = max(100, budget - len(header))
        text = None
        if goal and self._settings.summarize and self._chat is None:
            header += "[summary unavailable: no model client is attached to web_visit]\n"
        if goal and self._summarizer is not None and len(page.text) > room:
            try:
                text = "[summary for the goal]\n" + self._summarizer.summarize(page, goal, room)
            except ToolError as error:
                text = None
                header += f"[summary unavailable: {error}]\n"
        if text is None:
            text, _ = fit(page.text, room, goal)
        return header + "\n" + text
