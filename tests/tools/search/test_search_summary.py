"""The goal-summary hook: the request it builds, its errors, and the chat the pipeline attaches."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from tools.search.results import ProviderError, WebPage
from tools.search.search_tools import WebVisitTool
from tools.search.summary import SYSTEM_PROMPT, ModelSummarizer, summary_request

PAGE = WebPage(url="https://e.example/k", title="Kestrels", text="Kestrels hover. " * 100)


def test_the_request_follows_the_agent_vlm_contract() -> None:
    messages, sampling = summary_request(PAGE, "how do kestrels hunt", 400, max_page_chars=100)
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    user = messages[1]
    assert user["role"] == "user" and user["content"][0]["type"] == "text"
    text = user["content"][0]["text"]
    assert text.startswith("Goal: how do kestrels hunt\nURL: https://e.example/k\nTitle: Kestrels")
    assert "[... the page goes on]" in text and "at most 400 characters" in text
    assert sampling == {"max_tokens": 100, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": []}
    json.dumps(messages), json.dumps(sampling)  # both travel as JSON


class RecordingChat:
    """A ``Chat`` that records what it was asked and answers ``text``."""

    def __init__(self, text: str = "They hover, then drop.") -> None:
        self.text = text
        self.sent: list[tuple[Any, Any]] = []

    def __call__(self, messages: list[dict[str, Any]], sampling: dict[str, Any]) -> str:
        self.sent.append((messages, sampling))
        return self.text


def test_the_summarizer_sends_the_request_and_cuts_the_reply_to_the_budget() -> None:
    chat = RecordingChat()
    summarizer = ModelSummarizer(chat)
    assert summarizer.summarize(PAGE, "how do kestrels hunt", 10) == "They hover"
    assert chat.sent == [summary_request(PAGE, "how do kestrels hunt", 10)]


def test_model_errors_become_provider_errors() -> None:
    def unreachable(messages: Any, sampling: Any) -> str:
        raise RuntimeError("model_unavailable: connection refused")

    with pytest.raises(ProviderError, match="connection refused"):
        ModelSummarizer(unreachable).summarize(PAGE, "goal", 100)


def test_summaries_need_an_endpoint_and_a_known_setting() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        WebVisitTool(summarize={"model": "agent_vlm"})
    with pytest.raises(ValueError, match="unknown summarize"):
        WebVisitTool(summarize={"endpoint": "scripted:call", "url": "h:1"})


def test_the_pipeline_attaches_its_model_client_to_web_visit() -> None:
    """Through the pipeline's tool runtime, the summary comes from the model the setting
    names (here the in-process scripted client, whose reply is `unscripted`)."""
    from beam_pipelines.transforms.execute_tools import ToolRuntime

    runtime = ToolRuntime(
        ["web_visit"], 1, {"web_visit": {"summarize": {"endpoint": "scripted:call"}}}
    )
    visit = runtime.tools["web_visit"]
    assert visit.provider is not None  # built on first use, as a call does
    page = visit._render(PAGE, "how do kestrels hunt", 300)
    assert "[summary for the goal]" in page and "unscripted" in page
    copy = pickle.loads(pickle.dumps(visit))  # a worker's chat never travels
    assert "[summary unavailable: no model client" in copy._render(PAGE, "goal", 300)
