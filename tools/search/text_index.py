"""Offline text search: an SQLite FTS5 index of the corpus pages, ranked by BM25.

FTS5 ships with Python's ``sqlite3`` on the platforms this project runs on; ``check_fts5``
says so or raises ``ToolUnavailableError``. The model's query is free text, never FTS5 syntax:
it is split into words, each quoted, and joined with OR, so punctuation and operators in a
query cannot break the search, and pages that share more (and rarer) words rank first. Titles
weigh five times the body. Snippets are FTS5's ``snippet()`` around the matching words.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from tools.base import ToolUnavailableError
from tools.search.extract import html_to_text
from tools.search.results import TextHit

_WORD = re.compile(r"\w+", re.UNICODE)
TITLE_WEIGHT = 5.0
SNIPPET_TOKENS = 32
MAX_QUERY_TERMS = 32


def check_fts5() -> None:
    """Raise ``ToolUnavailableError`` when this SQLite lacks FTS5."""
    try:
        with sqlite3.connect(":memory:") as db:
            db.execute("CREATE VIRTUAL TABLE probe USING fts5(body)")
    except sqlite3.OperationalError as error:
        raise ToolUnavailableError(
            f"SQLite {sqlite3.sqlite_version} has no FTS5: {error}"
        ) from error


def build_text_index(documents: Iterable[object], path: str | Path) -> None:
    """Index pages (objects with ``url``, ``title``, ``html``) into a new SQLite file."""
    check_fts5()
    path = Path(path)
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    try:
        db.execute(
            "CREATE VIRTUAL TABLE pages USING fts5("
            "url UNINDEXED, title, body, tokenize='porter unicode61 remove_diacritics 2')"
        )
        rows = []
        for document in documents:
            _, text = html_to_text(document.html, document.url)  # type: ignore[attr-defined]
            rows.append((document.url, document.title, text))  # type: ignore[attr-defined]
        db.executemany("INSERT INTO pages(url, title, body) VALUES (?, ?, ?)", rows)
        db.execute("INSERT INTO pages(pages) VALUES ('optimize')")
        db.commit()
    finally:
        db.close()


def match_expression(query: str) -> str | None:
    """The FTS5 MATCH expression of a free-text query (None when it has no words)."""
    words = list(dict.fromkeys(m.group().casefold() for m in _WORD.finditer(query)))
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words[:MAX_QUERY_TERMS])


class LocalTextSearch:
    """``TextSearchProvider`` over a ``text.sqlite`` index (read-only; one connection a call)."""

    name = "offline"

    def __init__(self, index_path: str | Path) -> None:
        self.index_path = Path(index_path)
        if not self.index_path.is_file():
            raise ToolUnavailableError(f"no text index at {self.index_path}")

    def search(self, query: str, limit: int) -> list[TextHit]:
        expression = match_expression(query)
        if expression is None:
            return []
        # A connection per call: cheap for SQLite, and safe from any thread of the pool.
        db = sqlite3.connect(f"file:{self.index_path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT url, title, snippet(pages, 2, '', '', ' ... ', ?) FROM pages "
                "WHERE pages MATCH ? ORDER BY bm25(pages, 0.0, ?, 1.0) LIMIT ?",
                (SNIPPET_TOKENS, expression, TITLE_WEIGHT, limit),
            ).fetchall()
        except sqlite3.Error as error:
            raise ToolUnavailableError(
                f"the text index {self.index_path} failed: {error}"
            ) from error
        finally:
            db.close()
        return [
            TextHit(title=title, url=url, snippet=" ".join(snippet.split()))
            for url, title, snippet in rows
        ]
