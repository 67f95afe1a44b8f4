"""The `agent_vlm` request/response contract, independent of Triton.

docs/formats.md's serving contract: `messages` and `sampling` (JSON, BYTES [1]) in; `text`,
`finish_reason` and `usage` out. This module turns the raw bytes of one request into a
validated `GenerationRequest` (or a `ContractError` written for the client to read), defines
the engine protocols and answers each request as soon as the engine finishes it (`answer`):
a bad request fails alone, the valid ones are handed to the engine on arrival.

An engine either takes requests as they arrive (`InFlightEngine.submit`: it batches them in
flight itself, requests joining and leaving its running batch) or generates whole batches
(`Engine.generate`), which `BatchScheduler` feeds from a queue, one batch after another.

Decoded messages keep the OpenAI chat shape, except that every image part
`{"type": "image_url", "image_url": {"url": "data:..."}}` becomes
`{"type": "image", "image": <PIL.Image.Image in RGB>}` (the shape chat templates of the
Qwen-VL family expect), so engines never see base64.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "error"]

ROLES = frozenset({"system", "user", "assistant", "tool"})
SAMPLING_KEYS = frozenset({"max_tokens", "temperature", "top_p", "seed", "stop"})
DEFAULT_MAX_TOKENS = 256
# Requests are built by our own client within the model's pixel budget; anything far beyond
# is a mistake or a decompression bomb, and is refused before it is decoded.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


def png_bytes_bound(pixels: int) -> int:
    """The most bytes an RGB PNG of `pixels` pixels takes, with room to spare: 3 bytes a
    pixel, a filter byte a row and zlib's stored-block overhead when nothing compresses (a
    noisy photo). A config that states `max_image_pixels` but no `max_image_bytes` gets this,
    so no image within the pixel limit is refused for its size."""
    return 4 * pixels + (1 << 20)


DEFAULT_MAX_IMAGE_BYTES = png_bytes_bound(DEFAULT_MAX_IMAGE_PIXELS)  # 65 MiB
MAX_STOP_STRINGS = 16

T = TypeVar("T")


class ContractError(ValueError):
    """A request that does not follow the contract; the message goes back to the client."""


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters of one request (the `sampling` tensor)."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        """Temperature 0 means greedy decoding (top_p and seed are then irrelevant)."""
        return self.temperature == 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """One decoded request: chat messages (image parts hold PIL images) and sampling."""

    messages: list[dict[str, Any]]
    sampling: Sampling = field(default_factory=Sampling)


@dataclass(frozen=True)
class GenerationResult:
    """What an engine returns for one request."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None

    @classmethod
    def failure(cls, message: str) -> GenerationResult:
        """A result for a request that could not be generated."""
        return cls(text="", finish_reason="error", error=message)


class Engine(Protocol):
    """A batch generator behind `agent_vlm` (served through a `BatchScheduler`).

    `generate` receives a batch of valid requests and returns one result per request, in
    order. An engine reports a per-request failure as a result with `finish_reason="error"`;
    an exception means the whole call failed.
    """

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]: ...


#: Called once with a request's result, on any thread.
Done = Callable[[GenerationResult], None]


@runtime_checkable
class InFlightEngine(Protocol):
    """An engine that takes requests as they arrive and answers each when it finishes.

    `submit` hands over the requests that arrived together (they may start together) and
    returns at once; every request's `done` is called exactly once, with its result or a
    failure, in whatever order the requests finish. `close` stops the engine's threads.
    """

    def submit(self, requests: Sequence[tuple[GenerationRequest, Done]]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Limits:
    """Server-side bounds on requests (from the model config's parameters)."""

    max_tokens: int = 4096
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES


def parse_sampling(raw: bytes | str, limits: Limits = Limits()) -> Sampling:
    """Parse and validate the `sampling` JSON; unknown keys are refused, missing ones default."""
    data = _load_json(raw, "sampling")
    if not isinstance(data, dict):
        raise ContractError("sampling must be a JSON object")
    unknown = sorted(set(data) - SAMPLING_KEYS)
    if unknown:
        raise ContractError(
            f"sampling has unknown keys {unknown}; allowed: {sorted(SAMPLING_KEYS)}"
        )

    max_tokens = data.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not _is_int(max_tokens) or not 1 <= max_tokens <= limits.max_tokens:
        raise ContractError(f"sampling.max_tokens must be an integer in [1, {limits.max_tokens}]")
    temperature = data.get("temperature", 0.0)
    if not _is_number(temperature) or not 0.0 <= temperature <= 100.0:
        raise ContractError("sampling.temperature must be a number in [0, 100]")
    top_p = data.get("top_p", 1.0)
    if not _is_number(top_p) or not 0.0 < top_p <= 1.0:
        raise ContractError("sampling.top_p must be a number in (0, 1]")
    seed = data.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**63):
        raise ContractError("sampling.seed must be null or an integer in [0, 2**63)")
    stop = data.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP_STRINGS
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise ContractError(
            f"sampling.stop must be a string or a list of at most {MAX_STOP_STRINGS} "
            "non-empty strings"
        )
    return Sampling(
        max_tokens=int(max_tokens),
        temperature=float(temperature),
        top_p=float(top_p),
        seed=None if seed is None else int(seed),
        stop=tuple(stop),
    )


def parse_messages(raw: bytes | str, limits: Limits = Limits()) -> list[dict[str, Any]]:
    """Parse and validate the `messages` JSON, decoding every image part to a PIL RGB image."""
    data = _load_json(raw, "messages")
    if not isinstance(data, list) or not data:
        raise ContractError("messages must be a non-empty JSON list of chat messages")
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(data):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ContractError(f"{where} must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise ContractError(f"{where}.role must be one of {sorted(ROLES)}, got {role!r}")
        content = message.get("content")
        if isinstance(content, str):
            parts: str | list[dict[str, Any]] = content
        elif isinstance(content, list):
            parts = [
                _parse_part(part, f"{where}.content[{j}]", limits) for j, part in enumerate(content)
            ]
        else:
            raise ContractError(f"{where}.content must be a string or a list of parts")
        messages.append({**message, "content": parts})
    return messages


def parse_request(
    messages: bytes | str, sampling: bytes | str, limits: Limits = Limits()
) -> GenerationRequest:
    """Decode one request's two input tensors; raises `ContractError` when it is invalid."""
    return GenerationRequest(
        messages=parse_messages(messages, limits), sampling=parse_sampling(sampling, limits)
    )


def decode_data_url(url: str, limits: Limits = Limits()) -> Image.Image:
    """Decode a `data:image/...;base64,` URL into a fully loaded RGB image.

    Truncated or corrupt bytes, non-image payloads and images beyond `limits` raise
    `ContractError`. Transparency is flattened onto white, which is how a viewer shows it.
    """
    if not url.startswith("data:"):
        raise ContractError(
            f"image URL must be a data: URL (the server does not fetch images); got {url[:40]!r}"
        )
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise ContractError("image data URL must be base64-encoded (data:<mime>;base64,...)")
    if len(payload) > limits.max_image_bytes * 4 // 3 + 4:
        raise ContractError(f"image is larger than {limits.max_image_bytes} bytes")
    try:
        blob = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ContractError(f"image data URL is not valid base64: {exc}") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(blob))
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise ContractError(
                    f"image of {width}x{height} pixels exceeds the limit of "
                    f"{limits.max_image_pixels} pixels"
                )
            image.load()
    except ContractError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as exc:
        raise ContractError(f"image could not be decoded: {exc}") from exc
    except Image.DecompressionBombError as exc:
        raise ContractError(f"image could not be decoded: {exc}") from exc
    return _to_rgb(image)


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` just after the earliest stop string; returns the text and whether one hit."""
    best: int | None = None
    for s in stop:
        index = text.find(s)
        if index >= 0 and (best is None or index + len(s) < best):
            best = index + len(s)
    return (text, False) if best is None else (text[:best], True)


def answer(
    engine: InFlightEngine,
    raw_rows: Sequence[tuple[bytes | str, bytes | str]],
    respond: Callable[[list[GenerationResult]], None],
    limits: Limits = Limits(),
) -> None:
    """Decode the rows of one Triton request and hand the valid ones to the engine; `respond`
    gets every row's result, in row order, once the last one is done (on the thread that
    finished it).

    Invalid rows get an error result without reaching the engine; a failure to submit fails
    the rows it was given.
    """
    results: list[GenerationResult | None] = [None] * len(raw_rows)
    remaining = [len(raw_rows)]
    lock = threading.Lock()

    def finish(index: int, result: GenerationResult) -> None:
        with lock:
            results[index] = result
            remaining[0] -= 1
            last = remaining[0] == 0
        if not last:
            return
        try:
            respond([r for r in results if r is not None])  # every row has its result now
        except Exception:  # the client is gone; the engine's thread must go on
            log.exception("could not send a response")

    valid: list[tuple[GenerationRequest, Done]] = []
    invalid: list[tuple[int, GenerationResult]] = []
    for index, (messages, sampling) in enumerate(raw_rows):
        try:
            request = parse_request(messages, sampling, limits)
        except ContractError as exc:
            invalid.append((index, GenerationResult.failure(f"invalid request: {exc}")))
            continue
        valid.append((request, lambda result, index=index: finish(index, result)))
    if not raw_rows:
        respond([])
        return
    for index, result in invalid:
        finish(index, result)
    if not valid:
        return
    try:
        engine.submit(valid)
    except Exception as exc:  # reported to the client, never raised into Triton
        for _, done in valid:
            done(GenerationResult.failure(f"engine error: {type(exc).__name__}: {exc}"))


class WaitingRequests(Generic[T]):
    """What an engine's scheduler thread has yet to take. Triton's threads `put`, the
    scheduler thread `take`s; once `close`d, `put` raises, `take` returns None and `drain`
    hands back what was left, for the scheduler to fail."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._ready = threading.Condition()
        self.closed = False

    def put(self, items: Iterable[T]) -> None:
        with self._ready:
            if self.closed:
                raise RuntimeError("the engine is closed")
            self._items.extend(items)
            self._ready.notify()

    def take(self, limit: int, busy: Callable[[], bool] = lambda: False) -> list[T] | None:
        """Up to `limit` waiting items, first waiting for one unless `busy()` (the scheduler
        has other work to go on with); None once closed."""
        with self._ready:
            while not self._items and not busy() and not self.closed:
                self._ready.wait()
            if self.closed:
                return None
            taken = self._items[:limit]
            del self._items[:limit]
            return taken

    def close(self) -> None:
        with self._ready:
            self.closed = True
            self._ready.notify()

    def drain(self) -> list[T]:
        with self._ready:
            items, self._items = self._items, []
            return items


class BatchScheduler:
    """An `InFlightEngine` over a batch `Engine`: a thread takes every waiting request (up to
    `max_batch`) as soon as the previous batch is done and generates them together.

    When a batched call raises, each of its requests is retried alone, so only the request
    that breaks the engine fails (with the engine's message).
    """

    def __init__(self, engine: Engine, max_batch: int = 16) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._waiting: WaitingRequests[tuple[GenerationRequest, Done]] = WaitingRequests()
        self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        self._thread.start()

    def submit(self, requests: Sequence[tuple[GenerationRequest, Done]]) -> None:
        self._waiting.put(requests)

    def close(self) -> None:
        self._waiting.close()
        self._thread.join()

    def _run(self) -> None:
        while (batch := self._waiting.take(self.max_batch)) is not None:
            requests = [request for request, _ in batch]
            for (_, done), result in zip(
                batch, generate_isolated(self.engine, requests), strict=True
            ):
                done(result)
        for _, done in self._waiting.drain():
            done(GenerationResult.failure("the engine was closed"))


def generate_isolated(engine: Engine, requests: list[GenerationRequest]) -> list[GenerationResult]:
    """Generate `requests` in one engine call; when it raises, each request alone."""
    try:
        return _generate(engine, requests)
    except Exception:
        return [_generate_alone(engine, request) for request in requests]


def _generate(engine: Engine, requests: list[GenerationRequest]) -> list[GenerationResult]:
    if not requests:
        return []
    generated = engine.generate(requests)
    if len(generated) != len(requests):
        raise RuntimeError(f"engine returned {len(generated)} results for {len(requests)} requests")
    return list(generated)


def _generate_alone(engine: Engine, request: GenerationRequest) -> GenerationResult:
    try:
        return _generate(engine, [request])[0]
    except Exception as exc:  # reported to the client, never raised into Triton
        return GenerationResult.failure(f"engine error: {type(exc).__name__}: {exc}")


def encode_result(result: GenerationResult) -> tuple[bytes, bytes, bytes]:
    """The three output tensors' bytes: `text`, `finish_reason`, `usage` (JSON).

    For an error, `text` carries the error message so that a client sees why.
    """
    text = (result.error or "") if result.finish_reason == "error" else result.text
    usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}
    return (
        text.encode("utf-8"),
        result.finish_reason.encode("utf-8"),
        json.dumps(usage).encode("utf-8"),
    )


def image_parts(messages: Sequence[Mapping[str, Any]]) -> list[Image.Image]:
    """The decoded images of `messages`, in the order they appear."""
    images: list[Image.Image] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            images.extend(p["image"] for p in content if p.get("type") == "image")
    return images


def _parse_part(part: Any, where: str, limits: Limits) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise ContractError(f"{where} must be an object")
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise ContractError(f"{where}.text must be a string")
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        if not isinstance(url, str):
            raise ContractError(f"{where}.image_url.url must be a string")
        try:
            return {"type": "image", "image": decode_data_url(url, limits)}
        except ContractError as exc:
            raise ContractError(f"{where}: {exc}") from exc
    raise ContractError(f"{where}.type must be 'text' or 'image_url', got {kind!r}")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping everything to white.
        pixels = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def _load_json(raw: bytes | str, name: str) -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"{name} is not valid UTF-8 JSON: {exc}") from exc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
