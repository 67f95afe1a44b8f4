"""Many requests in flight on one client: the in-flight budget, retries, deadlines, views.

`ModelChannel` is one worker's client of one endpoint and its in-flight budget (a semaphore
of `max_in_flight` slots), shared by every turn's `Generate` DoFn through
`beam.utils.shared`, so `--max_in_flight` bounds what a worker sends in total (a per-stage
bound would multiply it by `max_turns`). `InFlightRequests` is one DoFn's view of it:
`submit` sends a request (blocking only while every slot is taken), completions arrive on
the client's threads, and `completed` / `wait_all` hand them back to the DoFn's thread.

A request that fails with a retryable code is sent again after an exponential backoff (a
timer thread, so no DoFn thread sleeps) and keeps its slot meanwhile; when its attempts are
spent, or on any other error, it completes as a `ModelError`. Every request has a deadline
(`timeout_s`), so a hung server becomes DEADLINE_EXCEEDED rather than a hung pipeline.

Image parts in a trajectory point at stored PNG views (already within the model's pixel
budget); `ViewCache` turns them into `data:` URLs, caching by URI within a byte budget
(views are content-addressed, hence immutable).
"""

from __future__ import annotations

import base64
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from beam_pipelines import progress
from beam_pipelines.io.files import read_bytes
from beam_pipelines.model_client.base import (
    MODEL_CALL_CLASS,
    BadResponseError,
    CallError,
    Completion,
    ModelClient,
    ModelEndpoint,
    ModelError,
    ModelReply,
    error_class_of,
    retry_delay,
)

#: One cache per worker (all turns share it): enough for the views of every job in flight.
DEFAULT_CACHE_BYTES = 32 * 1024 * 1024


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


def client_for(endpoint: ModelEndpoint) -> ModelClient:
    """The client of `endpoint.kind` (each imports its own wire library only when used)."""
    if endpoint.kind == "openai":
        from beam_pipelines.model_client.openai import OpenAIClient

        return OpenAIClient(endpoint.url, endpoint.model_name, endpoint.api_key_env)
    if endpoint.kind == "scripted":
        from beam_pipelines.model_client.scripted import ScriptedClient

        return ScriptedClient.named(endpoint.url)
    from beam_pipelines.model_client.triton import TritonClient

    return TritonClient(endpoint.url, endpoint.model_name)


class ModelChannel:
    """One worker's client of one model endpoint, its in-flight budget and its view cache.

    A worker's `Generate` stages share one: each takes it with `open` in its setup and gives it
    back with `release` in its teardown, and the last to give it back closes the client. For
    Triton that ends the client's gRPC stream, which a server waits for: it does not unload a
    model while a stream to it is open, so a server stopped after a run (annotate's local
    one) waited out its exit timeout, 30 s, when the run left its stream open. An `open` after
    that starts a new client. Other users (judges, summaries) `close` their own channel.
    """

    def __init__(self, endpoint: ModelEndpoint, client: ModelClient | None = None) -> None:
        self.endpoint = endpoint
        self.client = client if client is not None else client_for(endpoint)
        self.slots = threading.BoundedSemaphore(endpoint.max_in_flight)
        self.views = ViewCache()
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False

    def open(self) -> ModelChannel:
        """Take the channel (a new client if it was closed); give it back with `release`."""
        with self._lock:
            if self._closed:
                self.client = client_for(self.endpoint)
                self._closed = False
            self._users += 1
        return self

    def release(self) -> None:
        """Give back what `open` took; the last user's release closes the client."""
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._close()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        self._closed = True
        self.client.close()


@dataclass
class _Request:
    key: Hashable
    messages: Sequence[Mapping[str, Any]]
    sampling: Mapping[str, Any]
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
        self._channel.slots.acquire()
        self._outstanding += 1
        progress.board().add(in_flight=1)
        self._send(_Request(key=key, messages=messages, sampling=sampling))

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

    # -- client and timer threads ------------------------------------------------------------

    def _send(self, request: _Request) -> None:
        request.attempts += 1
        progress.board().add(requests=1)
        try:
            self._channel.client.send(
                request.messages,
                request.sampling,
                self._endpoint.timeout_s,
                lambda completion, error: self._on_result(request, completion, error),
            )
        except Exception as e:  # a closed client or unencodable input completes the request
            self._on_result(request, None, e)

    def _on_result(
        self, request: _Request, completion: Completion | None, error: BaseException | None
    ) -> None:
        if completion is not None:
            reply = ModelReply(
                text=completion.text,
                finish_reason=completion.finish_reason,
                usage=completion.usage,
                latency_s=time.monotonic() - request.started,
                attempts=request.attempts,
            )
            self._finish(request, reply)
            return
        assert error is not None
        if isinstance(error, BadResponseError):
            failure = ModelError(MODEL_CALL_CLASS, "", f"bad response: {error}", request.attempts)
            self._finish(request, failure)
            return
        code = error.code if isinstance(error, CallError) else ""
        delay = retry_delay(self._endpoint.retry, code, request.attempts)
        if delay is not None:
            self.retries += 1
            progress.board().add(retries=1)
            timer = threading.Timer(delay, self._send, args=(request,))
            timer.daemon = True
            timer.start()
            return
        message = str(error) or type(error).__name__
        self._finish(request, ModelError(error_class_of(code), code, message, request.attempts))

    def _finish(self, request: _Request, outcome: ModelReply | ModelError) -> None:
        self._channel.slots.release()
        progress.board().add(in_flight=-1)
        self._done.put((request.key, outcome))


def complete(
    channel: ModelChannel, messages: Sequence[Mapping[str, Any]], sampling: Mapping[str, Any]
) -> ModelReply | ModelError:
    """One request through `channel`'s budget and retries, waited for (judges, summaries)."""
    requests = InFlightRequests(channel)
    requests.submit(0, messages, sampling)
    return next(requests.wait_all())[1]


def chat_for(settings: Mapping[str, Any]) -> Callable[[list[dict[str, Any]], dict[str, Any]], str]:
    """A tool's `Chat` (`tools.base.Chat`) for the model its settings name: `endpoint`
    (`KIND:URL`), `model`, `timeout_s`; requests go through a channel of their own, with its
    retries, and a failure raises."""
    endpoint = ModelEndpoint.at(
        str(settings["endpoint"]),
        str(settings.get("model", "agent_vlm")),
        timeout_s=float(settings.get("timeout_s", 60.0)),
        max_in_flight=8,
    )
    channel = ModelChannel(endpoint)

    def chat(messages: list[dict[str, Any]], sampling: dict[str, Any]) -> str:
        reply = complete(channel, messages, sampling)
        if isinstance(reply, ModelError):
            raise RuntimeError(f"{reply.error_class}: {reply.message}")
        if reply.finish_reason == "error":
            raise RuntimeError(f"the model failed: {reply.text[:200]}")
        return reply.text

    return chat
