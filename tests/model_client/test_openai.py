"""The OpenAI-compatible client: its request and reply mapping, and the wire against a real
HTTP server process (the gateway) with the official `openai` client as an independent check."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

from beam_pipelines.model_client.base import (
    BadResponseError,
    CallError,
    Completion,
    ModelEndpoint,
    ModelError,
    ModelReply,
    RetryPolicy,
)
from beam_pipelines.model_client.channel import ModelChannel, complete
from beam_pipelines.model_client.openai import OpenAIClient, closing_stop, decode, request_body

STOPS = ["</tool_call>", "</answer>"]
CALL = json.dumps({"name": "code", "arguments": {"code": "print(1)"}})
MESSAGES = [{"role": "user", "content": [{"type": "text", "text": f"CALL {CALL}"}]}]


def body(content: Any, **choice: Any) -> dict[str, Any]:
    return {
        "choices": [{"message": {"role": "assistant", "content": content}, **choice}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def test_the_request_carries_the_contracts_sampling() -> None:
    sampling = {"max_tokens": 64, "temperature": 0.0, "top_p": 1.0, "seed": 3, "stop": STOPS}
    assert request_body("r1v4", MESSAGES, sampling) == {
        "model": "r1v4",
        "messages": MESSAGES,
        **sampling,
    }
    assert "stop" not in request_body("m", MESSAGES, {"stop": []})


@pytest.mark.parametrize(
    ("content", "choice", "text"),
    [
        ("<think>a</think><answer>B", {"stop_reason": "</answer>"}, "<answer>B</answer>"),
        ("<think>a</think><answer>B", {"matched_stop": "</answer>"}, "<answer>B</answer>"),
        ("<think>a</think><tool_call>{}", {}, "<tool_call>{}</tool_call>"),
        ("<think>a</think><answer>B</answer>", {}, "<answer>B</answer>"),
        ("<think>no tag", {}, "<think>no tag"),
    ],
)
def test_the_matched_stop_string_is_put_back(content: str, choice: dict, text: str) -> None:
    completion = decode(body(content, finish_reason="stop", **choice), {"stop": STOPS})
    assert completion.text.endswith(text)
    assert completion.usage == {"prompt_tokens": 7, "completion_tokens": 3}


def test_a_reply_cut_by_length_is_left_as_it_is() -> None:
    completion = decode(body("<think>long", finish_reason="length"), {"stop": STOPS})
    assert completion == Completion("<think>long", "length", completion.usage)
    assert closing_stop("<answer>x", {}, []) == ""


@pytest.mark.parametrize("bad", [{}, {"choices": []}, {"choices": [{}]}, body(["parts"])])
def test_a_reply_that_is_not_a_chat_completion_is_a_bad_response(bad: Any) -> None:
    with pytest.raises(BadResponseError):
        decode(bad, {})


# -- against a real server -------------------------------------------------------------------


def channel(url: str, model: str = "agent_vlm", **kwargs: Any) -> ModelChannel:
    retry = RetryPolicy(max_attempts=2, initial_s=0.05, max_s=0.1)
    endpoint = ModelEndpoint(url, model, kind="openai", retry=retry, **kwargs)
    return ModelChannel(endpoint)


@pytest.mark.integration
def test_our_client_and_the_official_one_agree_on_the_wire(gateway: Callable[..., str]) -> None:
    import openai

    url = gateway("scripted:call")
    sampling = {"max_tokens": 64, "temperature": 0.0, "stop": STOPS}
    official = openai.OpenAI(base_url=url, api_key="unused").chat.completions.create(
        model="agent_vlm", messages=MESSAGES, **sampling
    )
    assert official.choices[0].message.content == f"<think>calling</think><tool_call>{CALL}"
    assert official.choices[0].finish_reason == "stop"
    assert official.usage is not None and official.usage.completion_tokens > 0
    assert [m.id for m in openai.OpenAI(base_url=url, api_key="unused").models.list()] == [
        "agent_vlm"
    ]
    ours = channel(url)
    try:
        reply = complete(ours, MESSAGES, sampling)
        info = ours.client.describe(5)
    finally:
        ours.close()
    assert isinstance(reply, ModelReply)
    assert reply.text == f"<think>calling</think><tool_call>{CALL}</tool_call>"
    assert reply.usage["completion_tokens"] == official.usage.completion_tokens
    assert info.label == "openai:agent_vlm" and info.budget is None  # such servers state none


@pytest.mark.integration
def test_many_requests_in_flight_over_one_connection_pool(gateway: Callable[..., str]) -> None:
    # Each reply takes 1 s: one after another, 24 would take 24 s; the deadline (8 s) holds
    # only if they wait at once, over the client's pool of connections.
    url = gateway("scripted:call,delay_s=1", "--max-in-flight", "64")
    ours = channel(url, max_in_flight=24, timeout_s=8)
    replies: list[Any] = []
    try:
        threads = [
            threading.Thread(target=lambda: replies.append(complete(ours, MESSAGES, {})))
            for _ in range(24)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        ours.close()
    assert len(replies) == 24 and all(isinstance(r, ModelReply) for r in replies), replies


@pytest.mark.integration
def test_a_model_the_server_does_not_serve_fails_without_retries(
    gateway: Callable[..., str],
) -> None:
    ours = channel(gateway("scripted:call"), model="other")
    try:
        reply = complete(ours, MESSAGES, {})
        with pytest.raises(CallError, match="not 'other'"):
            ours.client.describe(5)
    finally:
        ours.close()
    assert isinstance(reply, ModelError) and reply.attempts == 1
    assert reply.message.startswith("HTTP 404")


@pytest.mark.integration
def test_no_server_is_unavailable_after_the_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    ours = channel(f"http://127.0.0.1:{port}/v1")
    try:
        reply = complete(ours, MESSAGES, {})
    finally:
        ours.close()
    assert isinstance(reply, ModelError)
    assert (reply.error_class, reply.code, reply.attempts) == (
        "model_unavailable",
        "UNAVAILABLE",
        2,
    )


@pytest.mark.integration
def test_a_slow_server_is_a_deadline(gateway: Callable[..., str]) -> None:
    ours = channel(gateway("scripted:call,delay_s=3"), timeout_s=0.3)
    try:
        reply = complete(ours, MESSAGES, {})
    finally:
        ours.close()
    assert isinstance(reply, ModelError) and reply.code == "DEADLINE_EXCEEDED"


def test_the_api_key_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1V4_KEY", "sk-test")
    client = OpenAIClient("http://127.0.0.1:9/v1", "m", api_key_env="R1V4_KEY")
    try:
        assert client._headers == {"Authorization": "Bearer sk-test"}
    finally:
        client.close()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    bare = OpenAIClient("http://127.0.0.1:9/v1", "m")
    try:
        assert bare._headers == {}
    finally:
        bare.close()
