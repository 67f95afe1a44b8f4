"""The seam's records and rules: endpoints, the retry rule."""

import pytest

from beam_pipelines.model_client.base import ModelEndpoint, RetryPolicy, parse_endpoint, retry_delay

POLICY = RetryPolicy(max_attempts=4, initial_s=0.5, max_s=1.5)


@pytest.mark.parametrize("code", ["UNAVAILABLE", "DEADLINE_EXCEEDED"])
def test_transient_errors_back_off_exponentially_up_to_the_cap(code: str) -> None:
    assert [retry_delay(POLICY, code, n) for n in (1, 2, 3)] == [0.5, 1.0, 1.5]
    assert retry_delay(POLICY, code, 4) is None  # attempts spent


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "INTERNAL", "NOT_FOUND", ""])
def test_other_errors_are_not_retried(code: str) -> None:
    assert retry_delay(POLICY, code, 1) is None


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("triton:127.0.0.1:8001", ("triton", "127.0.0.1:8001")),
        ("127.0.0.1:8001", ("triton", "127.0.0.1:8001")),
        ("openai:https://h.example/v1", ("openai", "https://h.example/v1")),
        ("scripted:call,delay_s=0.3", ("scripted", "call,delay_s=0.3")),
    ],
)
def test_endpoints_name_their_kind(value: str, parsed: tuple[str, str]) -> None:
    assert parse_endpoint(value) == parsed
    kind, url = parsed
    assert ModelEndpoint(url, kind=kind).address == f"{kind}:{url}"


@pytest.mark.parametrize("value", ["https://h.example/v1", "openai:", "triton:"])
def test_an_endpoint_without_its_kind_or_address_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(value)


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown endpoint kind"):
        ModelEndpoint("h:1", kind="grpc")
