"""`ModelClient` over Triton's gRPC API: the `agent_vlm` tensors (docs/formats.md, "The
serving contract"): `messages` and `sampling` in as JSON BYTES, `text`, `finish_reason` and
`usage` out. A model with a batch dimension (`max_batch_size > 0`) takes `[1, 1]` tensors,
one without takes `[1]`; the config is asked once (again later if the server was not up).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from beam_pipelines.model_client.base import (
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


class TritonClient:
    """One gRPC channel to a Triton server, for `model_name`."""

    def __init__(self, url: str, model_name: str = "agent_vlm") -> None:
        self.url = url
        self.model_name = model_name
        self._grpc = grpcclient.InferenceServerClient(url)
        self._batched: bool | None = None
        self._lock = threading.Lock()

    def _config(self, timeout_s: float) -> dict[str, Any]:
        try:
            found = self._grpc.get_model_config(
                self.model_name, as_json=True, client_timeout=timeout_s
            )
        except InferenceServerException as e:
            raise call_error(e) from e
        return found["config"]

    def batched(self) -> bool:
        """Whether the model takes a batch dimension (asked once; the server may start late)."""
        with self._lock:
            if self._batched is None:
                try:
                    self._batched = int(self._config(30).get("max_batch_size", 0)) > 0
                except CallError:
                    return True  # agent_vlm's configs all batch; ask again next time
            return self._batched

    def send(
        self,
        messages: Sequence[Mapping[str, Any]],
        sampling: Mapping[str, Any],
        timeout_s: float,
        done: Done,
    ) -> None:
        batched = self.batched()
        inputs = [
            bytes_input("messages", json.dumps(messages, ensure_ascii=False).encode(), batched),
            bytes_input("sampling", json.dumps(sampling).encode(), batched),
        ]

        def on_result(result: Any, error: InferenceServerException | None) -> None:
            if error is not None:
                done(None, call_error(error))
                return
            try:
                completion = decode(result)
            except BadResponseError as e:
                done(None, e)
                return
            done(completion, None)

        try:
            self._grpc.async_infer(
                self.model_name, inputs, callback=on_result, client_timeout=timeout_s
            )
        except InferenceServerException as e:  # a channel that fails before sending
            done(None, call_error(e))

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
        self._grpc.close()
