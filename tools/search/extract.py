"""Page text: HTML to text, truncation to a budget, and goal-focused excerpts.

``html_to_text`` uses trafilatura (main-content extraction, the tool R1V4-style readers use),
falling back to all visible text of the body when trafilatura finds no main content (short or
unusual pages). ``fit`` makes a page's text fit the model's budget: the whole text when it
fits; otherwise, with a goal, the paragraphs that share the most words with the goal, in page
order; without one (or when nothing matches), the beginning, cut at a paragraph or sentence
end. What was left out is always said in the text, so the model knows the page goes on.
"""

from __future__ import annotations

import re

import lxml.html
import trafilatura

_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORD_TEXT = (
    "a an and are as at be by for from has have how in is it its of on or that the this to "
    "was what when where which who why with find look looking page about"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
TEXT_TYPES = ("text/plain", "text/markdown", "text/csv", "application/json")


def html_to_text(html: str, url: str | None = None) -> tuple[str, str]:
    """``(title, text)`` of an HTML page: its main content, else all its visible text."""
    title = ""
    try:
        document = lxml.html.fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return "", ""
    found = document.find(".//title")
    if found is not None and found.text_content():
        title = " ".join(found.text_content().split())
    text = trafilatura.extract(
        html, url=url, include_comments=False, include_tables=True, favor_recall=True
    )
    if not text or len(text) < 0.3 * len(_visible_text(document)):
        text = _visible_text(document)
    return title, text.strip()


def _visible_text(document: lxml.html.HtmlElement) -> str:
    for element in document.xpath("//script|//style|//noscript|//template|//head"):
        element.drop_tree()
    blocks: list[str] = []
    for block in document.xpath(
        "//body//*[self::p or self::li or self::h1 or self::h2 or "
        "self::h3 or self::h4 or self::td or self::pre or self::dd or "
        "self::dt or self::blockquote]"
    ):
        line = " ".join(block.text_content().split())
        if line:
            blocks.append(line)
    if blocks:
        return "\n".join(blocks)
    return " ".join(document.text_content().split())


def content_text(body: str, content_type: str, url: str | None = None) -> tuple[str, str]:
    """``(title, text)`` of a fetched body by its media type (HTML, or one of ``TEXT_TYPES``)."""
    if content_type in TEXT_TYPES:
        return "", body.strip()
    return html_to_text(body, url)


def terms(text: str) -> set[str]:
    """The content words of a text, lower-cased."""
    return {w for w in (m.group().casefold() for m in _WORD.finditer(text)) if w not in _STOPWORDS}


def fit(text: str, budget: int, goal: str | None = None) -> tuple[str, bool]:
    """``(text, cut)``: the text within ``budget`` characters (see the module docstring)."""
    if len(text) <= budget:
        return text, False
    if goal:
        focused = _focus(text, budget, terms(goal))
        if focused is not None:
            return focused, True
    return _head(text, budget), True


def _note(shown: int, total: int) -> str:
    return f"\n[... page cut: {shown} of {total} characters shown]"


def _head(text: str, budget: int) -> str:
    room = max(budget - len(_note(budget, len(text))), 1)
    head = text[:room]
    for boundary in ("\n\n", "\n", ". "):
        at = head.rfind(boundary)
        if at >= room // 2:
            head = head[: at + (1 if boundary == ". " else 0)]
            break
    return head + _note(len(head), len(text))


def _focus(text: str, budget: int, wanted: set[str]) -> str | None:
    """The paragraphs that match ``wanted`` best, in page order, within ``budget``."""
    if not wanted:
        return None
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n|\n", text) if p.strip()]
    scores = [len(terms(p) & wanted) for p in paragraphs]
    if not any(scores):
        return None
    room = budget - len(_note(budget, len(text))) - len("[goal-focused excerpt]\n")
    chosen: set[int] = set()
    used = 0
    for i in sorted(range(len(paragraphs)), key=lambda i: (-scores[i], i)):
        if scores[i] == 0:
            break
        cost = len(paragraphs[i]) + 6
        if used + cost > room:
            if not chosen:  # the best paragraph alone is too long: take its beginning
                return "[goal-focused excerpt]\n" + _head(paragraphs[i], budget - 24)
            continue
        chosen.add(i)
        used += cost
    parts: list[str] = []
    last = -1
    for i in sorted(chosen):
        if last >= 0 and i != last + 1:
            parts.append("[...]")
        parts.append(paragraphs[i])
        last = i
    shown = "\n".join(parts)
    return "[goal-focused excerpt]\n" + shown + _note(len(shown), len(text))
