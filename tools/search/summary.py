"""The ``goal`` hook of ``web_visit``: a page summarised for the goal by a served model.

R1V4 had long pages summarised by another model. ``ModelSummarizer`` builds that request
(``summary_request``: OpenAI chat messages and the serving contract's sampling) and hands it to
a ``Chat`` callable that whoever runs the tool attaches (the pipeline's model client, with its
retries and deadline, for the endpoint the ``summarize`` setting names), so ``tools`` imports no
model-server client. It is off unless ``web_visit`` is given a ``summarize`` setting.
"""

from __future__ import annotations

from typing import Any

from tools.base import Chat
from tools.search.results import ProviderError, WebPage

SYSTEM_PROMPT = (
    "You read web pages for a research assistant. Report only what the page says that serves "
    "the goal, with names, numbers and dates exactly as written. If the page says nothing "
    "about the goal, say so in one sentence."
)
CHARS_PER_TOKEN = 4  # budget conversion for max_tokens; generous, the reply is cut anyway


def summary_request(
    page: WebPage,
    goal: str,
    budget_chars: int,
    *,
    max_page_chars: int = 24_000,
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(messages, sampling)`` for summarising ``page`` for ``goal`` in ``budget_chars``."""
    text = page.text[:max_page_chars]
    if len(page.text) > max_page_chars:
        text += "\n[... the page goes on]"
    user = (
        f"Goal: {goal}\n"
        f"URL: {page.url}\n"
        f"Title: {page.title or '(none)'}\n\n"
        f"Page content:\n{text}\n\n"
        f"Write what the page says about the goal, in at most {budget_chars} characters."
    )
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": [{"type": "text", "text": user}]},
    ]
    sampling = {
        "max_tokens": max(16, budget_chars // CHARS_PER_TOKEN),
        "temperature": temperature,
        "top_p": 1.0,
        "seed": seed,
        "stop": [],
    }
    return messages, sampling


class ModelSummarizer:
    """``PageSummarizer`` over a ``Chat``."""

    def __init__(
        self, chat: Chat, *, max_page_chars: int = 24_000, temperature: float = 0.0
    ) -> None:
        self.chat = chat
        self.max_page_chars = max_page_chars
        self.temperature = temperature

    def summarize(self, page: WebPage, goal: str, budget_chars: int) -> str:
        messages, sampling = summary_request(
            page,
            goal,
            budget_chars,
            max_page_chars=self.max_page_chars,
            temperature=self.temperature,
        )
        try:
            text = self.chat(messages, sampling)
        except ProviderError:
            raise
        except Exception as error:  # whatever the model client raised
            raise ProviderError(f"The page summary failed: {error}") from error
        return text.strip()[:budget_chars]
