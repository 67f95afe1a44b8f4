"""The ``goal`` hook of ``web_visit``: a page summarised for the goal by the model server.

R1V4 had long pages summarised by another model. ``TritonSummarizer`` does that through the
project's own serving contract (DESIGN.md section 5): one request to an ``agent_vlm``-style
model with ``messages`` (OpenAI chat JSON) and ``sampling`` (JSON) as BYTES tensors, reading
``text`` and ``finish_reason`` back. It is off unless ``web_visit`` is given a ``summarize``
setting, and ``tritonclient`` is imported only when it is first used, so ``tools`` keeps no
Triton import. ``summary_request`` builds the request and is what the tests check.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

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


class TritonSummarizer:
    """``PageSummarizer`` over a Triton gRPC endpoint serving the ``agent_vlm`` contract.

    ``client_factory(url)`` makes the gRPC client (``tritonclient.grpc.InferenceServerClient``
    by default); tests pass a fake. The client is made on first use and not pickled.
    """

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        model: str = "agent_vlm",
        *,
        timeout_s: float = 60.0,
        max_page_chars: int = 24_000,
        temperature: float = 0.0,
        client_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self.max_page_chars = max_page_chars
        self.temperature = temperature
        self._client_factory = client_factory
        self._client: Any = None
        self._batched: bool | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_batched": None, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _connect(self) -> tuple[Any, bool]:
        with self._lock:
            if self._client is None:
                if self._client_factory is not None:
                    self._client = self._client_factory(self.url)
                else:
                    import tritonclient.grpc as grpcclient  # only when summaries are on

                    self._client = grpcclient.InferenceServerClient(self.url)
            if self._batched is None:
                config = self._client.get_model_config(self.model, as_json=True)
                self._batched = int(config["config"].get("max_batch_size", 0)) > 0
            return self._client, self._batched

    def summarize(self, page: WebPage, goal: str, budget_chars: int) -> str:
        messages, sampling = summary_request(
            page,
            goal,
            budget_chars,
            max_page_chars=self.max_page_chars,
            temperature=self.temperature,
        )
        try:
            client, batched = self._connect()
            inputs = [
                _bytes_input("messages", json.dumps(messages).encode(), batched),
                _bytes_input("sampling", json.dumps(sampling).encode(), batched),
            ]
            result = client.infer(self.model, inputs, client_timeout=self.timeout_s)
            text = _output(result, "text")
            finish = _output(result, "finish_reason")
        except ProviderError:
            raise
        except Exception as error:  # tritonclient raises its own exception types
            raise ProviderError(f"The page summary failed: {error}") from error
        if finish == "error":
            raise ProviderError(f"The page summary failed: {text[:200]}")
        return text.strip()[:budget_chars]


def _bytes_input(name: str, payload: bytes, batched: bool) -> Any:
    import numpy as np
    import tritonclient.grpc as grpcclient

    shape = [1, 1] if batched else [1]
    tensor = grpcclient.InferInput(name, shape, "BYTES")
    tensor.set_data_from_numpy(np.array([payload], dtype=np.object_).reshape(shape))
    return tensor


def _output(result: Any, name: str) -> str:
    value = result.as_numpy(name).reshape(-1)[0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
