"""The request/response contract, without Triton: parsing, validation, images, stop strings,
and how a dynamic batch reaches the engine."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from contract import (
    BatchScheduler,
    ContractError,
    GenerationRequest,
    GenerationResult,
    Limits,
    Sampling,
    answer,
    apply_stop,
    decode_data_url,
    encode_result,
    parse_messages,
    parse_request,
    parse_sampling,
    png_bytes_bound,
)
from engines import ServingConfig
from PIL import Image

from .support import data_url, image_message, sample_image


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- sampling --------------------------------------------------------------------------------


def test_sampling_defaults_when_empty() -> None:
    assert parse_sampling(b"{}") == Sampling()
    assert Sampling().greedy


def test_sampling_full() -> None:
    raw = {"max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ["</answer>"]}
    assert parse_sampling(json.dumps(raw)) == Sampling(7, 0.5, 0.9, 3, ("</answer>",))


def test_sampling_single_stop_string_becomes_a_tuple() -> None:
    assert parse_sampling('{"stop": "</tool_call>"}').stop == ("</tool_call>",)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "not valid UTF-8 JSON"),
        ("[]", "must be a JSON object"),
        ('{"n": 2}', "unknown keys ['n']"),
        ('{"max_tokens": 0}', "max_tokens"),
        ('{"max_tokens": 1.5}', "max_tokens"),
        ('{"max_tokens": 100000}', "max_tokens"),
        ('{"temperature": -1}', "temperature"),
        ('{"temperature": true}', "temperature"),
        ('{"top_p": 0}', "top_p"),
        ('{"seed": -1}', "seed"),
        ('{"seed": false}', "seed"),
        ('{"stop": [""]}', "stop"),
        ('{"stop": [1]}', "stop"),
    ],
)
def test_sampling_rejects(raw: str, message: str) -> None:
    with pytest.raises(ContractError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_sampling(raw)


def test_sampling_max_tokens_limit_is_configurable() -> None:
    with pytest.raises(ContractError, match=r"\[1, 8\]"):
        parse_sampling('{"max_tokens": 9}', Limits(max_tokens=8))


# -- messages and images ---------------------------------------------------------------------


def test_messages_decode_image_parts_to_rgb_pil_images() -> None:
    messages = parse_messages(json.dumps(image_message("What?", sample_image())))
    system, user = messages
    assert system == {"role": "system", "content": "Answer the question about the image."}
    image_part, text_part = user["content"]
    assert image_part["type"] == "image"
    assert image_part["image"].mode == "RGB"
    assert image_part["image"].size == (64, 48)
    assert image_part["image"].getpixel((10, 10)) == (20, 20, 220)
    assert text_part == {"type": "text", "text": "What?"}


def test_messages_accept_a_bare_url_string_as_image_url() -> None:
    part = {"type": "image_url", "image_url": data_url(sample_image())}
    messages = parse_messages(json.dumps([{"role": "user", "content": [part]}]))
    assert messages[0]["content"][0]["image"].size == (64, 48)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("{", "not valid UTF-8 JSON"),
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        ("[]", "non-empty JSON list"),
        ('[{"role": "robot", "content": "x"}]', "role"),
        ('[{"role": "user", "content": 3}]', "content"),
        ('[{"role": "user", "content": [{"type": "audio"}]}]', "type"),
        ('[{"role": "user", "content": [{"type": "text", "text": 1}]}]', "text"),
        (
            '[{"role": "user", "content": [{"type": "image_url", '
            '"image_url": {"url": "https://example.com/a.png"}}]}]',
            "data: URL",
        ),
    ],
)
def test_messages_reject(messages: str | bytes, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        parse_messages(messages)


def test_image_error_names_the_part() -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    raw = json.dumps([{"role": "user", "content": [{"type": "text", "text": "x"}, part]}])
    with pytest.raises(ContractError, match=r"messages\[0\]\.content\[1\]: image could not"):
        parse_messages(raw)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("data:image/png,rawbytes", "base64"),
        ("data:image/png;base64,!!!not-base64!!!", "not valid base64"),
        ("data:image/png;base64," + base64.b64encode(b"").decode(), "could not be decoded"),
        ("data:image/png;base64," + base64.b64encode(b"hello").decode(), "could not be decoded"),
    ],
)
def test_bad_data_urls(url: str, message: str) -> None:
    with pytest.raises(ContractError, match=message):
        decode_data_url(url)


def test_truncated_image_is_refused() -> None:
    blob = _png_bytes(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    )
    url = "data:image/png;base64," + base64.b64encode(blob[: len(blob) // 2]).decode()
    with pytest.raises(ContractError, match="could not be decoded"):
        decode_data_url(url)


def test_image_beyond_the_pixel_limit_is_refused_before_decoding() -> None:
    url = data_url(Image.new("RGB", (100, 100)))
    with pytest.raises(ContractError, match="exceeds the limit of 5000 pixels"):
        decode_data_url(url, Limits(max_image_pixels=5000))


def test_image_beyond_the_byte_limit_is_refused() -> None:
    url = data_url(Image.new("RGB", (100, 100)))
    with pytest.raises(ContractError, match="larger than 10 bytes"):
        decode_data_url(url, Limits(max_image_bytes=10))


def test_the_byte_limit_follows_the_pixel_limit_when_a_config_states_none() -> None:
    # Noise does not compress: a view at the pixel limit must still fit the byte limit (a
    # fixed 32 MiB refused a 16.7 MP photo-like view at R1V4's budget).
    side = 512
    noise = np.random.default_rng(1).integers(0, 256, (side, side, 3), np.uint8)
    url = "data:image/png;base64," + base64.b64encode(_png_bytes(Image.fromarray(noise))).decode()
    config = ServingConfig.from_parameters({"engine": "tiny", "max_image_pixels": str(side**2)})
    assert config.limits.max_image_bytes == png_bytes_bound(side**2)
    assert decode_data_url(url, config.limits).size == (side, side)
    stated = ServingConfig.from_parameters({"engine": "tiny", "max_image_bytes": "1000"})
    assert stated.limits.max_image_bytes == 1000
    with pytest.raises(ContractError, match="larger than 1000 bytes"):
        decode_data_url(url, stated.limits)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("RGBA", (4, 4), (0, 0, 0, 0)), (255, 255, 255)),  # transparent -> white
        (Image.new("LA", (4, 4), (0, 255)), (0, 0, 0)),
        (Image.new("L", (4, 4), 128), (128, 128, 128)),
        (Image.new("P", (4, 4), 0), (0, 0, 0)),
        (Image.new("I;16", (4, 4), 65535), (255, 255, 255)),
        (Image.new("CMYK", (4, 4), (0, 0, 0, 0)), (255, 255, 255)),
    ],
)
def test_image_modes_become_rgb(image: Image.Image, expected: tuple[int, int, int]) -> None:
    image_format = "JPEG" if image.mode == "CMYK" else "PNG"
    decoded = decode_data_url(data_url(image, image_format))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((1, 1)) == expected


# -- stop strings and output encoding --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        (
            "<think>a</think><answer>B</answer> more",
            ["</answer>"],
            ("<think>a</think><answer>B</answer>", True),
        ),
        ("abc", ["x"], ("abc", False)),
        ("abc", [], ("abc", False)),
        # the earliest end wins, whichever stop string it belongs to
        ("xx</tool_call>yy</answer>", ["</answer>", "</tool_call>"], ("xx</tool_call>", True)),
        # overlapping stops: the one that completes first
        ("abcd", ["bcd", "ab"], ("ab", True)),
    ],
)
def test_apply_stop(text: str, stop: list[str], expected: tuple[str, bool]) -> None:
    assert apply_stop(text, stop) == expected


def test_encode_result() -> None:
    ok = GenerationResult("hi", "stop", prompt_tokens=5, completion_tokens=2)
    assert encode_result(ok) == (b"hi", b"stop", b'{"prompt_tokens": 5, "completion_tokens": 2}')
    text, reason, usage = encode_result(GenerationResult.failure("bad image"))
    assert (text, reason, json.loads(usage)) == (
        b"bad image",
        b"error",
        {"prompt_tokens": 0, "completion_tokens": 0},
    )


# -- batches ---------------------------------------------------------------------------------


@dataclass
class RecordingEngine:
    """Answers with the request's last text part and records each call's batch size.

    The real engines are exercised in test_engine_hf.py and through Triton; this one makes the
    batch arithmetic of `answer` and `BatchScheduler` observable.
    """

    calls: list[int] = field(default_factory=list)
    fail_on: str | None = None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(len(requests))
        texts = [_last_text(r) for r in requests]
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"cannot generate {self.fail_on!r}")
        return [GenerationResult(t, "stop", 1, len(t)) for t in texts]


def _last_text(request: GenerationRequest) -> str:
    content = request.messages[-1]["content"]
    return content if isinstance(content, str) else content[-1]["text"]


def _raw(text: str, sampling: object = None) -> tuple[bytes, bytes]:
    messages = json.dumps(image_message(text, sample_image())).encode()
    return messages, json.dumps(sampling or {"max_tokens": 4}).encode()


def _answer(engine: RecordingEngine, rows: list[tuple[bytes, bytes]]) -> list[GenerationResult]:
    """The rows of one Triton request through a `BatchScheduler` over `engine`, waited for."""
    responses: list[list[GenerationResult]] = []
    responded = threading.Event()
    scheduler = BatchScheduler(engine)

    def respond(results: list[GenerationResult]) -> None:
        responses.append(results)
        responded.set()

    answer(scheduler, rows, respond)
    assert responded.wait(10)
    scheduler.close()
    assert len(responses) == 1  # one response per request, with every row
    return responses[0]


def test_valid_requests_reach_the_engine_in_one_call_and_bad_ones_fail_alone() -> None:
    engine = RecordingEngine()
    batch = [
        _raw("first"),
        (b"{not json", b"{}"),
        _raw("second"),
        _raw("bad sampling", {"top_p": 2}),
        (
            json.dumps(
                [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,AAAA"},
                            }
                        ],
                    }
                ]
            ).encode(),
            b"{}",
        ),
        _raw("third"),
    ]
    results = _answer(engine, batch)
    assert engine.calls == [3]
    assert [r.text for r in results if r.finish_reason == "stop"] == ["first", "second", "third"]
    errors = [r.error for r in results if r.finish_reason == "error"]
    assert len(errors) == 3
    assert "messages is not valid UTF-8 JSON" in errors[0]
    assert "top_p" in errors[1]
    assert "image could not be decoded" in errors[2]
    assert all(e.startswith("invalid request: ") for e in errors)


def test_an_engine_failure_is_isolated_to_the_request_that_causes_it() -> None:
    engine = RecordingEngine(fail_on="poison")
    results = _answer(engine, [_raw("a"), _raw("poison"), _raw("b")])
    assert engine.calls == [3, 1, 1, 1]  # the batch, then each request alone
    assert [r.finish_reason for r in results] == ["stop", "error", "stop"]
    assert results[1].error == "engine error: RuntimeError: cannot generate 'poison'"


def test_a_batch_of_only_invalid_requests_never_calls_the_engine() -> None:
    engine = RecordingEngine()
    results = _answer(engine, [(b"[]", b"{}")])
    assert engine.calls == []
    assert results[0].finish_reason == "error"


def test_the_scheduler_batches_what_waits_up_to_max_batch() -> None:
    """Requests that arrive while a batch generates form the next one, `max_batch` at most."""
    started, release = threading.Event(), threading.Event()

    class SlowEngine(RecordingEngine):
        def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
            started.set()
            release.wait(10)
            return super().generate(requests)

    engine = SlowEngine()
    scheduler = BatchScheduler(engine, max_batch=2)
    results: list[GenerationResult] = []
    all_done = threading.Event()

    def done(result: GenerationResult) -> None:
        results.append(result)
        if len(results) == 4:
            all_done.set()

    request = parse_request(*_raw("x"))
    scheduler.submit([(request, done)])
    assert started.wait(10)
    scheduler.submit([(request, done)] * 3)
    release.set()
    assert all_done.wait(10)
    scheduler.close()
    assert engine.calls == [1, 2, 1]
    assert [r.text for r in results] == ["x"] * 4


def test_a_closed_engine_fails_what_is_submitted() -> None:
    scheduler = BatchScheduler(RecordingEngine())
    scheduler.close()
    responses: list[list[GenerationResult]] = []
    answer(scheduler, [_raw("late")], responses.append)
    assert responses[0][0].error == "engine error: RuntimeError: the engine is closed"
