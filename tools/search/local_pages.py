"""Offline ``web_visit``: the pages of the local corpus, by URL.

Serves exactly the pages of ``pages.jsonl`` (``http://corpus.invalid/...``), through the same
HTML-to-text extraction as the HTTP provider. Any other URL is not in the offline corpus, and
the model is told so (there is no network to fall back on).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from tools.base import ToolUnavailableError
from tools.search.cache import normalize_url
from tools.search.extract import html_to_text
from tools.search.results import ProviderError, WebPage


class LocalPages:
    """``PageProvider`` over a corpus's ``pages.jsonl`` (loaded on first use)."""

    name = "offline"

    def __init__(self, pages_path: str | Path) -> None:
        self.pages_path = Path(pages_path)
        if not self.pages_path.is_file():
            raise ToolUnavailableError(f"no corpus pages at {self.pages_path}")
        self._pages: dict[str, tuple[str, str]] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"pages_path": self.pages_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["pages_path"])  # type: ignore[misc]

    def _load(self) -> dict[str, tuple[str, str]]:
        with self._lock:
            if self._pages is None:
                pages = {}
                with self.pages_path.open(encoding="utf-8") as lines:
                    for line in lines:
                        page = json.loads(line)
                        pages[normalize_url(page["url"])] = (page["url"], page["html"])
                self._pages = pages
            return self._pages

    def fetch(self, url: str) -> WebPage:
        found = self._load().get(normalize_url(url))
        if found is None:
            raise ProviderError(
                f"{url} is not in the offline corpus: only pages that the offline search "
                "returned can be visited."
            )
        canonical, html = found
        title, text = html_to_text(html, canonical)
        return WebPage(url=canonical, title=title, text=text)
