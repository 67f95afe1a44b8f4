"""Helpers shared by the serving tests: request building, a small gRPC client (`agent_vlm` is
decoupled, so requests go over a gRPC stream), and waiting for an in-flight engine."""

from __future__ import annotations

import base64
import io
import json
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient
from PIL import Image

from beam_pipelines.model_client.triton import bytes_input

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / "triton_repo" / "agent_vlm"
MODEL_NAME = "agent_vlm"


@dataclass(frozen=True)
class Reply:
    """The three output tensors of one `agent_vlm` response, decoded."""

    text: str
    finish_reason: str
    usage: dict[str, int]


def data_url(image: Image.Image, image_format: str = "PNG") -> str:
    """A `data:` URL holding `image` encoded as `image_format`."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    mime = f"image/{image_format.lower()}"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def image_message(text: str, image: Image.Image | None = None) -> list[dict[str, Any]]:
    """A system prompt and one user turn with an optional image part."""
    content: list[dict[str, Any]] = []
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": data_url(image)}})
    content.append({"type": "text", "text": text})
    return [
        {"role": "system", "content": "Answer the question about the image."},
        {"role": "user", "content": content},
    ]


def sample_image(color: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (64, 48)):
    """A small image with some structure (a square of another colour)."""
    image = Image.new("RGB", size, color)
    image.paste((20, 20, 220), (8, 8, 24, 24))
    return image


def inputs(messages: Any, sampling: Any) -> list[grpcclient.InferInput]:
    """The two input tensors; str/bytes are sent as they are (malformed requests), other
    values as JSON."""

    def tensor(name: str, value: Any) -> grpcclient.InferInput:
        raw = value if isinstance(value, bytes | str) else json.dumps(value)
        return bytes_input(name, raw.encode() if isinstance(raw, str) else raw, batched=True)

    return [tensor("messages", messages), tensor("sampling", sampling)]


def reply(result: grpcclient.InferResult) -> Reply:
    """The output tensors as the server wrote them (its `usage` JSON unnormalised, unlike the
    model client's decoding, so a test sees exactly what the server sent)."""

    def first(name: str) -> str:
        return result.as_numpy(name).reshape(-1)[0].decode("utf-8")

    return Reply(first("text"), first("finish_reason"), json.loads(first("usage")))


def stream_infer(
    client: grpcclient.InferenceServerClient,
    requests: Sequence[list[grpcclient.InferInput]],
    timeout_s: float = 120,
) -> list[grpcclient.InferResult]:
    """Send every request at once on one stream; their results in request order."""
    arrived: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: arrived.put((result, error)))
    try:
        for index, tensors in enumerate(requests):
            client.async_stream_infer(MODEL_NAME, tensors, request_id=str(index))
        results: dict[str, grpcclient.InferResult] = {}
        for _ in requests:
            result, error = arrived.get(timeout=timeout_s)
            assert error is None, error
            results[result.get_response().id] = result
    finally:
        client.stop_stream()
    return [results[str(index)] for index in range(len(requests))]


def infer(client: grpcclient.InferenceServerClient, messages: Any, sampling: Any) -> Reply:
    """One request, waited for."""
    return reply(stream_infer(client, [inputs(messages, sampling)])[0])


def generate_all(engine: Any, requests: Sequence[Any]) -> list[Any]:
    """Submit `requests` to an in-flight engine together; their results in request order."""
    results: dict[int, Any] = {}
    finished = threading.Condition()

    def done(index: int) -> Any:
        def record(result: Any) -> None:
            with finished:
                results[index] = result
                finished.notify_all()

        return record

    engine.submit([(request, done(index)) for index, request in enumerate(requests)])
    with finished:
        assert finished.wait_for(lambda: len(results) == len(requests), timeout=120)
    return [results[index] for index in range(len(requests))]
