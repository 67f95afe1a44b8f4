"""The pipeline's client of `agent_vlm` (DESIGN.md section 5): many requests in flight, retries.

`ModelChannel` is one gRPC client per worker process and its in-flight budget (a semaphore of
`max_in_flight` slots) shared by every turn's `Generate` DoFn through `beam.utils.shared`, so
`--max_in_flight` bounds what a worker sends to the server in total (a per-stage bound would
multiply it by `max_turns`). `InFlightRequests` is one DoFn's view of it: `submit` sends a
request through `async_infer` (blocking only while every slot is taken), callbacks collect
results on gRPC threads, and `completed` / `wait_all` hand them back to the DoFn's thread.

A request that fails with a retryable code is sent again after an exponential backoff (a
timer thread, so no DoFn thread sleeps) and keeps its slot meanwhile; when its attempts are
spent, or on any other error, it completes as a `ModelError`. Every request has a deadline
(`client_timeout`), so a hung server becomes DEADLINE_EXCEEDED rather than a hung pipeline.

Image parts in the trajectory point at stored PNG views (already within the model's pixel
budget); `ViewCache` turns them into `data:` URLs, caching by URI within a byte budget
(views are content-addressed, hence immutable).
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from beam_pipelines import progress
from beam_pipelines.io.files import read_bytes
from beam_pipelines.options import ModelEndpoint, RetryPolicy

#: One cache per worker (all turns share it): enough for the views of every job in flight.
DEFAULT_CACHE_BYTES = 32 * 1024 * 1024
#: Error classes of failure rows written for model calls.
UNAVAILABLE_CLASS = "model_unavailable"
DEADLINE_CLASS = "model_deadline"
MODEL_CALL_CLASS = "model_call_error"


@dataclass(frozen=True)
class ModelReply:
    """One generation: the contract's outputs plus what the client measured."""

    text: str
    finish_reason: str
    usage: dict[str, int]
    latency_s: float
    attempts: int


@dataclass(frozen=True)
class ModelError:
    """A request that failed for good: after its retries, or at once when not retryable."""

    error_class: str
    code: str
    message: str
    attempts: int


def status_code(error: BaseException) -> str:
    """`UNAVAILABLE`, `DEADLINE_EXCEEDED`, ... from a tritonclient error ('' if none)."""
    if isinstance(error, InferenceServerException):
        status = error.status() or ""
        return str(status).rsplit(".", 1)[-1].upper()
    return ""


def retry_delay(policy: RetryPolicy, code: str, attempt: int) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None when it must not be retried.

    `attempt` counts the tries made so far (1 after the first). Exponential from
    `initial_s`, doubling per try, capped at `max_s`.
    """
    if code not in policy.retryable or attempt >= policy.max_attempts:
        return None
    return min(policy.max_s, policy.initial_s * (2 ** (attempt - 1)))


def error_class_of(code: str) -> str:
    return {"UNAVAILABLE": UNAVAILABLE_CLASS, "DEADLINE_EXCEEDED": DEADLINE_CLASS}.get(
        code, MODEL_CALL_CLASS
    )


class ViewCache:
    """Image URI -> `data:image/png;base64,...`, least recently used first out, byte-bounded.

    A job's earlier images are resent with every later turn, so each view is read once and
    served from here after that; the bound keeps memory flat however long the corpus.
    Thread-safe: a worker's DoFn threads share one.
    """

    def __init__(
        self, max_bytes: int = DEFAULT_CACHE_BYTES, reader: Callable[[str], bytes] = read_bytes
    ) -> None:
        self._max_bytes = max_bytes
        self._reader = reader
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def data_url(self, uri: str) -> str:
        if uri.startswith("data:"):
            return uri
        with self._lock:
            cached = self._entries.get(uri)
            if cached is not None:
                self._entries.move_to_end(uri)
                self.hits += 1
                return cached
            self.misses += 1
        url = "data:image/png;base64," + base64.b64encode(self._reader(uri)).decode("ascii")
        with self._lock:
            if uri not in self._entries:
                self._entries[uri] = url
                self._bytes += len(url)
            while self._bytes > self._max_bytes and len(self._entries) > 1:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted)
        return url


def inline_images(messages: Sequence[Mapping[str, Any]], cache: ViewCache) -> list[dict[str, Any]]:
    """The messages with every image part's URI replaced by its `data:` URL."""
    out: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            out.append(dict(message))
            continue
        parts = []
        for part in content:
            if part.get("type") == "image_url":
                url = cache.data_url(part["image_url"]["url"])
                part = {"type": "image_url", "image_url": {"url": url}}
            parts.append(part)
        out.append({**message, "content": parts})
    return out


def _bytes_input(name: str, payload: bytes, batched: bool) -> grpcclient.InferInput:
    shape = [1, 1] if batched else [1]
    tensor = grpcclient.InferInput(name, shape, "BYTES")
    tensor.set_data_from_numpy(np.array([payload], dtype=np.object_).reshape(shape))
    return tensor


def _output(result: Any, name: str) -> str:
    value = result.as_numpy(name).reshape(-1)[0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def decode_reply(result: Any, latency_s: float, attempts: int) -> ModelReply:
    """The contract's output tensors as a `ModelReply`."""
    usage = json.loads(_output(result, "usage") or "{}")
    return ModelReply(
        text=_output(result, "text"),
        finish_reason=_output(result, "finish_reason"),
        usage={
            "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "completion_tokens": int(usage.get("completion_tokens", 0)),
        },
        latency_s=latency_s,
        attempts=attempts,
    )


class ModelChannel:
    """One worker's client of one model endpoint, its in-flight budget and its view cache."""

    def __init__(self, endpoint: ModelEndpoint) -> None:
        self.endpoint = endpoint
        self.client = grpcclient.InferenceServerClient(endpoint.url)
        self.slots = threading.BoundedSemaphore(endpoint.max_in_flight)
        self.views = ViewCache()
        self._batched: bool | None = None
        self._lock = threading.Lock()

    def batched(self) -> bool:
        """Whether the model takes a batch dimension (asked once; the server may start late)."""
        with self._lock:
            if self._batched is None:
                try:
                    config = self.client.get_model_config(
                        self.endpoint.model_name, as_json=True, client_timeout=30
                    )
                    self._batched = int(config["config"].get("max_batch_size", 0)) > 0
                except InferenceServerException:
                    return True  # agent_vlm's configs all batch; ask again next time
            return self._batched

    def close(self) -> None:
        self.client.close()


@dataclass
class _Request:
    key: Hashable
    messages: bytes
    sampling: bytes
    attempts: int = 0
    started: float = field(default_factory=time.monotonic)


class InFlightRequests:
    """One DoFn's requests on a shared `ModelChannel`; results come back in completion order."""

    def __init__(self, channel: ModelChannel) -> None:
        self._channel = channel
        self._endpoint = channel.endpoint
        self._done: queue.SimpleQueue[tuple[Hashable, ModelReply | ModelError]] = (
            queue.SimpleQueue()
        )
        self._outstanding = 0  # touched only on the DoFn's thread
        self.retries = 0

    @property
    def outstanding(self) -> int:
        """Requests submitted and not yet handed back."""
        return self._outstanding

    def submit(
        self, key: Hashable, messages: Sequence[Mapping[str, Any]], sampling: Mapping[str, Any]
    ) -> None:
        """Send one request; blocks while the worker's every slot is taken."""
        request = _Request(
            key=key,
            messages=json.dumps(messages, ensure_ascii=False).encode("utf-8"),
            sampling=json.dumps(sampling).encode("utf-8"),
        )
        self._channel.slots.acquire()
        self._outstanding += 1
        progress.board().add(in_flight=1)
        self._send(request)

    def completed(self) -> list[tuple[Hashable, ModelReply | ModelError]]:
        """Results that arrived since the last call, without waiting."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                break
        self._outstanding -= len(out)
        return out

    def wait_all(self) -> Iterator[tuple[Hashable, ModelReply | ModelError]]:
        """Every outstanding result, as each arrives."""
        while self._outstanding:
            item = self._done.get()
            self._outstanding -= 1
            yield item

    # -- callbacks (gRPC / timer threads) --------------------------------------------------

    def _send(self, request: _Request) -> None:
        request.attempts += 1
        progress.board().add(requests=1)
        try:
            inputs = [
                _bytes_input("messages", request.messages, self._channel.batched()),
                _bytes_input("sampling", request.sampling, self._channel.batched()),
            ]
            self._channel.client.async_infer(
                self._endpoint.model_name,
                inputs,
                callback=lambda result, error: self._on_result(request, result, error),
                client_timeout=self._endpoint.timeout_s,
            )
        except Exception as e:  # a closed channel or bad input must complete the request
            self._on_result(request, None, e)

    def _on_result(self, request: _Request, result: Any, error: BaseException | None) -> None:
        if error is None:
            try:
                reply: ModelReply | ModelError = decode_reply(
                    result, time.monotonic() - request.started, request.attempts
                )
            except (ValueError, KeyError, TypeError, InferenceServerException) as e:
                reply = ModelError(MODEL_CALL_CLASS, "", f"bad response: {e}", request.attempts)
            self._finish(request, reply)
            return
        code = status_code(error)
        delay = retry_delay(self._endpoint.retry, code, request.attempts)
        if delay is not None:
            self.retries += 1
            progress.board().add(retries=1)
            timer = threading.Timer(delay, self._send, args=(request,))
            timer.daemon = True
            timer.start()
            return
        message = error.message() if isinstance(error, InferenceServerException) else str(error)
        self._finish(
            request,
            ModelError(error_class_of(code), code, message or str(error), request.attempts),
        )

    def _finish(self, request: _Request, outcome: ModelReply | ModelError) -> None:
        self._channel.slots.release()
        progress.board().add(in_flight=-1)
        self._done.put((request.key, outcome))


@dataclass(frozen=True)
class ModelInfo:
    """What the server's model config says about the model the pipeline talks to."""

    label: str
    max_pixels: int | None


def describe_model(url: str, model_name: str, timeout_s: float = 30.0) -> ModelInfo:
    """Ask the server for `model_name`'s config: a label for traces and its pixel budget.

    The label is `<model>/<engine>:<checkpoint>` from the config's parameters when it has
    them; the pixel budget is its `max_pixels` parameter (None when the config has none).
    """
    client = grpcclient.InferenceServerClient(url)
    try:
        config = client.get_model_config(model_name, as_json=True, client_timeout=timeout_s)
    finally:
        client.close()
    parameters = {
        k: v.get("string_value", "") for k, v in config["config"].get("parameters", {}).items()
    }
    label = model_name
    if parameters.get("engine"):
        label += f"/{parameters['engine']}"
        if parameters.get("checkpoint"):
            label += f":{parameters['checkpoint']}"
    raw = parameters.get("max_pixels", "")
    return ModelInfo(label=label, max_pixels=int(raw) if raw.isdigit() else None)
