"""The retry rule, Retry-After, the token bucket, API keys and redaction (no network)."""

from __future__ import annotations

import pickle

import pytest

from tools.base import ToolUnavailableError
from tools.search.http_api import (
    ApiClient,
    ApiKey,
    RateLimiter,
    RetryPolicy,
    parse_retry_after,
    redact,
    retry_delay,
)
from tools.search.results import ProviderError


def test_retry_rule_backs_off_exponentially_and_stops() -> None:
    policy = RetryPolicy(max_attempts=4, initial_s=0.5, max_s=1.5)
    assert [retry_delay(policy, n, 503) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, None]
    assert retry_delay(policy, 1, None) == 0.5  # connection error or timeout


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    assert retry_delay(RetryPolicy(), 1, status) is None


def test_retry_after_replaces_the_backoff_within_the_cap() -> None:
    policy = RetryPolicy(max_attempts=3, initial_s=0.5, max_s=4.0)
    assert retry_delay(policy, 1, 429, retry_after_s=2.0) == 2.0
    assert retry_delay(policy, 1, 429, retry_after_s=600.0) == 4.0


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_token_bucket_allows_a_burst_then_paces() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        limiter.acquire()
    assert clock.now == 0.0
    for _ in range(4):
        limiter.acquire()
    assert clock.now == pytest.approx(2.0)  # four more at 2/s


def test_token_bucket_refuses_a_wait_beyond_the_timeout() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=0.1, burst=1, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    with pytest.raises(ProviderError, match="rate limit"):
        limiter.acquire(timeout_s=1.0)


def test_shared_limiters_are_one_per_name_and_rate() -> None:
    a = RateLimiter.shared("test-shared-a", 1.0)
    assert RateLimiter.shared("test-shared-a", 1.0) is a
    assert RateLimiter.shared("test-shared-a", 99.0) is not a
    assert RateLimiter.shared("test-shared-b", 1.0) is not a


def test_a_missing_key_makes_the_provider_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_SEARCH_KEY", raising=False)
    with pytest.raises(ToolUnavailableError, match="TEST_SEARCH_KEY"):
        ApiKey("TEST_SEARCH_KEY").value()
    monkeypatch.setenv("TEST_SEARCH_KEY", " k-123 ")
    assert ApiKey("TEST_SEARCH_KEY").value() == "k-123"


def test_redact() -> None:
    assert redact("bad key k-123 for k-123x", ("k-123",)) == ("bad key [REDACTED] for [REDACTED]x")
    assert redact("nothing", ("",)) == "nothing"


def test_a_pickled_client_holds_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SEARCH_KEY", "very-secret-key")
    client = ApiClient("t", "http://127.0.0.1:9", ApiKey("TEST_SEARCH_KEY"), "X-API-KEY")
    client.client()
    data = pickle.dumps(client)
    assert b"very-secret-key" not in data
    assert pickle.loads(data).key.env == "TEST_SEARCH_KEY"
