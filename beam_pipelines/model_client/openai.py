"""`ModelClient` over the OpenAI-compatible chat completions API (`POST {base}/chat/completions`).

The same pipeline then drives vLLM, SGLang, `trtllm-serve`, Triton's OpenAI frontend or a
hosted endpoint. Messages go as they are (image parts are already `data:` URLs), the
contract's sampling maps onto the request's own fields, and the reply's first choice becomes
the completion. Such servers leave the matched stop string out of the text, while the
contract's `text` ends with it: it is put back from the choice's `stop_reason` (vLLM) or
`matched_stop` (SGLang), else from the stop string whose opening tag is left open.

Requests run on one asyncio loop in a daemon thread with one `httpx.AsyncClient`, so a worker
keeps many in flight without a thread each. The API key is read from the environment variable
the endpoint names (never an option, never stored); without it no `Authorization` header is
sent, as local servers expect. 429, 5xx and connection failures are `UNAVAILABLE`, timeouts
`DEADLINE_EXCEEDED`: the channel retries both.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import httpx

from beam_pipelines.model_client.base import (
    DEADLINE_EXCEEDED,
    UNAVAILABLE,
    BadResponseError,
    CallError,
    Completion,
    Done,
    ModelInfo,
    usage_of,
)

#: Sampling fields the contract and the chat completions API share.
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "seed", "stop")


def request_body(
    model: str, messages: Sequence[Mapping[str, Any]], sampling: Mapping[str, Any]
) -> dict[str, Any]:
    """The chat completions request for one turn."""
    body: dict[str, Any] = {"model": model, "messages": list(messages)}
    body.update({k: sampling[k] for k in SAMPLING_FIELDS if sampling.get(k) is not None})
    if not body.get("stop"):
        body.pop("stop", None)
    return body


def closing_stop(text: str, choice: Mapping[str, Any], stops: Sequence[str]) -> str:
    """The stop string the server matched and left out of `text` ('' when none)."""
    for key in ("stop_reason", "matched_stop"):
        if choice.get(key) in stops:
            return str(choice[key])
    for stop in stops:
        opening = stop.replace("</", "<", 1)
        if stop.startswith("</") and text.rfind(opening) > text.rfind(stop):
            return stop
    return ""


def decode(body: Any, sampling: Mapping[str, Any]) -> Completion:
    """A chat completions response as the contract's `Completion`."""
    try:
        choice = body["choices"][0]
        text = choice["message"].get("content") or ""
        finish = str(choice.get("finish_reason") or "stop")
        usage = usage_of(body.get("usage"))
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise BadResponseError(f"not a chat completion: {e!r}") from e
    if not isinstance(text, str):
        raise BadResponseError("the choice's content is not text")
    stops = sampling.get("stop") or []
    if finish == "stop" and not any(text.endswith(s) for s in stops):
        text += closing_stop(text, choice, stops)
    return Completion(text=text, finish_reason=finish, usage=usage)


def status_error(response: httpx.Response) -> CallError:
    code = UNAVAILABLE if response.status_code == 429 or response.status_code >= 500 else ""
    detail = response.text[:500].strip()
    return CallError(code, f"HTTP {response.status_code}: {detail}")


class OpenAIClient:
    """Chat completions at `base_url` for `model`."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY") -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        key = os.environ.get(api_key_env)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="openai-client", daemon=True
        )
        self._thread.start()
        self._http = self._run(self._open()).result()

    async def _open(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        return httpx.AsyncClient(headers=self._headers, limits=limits, follow_redirects=False)

    def _run(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _post(
        self, body: dict[str, Any], sampling: Mapping[str, Any], timeout_s: float
    ) -> Completion:
        try:
            response = await self._http.post(
                f"{self.base_url}/chat/completions", json=body, timeout=timeout_s
            )
        except httpx.TimeoutException as e:
            raise CallError(DEADLINE_EXCEEDED, f"no reply in {timeout_s:g} s: {e!r}") from e
        except httpx.TransportError as e:
            raise CallError(UNAVAILABLE, f"cannot reach {self.base_url}: {e!r}") from e
        if response.status_code != 200:
            raise status_error(response)
        try:
            payload = response.json()
        except ValueError as e:
            raise BadResponseError(f"not JSON: {response.text[:200]!r}") from e
        return decode(payload, sampling)

    def send(
        self,
        messages: Sequence[Mapping[str, Any]],
        sampling: Mapping[str, Any],
        timeout_s: float,
        done: Done,
    ) -> None:
        body = request_body(self.model, messages, sampling)
        future = self._run(self._post(body, sampling, timeout_s))

        def finished(f: Future[Completion]) -> None:
            error = f.exception()
            done(None, error) if error is not None else done(f.result(), None)

        future.add_done_callback(finished)

    def describe(self, timeout_s: float) -> ModelInfo:
        """The served model's id from `GET /models` (these servers state no pixel budget)."""

        async def models() -> httpx.Response:
            return await self._http.get(f"{self.base_url}/models", timeout=timeout_s)

        try:
            response = self._run(models()).result()
        except httpx.HTTPError as e:
            raise CallError(UNAVAILABLE, f"cannot reach {self.base_url}: {e!r}") from e
        if response.status_code != 200:
            raise status_error(response)
        served = [m.get("id") for m in response.json().get("data", []) if isinstance(m, dict)]
        if self.model not in served:
            raise CallError("NOT_FOUND", f"{self.base_url} serves {served}, not {self.model!r}")
        return ModelInfo(label=f"openai:{self.model}", budget=None)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._http.aclose()).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
