"""`ModelClient` over Triton's gRPC API: the `agent_vlm` tensors (docs/formats.md, "The
serving contract"): `messages` and `sampling` in as JSON BYTES, `text`, `finish_reason` and
`usage` out. A model with a batch dimension (`max_batch_size > 0`) takes `[1, 1]` tensors,
one without takes `[1]`; the config is asked once (again later if the server was not up).

`agent_vlm` is decoupled (`model_transaction_policy { decoupled: true }`: each request is
answered when the engine finishes it), which Triton serves only over its bidirectional gRPC
stream: the client keeps one stream, sends each request on it with its own id and matches
responses by id. A stream has no per-request deadline, so each request's deadline is a timer
that completes it with DEADLINE_EXCEEDED (a late response is dropped); when the stream breaks,
every request on it completes with the stream's error and the next `send` opens a new one. A
model that is not decoupled is called with unary `async_infer`.
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from beam_pipelines.model_client.base import (
    DEADLINE_EXCEEDED,
    UNAVAILABLE,
    BadResponseError,
    CallError,
    Completion,
    Done,
    ImageBudget,
    ModelInfo,
    usage_of,
)


def call_error(error: InferenceServerException) -> CallError:
    """tritonclient's exception as a `CallError` with the bare status name."""
    code = str(error.status() or "").rsplit(".", 1)[-1].upper()
    return CallError(code, error.message() or str(error))


def stream_error(error: InferenceServerException | None) -> CallError:
    """A stream's failure as a `CallError`. tritonclient reports a stream it can no longer use
    (the server died, the connection dropped) without a status: that is `UNAVAILABLE`, so the
    channel retries the request, which opens a new stream; a refusal keeps its own status."""
    if error is None:
        return CallError(UNAVAILABLE, "the stream ended without a response")
    failure = call_error(error)
    return failure if failure.code else CallError(UNAVAILABLE, str(failure))


def bytes_input(name: str, payload: bytes, batched: bool) -> grpcclient.InferInput:
    shape = [1, 1] if batched else [1]
    tensor = grpcclient.InferInput(name, shape, "BYTES")
    tensor.set_data_from_numpy(np.array([payload], dtype=np.object_).reshape(shape))
    return tensor


def _output(result: Any, name: str) -> str:
    array = result.as_numpy(name)
    if array is None:
        raise BadResponseError(f"no {name!r} output")
    value = array.reshape(-1)[0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def decode(result: Any) -> Completion:
    """The contract's output tensors as a `Completion`."""
    try:
        return Completion(
            text=_output(result, "text"),
            finish_reason=_output(result, "finish_reason"),
            usage=usage_of(json.loads(_output(result, "usage") or "{}")),
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise BadResponseError(str(e)) from e


@dataclass(frozen=True)
class ModelShape:
    """What the client needs to know of the model's config."""

    batched: bool  # a batch dimension: `[1, 1]` tensors
    decoupled: bool  # answered over the gRPC stream


@dataclass
class _Pending:
    done: Done
    deadline: threading.Timer
    stream: int  # the stream it was sent on


class TritonClient:
    """One gRPC channel to a Triton server, for `model_name` (one stream for a decoupled one)."""

    def __init__(self, url: str, model_name: str = "agent_vlm") -> None:
        self.url = url
        self.model_name = model_name
        self._grpc = grpcclient.InferenceServerClient(url)
        self._shape: ModelShape | None = None
        # `_shape_lock` guards asking for the model's shape; `_lock` the pending requests;
        # `_stream_lock` opening, using and closing the stream (never taken by the stream's
        # own thread, which closing a stream waits for).
        self._shape_lock = threading.Lock()
        self._lock = threading.Lock()
        self._stream_lock = threading.Lock()
        self._ids = itertools.count()
        self._streams = itertools.count()
        self._pending: dict[str, _Pending] = {}
        self._stream: int | None = None  # the open stream's number
        self._broken: int | None = None  # the last stream that failed

    def _config(self, timeout_s: float) -> dict[str, Any]:
        try:
            found = self._grpc.get_model_config(
                self.model_name, as_json=True, client_timeout=timeout_s
            )
        except InferenceServerException as e:
            raise call_error(e) from e
        return found["config"]

    def shape(self) -> ModelShape:
        """The model's batch dimension and transaction policy (asked once; the server may start
        late)."""
        with self._shape_lock:
            if self._shape is None:
                try:
                    config = self._config(30)
                except CallError:
                    # agent_vlm's configs all batch and are decoupled; ask again next time
                    return ModelShape(batched=True, decoupled=True)
                policy = config.get("model_transaction_policy") or {}
                self._shape = ModelShape(
                    batched=int(config.get("max_batch_size", 0)) > 0,
                    decoupled=bool(policy.get("decoupled", False)),
                )
            return self._shape

    def send(
        self,
        messages: Sequence[Mapping[str, Any]],
        sampling: Mapping[str, Any],
        timeout_s: float,
        done: Done,
    ) -> None:
        shape = self.shape()
        inputs = [
            bytes_input(
                "messages", json.dumps(messages, ensure_ascii=False).encode(), shape.batched
            ),
            bytes_input("sampling", json.dumps(sampling).encode(), shape.batched),
        ]
        if shape.decoupled:
            self._send_on_stream(inputs, timeout_s, done)
            return

        def on_result(result: Any, error: InferenceServerException | None) -> None:
            _complete(done, result, error)

        try:
            self._grpc.async_infer(
                self.model_name, inputs, callback=on_result, client_timeout=timeout_s
            )
        except InferenceServerException as e:  # a channel that fails before sending
            done(None, call_error(e))

    def _send_on_stream(
        self, inputs: list[grpcclient.InferInput], timeout_s: float, done: Done
    ) -> None:
        request_id = str(next(self._ids))
        deadline = threading.Timer(timeout_s, self._expire, args=(request_id, timeout_s))
        deadline.daemon = True
        registered = False
        with self._stream_lock:
            try:
                stream = self._open_stream()
                with self._lock:
                    self._pending[request_id] = _Pending(done, deadline, stream)
                registered = True
                self._grpc.async_stream_infer(self.model_name, inputs, request_id=request_id)
            except InferenceServerException as e:
                self._stream = None  # opened again by the next request
                with self._lock:
                    unanswered = self._pending.pop(request_id, None) is not None
                if unanswered or not registered:  # else the stream's failure answered it
                    done(None, stream_error(e))
                return
        deadline.start()

    def _open_stream(self) -> int:
        """The open stream's number; a new stream when there is none or it failed."""
        with self._lock:
            usable = self._stream is not None and self._broken != self._stream
        if not usable:
            # A failed stream is closed first (its requests have completed already).
            self._grpc.stop_stream(cancel_requests=True)
            stream = next(self._streams)
            self._grpc.start_stream(callback=functools.partial(self._on_stream_response, stream))
            self._stream = stream
        assert self._stream is not None
        return self._stream

    def _expire(self, request_id: str, timeout_s: float) -> None:
        with self._lock:
            pending = self._pending.pop(request_id, None)
        if pending is not None:
            message = f"no response within the request's deadline of {timeout_s:g} s"
            pending.done(None, CallError(DEADLINE_EXCEEDED, message))

    def _on_stream_response(
        self, stream: int, result: Any, error: InferenceServerException | None
    ) -> None:
        """The stream's thread: a response is matched to its request by id; an error names no
        request (the stream failed, or the server refused a request on it), so it completes
        every request sent on that stream, and the next request opens a new stream."""
        if result is not None:
            with self._lock:
                pending = self._pending.pop(result.get_response().id, None)
            if pending is not None:  # None: its deadline fired first
                pending.deadline.cancel()
                _complete(pending.done, result, None)
            return
        with self._lock:
            self._broken = stream
            failed = [key for key, p in self._pending.items() if p.stream == stream]
            ended = [self._pending.pop(key) for key in failed]
        for pending in ended:
            pending.deadline.cancel()
            pending.done(None, stream_error(error))

    def describe(self, timeout_s: float) -> ModelInfo:
        """The label `<model>/<engine>:<checkpoint>` from the config's parameters when it has
        them, and the image budget they state (None when they state none)."""
        config = self._config(timeout_s)
        parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        label = self.model_name
        if parameters.get("engine"):
            label += f"/{parameters['engine']}"
            if parameters.get("checkpoint"):
                label += f":{parameters['checkpoint']}"
        return ModelInfo(label=label, budget=ImageBudget.from_parameters(parameters))

    def close(self) -> None:
        with self._stream_lock:
            self._grpc.stop_stream(cancel_requests=True)
            self._stream = None
        self._grpc.close()


def _complete(done: Done, result: Any, error: InferenceServerException | None) -> None:
    """Call `done` with the decoded completion, or the error as a `CallError`."""
    if error is not None:
        done(None, call_error(error))
        return
    try:
        completion = decode(result)
    except BadResponseError as e:
        done(None, e)
        return
    done(completion, None)
