"""The goal-summary hook: the request it builds and how it talks to the serving contract."""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor

from tools.search.results import ProviderError, WebPage
from tools.search.summary import SYSTEM_PROMPT, TritonSummarizer, summary_request

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


class FakeResult:
    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs

    def as_numpy(self, name: str) -> np.ndarray:
        return np.array([self.outputs[name].encode()], dtype=np.object_)


class FakeTriton:
    """Records what ``tritonclient.grpc.InferenceServerClient`` would have been sent."""

    def __init__(self, url: str, batch: int = 8, text: str = "They hover, then drop.") -> None:
        self.url = url
        self.batch = batch
        self.text = text
        self.finish = "stop"
        self.sent: list[dict[str, Any]] = []

    def get_model_config(self, model: str, as_json: bool = False) -> dict[str, Any]:
        return {"config": {"name": model, "max_batch_size": self.batch}}

    def infer(self, model: str, inputs: list[Any], client_timeout: float) -> FakeResult:
        decoded = {}
        for tensor in inputs:
            assert tensor.datatype() == "BYTES"
            # The serialised BYTES tensor, as the gRPC request would carry it.
            payload = deserialize_bytes_tensor(tensor._raw_content)[0]
            decoded[tensor.name()] = {"shape": tensor.shape(), "json": json.loads(payload)}
        self.sent.append({"model": model, "inputs": decoded, "raw": inputs})
        return FakeResult({"text": self.text, "finish_reason": self.finish})


@pytest.mark.parametrize(("batch", "shape"), [(8, [1, 1]), (0, [1])])
def test_the_summarizer_sends_messages_and_sampling(batch: int, shape: list[int]) -> None:
    clients: list[FakeTriton] = []

    def factory(url: str) -> FakeTriton:
        clients.append(FakeTriton(url, batch))
        return clients[-1]

    summarizer = TritonSummarizer("127.0.0.1:9001", "agent_vlm", client_factory=factory)
    assert summarizer.summarize(PAGE, "how do kestrels hunt", 10) == "They hover"
    sent = clients[0].sent[0]
    assert clients[0].url == "127.0.0.1:9001" and sent["model"] == "agent_vlm"
    messages, sampling = summary_request(PAGE, "how do kestrels hunt", 10)
    assert sent["inputs"] == {
        "messages": {"shape": shape, "json": messages},
        "sampling": {"shape": shape, "json": sampling},
    }
    summarizer.summarize(PAGE, "again", 100)
    assert len(clients) == 1  # one client, made on first use


def test_model_errors_become_provider_errors() -> None:
    fake = FakeTriton("x")
    fake.finish, fake.text = "error", "engine crashed"
    summarizer = TritonSummarizer(client_factory=lambda url: fake)
    with pytest.raises(ProviderError, match="engine crashed"):
        summarizer.summarize(PAGE, "goal", 100)

    def unreachable(url: str) -> Any:
        raise ConnectionError("connection refused")

    with pytest.raises(ProviderError, match="connection refused"):
        TritonSummarizer(client_factory=unreachable).summarize(PAGE, "goal", 100)


def test_the_summarizer_pickles_without_its_client() -> None:
    summarizer = TritonSummarizer(client_factory=FakeTriton)
    summarizer.summarize(PAGE, "goal", 50)
    copy = pickle.loads(pickle.dumps(summarizer))
    assert copy._client is None and copy.url == summarizer.url
