"""Helpers shared by the serving tests: request building and a small gRPC client."""

from __future__ import annotations

import base64
import io
import json
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


def infer(client: grpcclient.InferenceServerClient, messages: Any, sampling: Any) -> Reply:
    """One synchronous request."""
    return reply(client.infer(MODEL_NAME, inputs(messages, sampling)))
