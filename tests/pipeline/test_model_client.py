"""The model client's pure parts: the retry rule, the view cache, request building."""

import base64

import pytest

from beam_pipelines.model_client import (
    DEADLINE_CLASS,
    MODEL_CALL_CLASS,
    UNAVAILABLE_CLASS,
    ViewCache,
    error_class_of,
    inline_images,
    retry_delay,
)
from beam_pipelines.options import RetryPolicy

POLICY = RetryPolicy(max_attempts=4, initial_s=0.5, max_s=1.5)


@pytest.mark.parametrize("code", ["UNAVAILABLE", "DEADLINE_EXCEEDED"])
def test_transient_errors_back_off_exponentially_up_to_the_cap(code: str) -> None:
    assert [retry_delay(POLICY, code, n) for n in (1, 2, 3)] == [0.5, 1.0, 1.5]
    assert retry_delay(POLICY, code, 4) is None  # attempts spent


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "INTERNAL", "NOT_FOUND", ""])
def test_other_errors_are_not_retried(code: str) -> None:
    assert retry_delay(POLICY, code, 1) is None


def test_error_classes() -> None:
    assert error_class_of("UNAVAILABLE") == UNAVAILABLE_CLASS
    assert error_class_of("DEADLINE_EXCEEDED") == DEADLINE_CLASS
    assert error_class_of("INVALID_ARGUMENT") == MODEL_CALL_CLASS


def test_view_cache_reads_each_uri_once_and_evicts_the_oldest() -> None:
    reads: list[str] = []

    def reader(uri: str) -> bytes:
        reads.append(uri)
        return uri.encode() * 100

    cache = ViewCache(max_bytes=1000, reader=reader)
    first = cache.data_url("a")
    assert first == "data:image/png;base64," + base64.b64encode(b"a" * 100).decode()
    assert cache.data_url("a") == first and reads == ["a"]
    for uri in "bcdefghij":
        cache.data_url(uri)
    cache.data_url("a")
    assert reads.count("a") == 2  # evicted under the byte budget, read again
    assert cache.data_url("data:image/png;base64,xx") == "data:image/png;base64,xx"


def test_inline_images_replaces_only_image_parts() -> None:
    cache = ViewCache(reader=lambda uri: b"png")
    messages = [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "gs://b/images/x.png"}},
                {"type": "text", "text": "q"},
            ],
        },
    ]
    out = inline_images(messages, cache)
    assert out[0] == messages[0]
    assert out[1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert out[1]["content"][1] == {"type": "text", "text": "q"}
    assert messages[1]["content"][0]["image_url"]["url"] == "gs://b/images/x.png"  # untouched
