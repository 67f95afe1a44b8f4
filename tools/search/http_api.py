"""The HTTP client of the search APIs: API keys, rate limits, retries, and clean errors.

- **Keys** come from the environment at request time (``ApiKey``): a tool object never holds
  one, so pickling a pipeline (which pickles its tools) cannot carry a key anywhere, and a
  missing key is ``ToolUnavailableError`` (the job fails for a reason the model cannot fix).
  Every error message built from a request or a response, and every answer, goes through
  ``redact``, which also finds the key base64-encoded, URL-encoded, in hex or in another case.
- **Rate limits** are token buckets (``RateLimiter.shared(name, ...)``): one bucket per provider
  name (and rate) per process, so every tool using the same API in a worker shares it.
- **Retries** follow one small rule, ``retry_delay``: connection errors, timeouts, 429 and 5xx
  are retried with exponential backoff (or the server's ``Retry-After``, capped), anything else
  fails at once; the last failure becomes a ``ProviderError`` the model reads.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote, quote_plus

import httpx

from tools.base import ToolUnavailableError
from tools.search.results import ProviderError

log = logging.getLogger(__name__)
USER_AGENT = "beam-agentic-vlm/0.1 (search tools)"
REDACTED = "[REDACTED]"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one request."""

    max_attempts: int = 4
    initial_s: float = 0.5
    max_s: float = 8.0
    retry_statuses: tuple[int, ...] = (408, 429, 500, 502, 503, 504)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_s < 0 or self.max_s < self.initial_s:
            raise ValueError("max_attempts >= 1 and 0 <= initial_s <= max_s")


def retry_delay(
    policy: RetryPolicy, attempt: int, status: int | None, retry_after_s: float | None = None
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None when it must not be retried.

    ``attempt`` counts the tries made so far; ``status`` is the HTTP status of the last one
    (None for a connection error or timeout, which are always worth retrying). The wait
    doubles from ``initial_s`` up to ``max_s``; a server's ``Retry-After`` replaces it, within
    the same cap.
    """
    if attempt >= policy.max_attempts:
        return None
    if status is not None and status not in policy.retry_statuses:
        return None
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), policy.max_s)
    return min(policy.max_s, policy.initial_s * 2 ** (attempt - 1))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class RateLimiter:
    """A thread-safe token bucket: ``rate_per_s`` requests a second, bursts of ``burst``."""

    _shared: ClassVar[dict[str, RateLimiter]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        rate_per_s: float,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, name: str, rate_per_s: float, burst: int = 1) -> RateLimiter:
        """The process's bucket for ``name`` at these settings (made on first use)."""
        key = f"{name}|{rate_per_s}|{burst}"
        with cls._shared_lock:
            limiter = cls._shared.get(key)
            if limiter is None:
                limiter = cls._shared[key] = cls(rate_per_s, burst)
            return limiter

    def acquire(self, timeout_s: float | None = None) -> None:
        """Take one token, waiting for it; ``ProviderError`` if that would exceed the timeout."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(
                    self.burst, self._tokens + (now - self._updated) * self.rate_per_s
                )
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate_per_s
            if timeout_s is not None and wait > timeout_s:
                raise ProviderError(
                    "The search provider's rate limit leaves no request free in time; "
                    "try again later or use fewer queries."
                )
            self._sleep(wait)
            if timeout_s is not None:
                timeout_s -= wait


@dataclass(frozen=True)
class ApiKey:
    """The name of the environment variable holding a key; the key itself is never stored."""

    env: str

    def value(self) -> str:
        key = os.environ.get(self.env, "").strip()
        if not key:
            raise ToolUnavailableError(
                f"the search provider needs an API key in the environment variable {self.env}"
            )
        return key


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret replaced by ``[REDACTED]``, also when transformed.

    The forms looked for (``secret_forms``): the secret in any letter case, URL-encoded
    (``quote`` and ``quote_plus``) and in hexadecimal, in any case; and its base64 and
    URL-safe base64, at each of the three alignments it can have inside a longer base64 text.
    """
    pattern = _pattern(tuple(s for s in secrets if s))
    return pattern.sub(REDACTED, text) if pattern is not None else text


def redact_json(value: Any, secrets: tuple[str, ...]) -> Any:
    """A decoded JSON value with ``redact`` applied to every string in it, keys included."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [redact_json(item, secrets) for item in value]
    if isinstance(value, dict):
        return {redact(str(k), secrets): redact_json(v, secrets) for k, v in value.items()}
    return value


def secret_forms(secret: str) -> tuple[set[str], set[str]]:
    """(forms matched in any letter case, forms matched exactly) of one secret."""
    raw = secret.encode()
    any_case = {secret, quote(secret, safe=""), quote_plus(secret), raw.hex()}
    exact = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset in range(3):
            text = encode(b"\0" * offset + raw).decode()
            # Only the characters made of the secret's bits alone, whatever surrounds it.
            core = text[-(-8 * offset // 6) : 8 * (offset + len(raw)) // 6]
            if len(core) >= 8:
                exact.add(core)
    return any_case, exact


@functools.lru_cache(maxsize=64)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    any_case: set[str] = set()
    exact: set[str] = set()
    for secret in secrets:
        forms = secret_forms(secret)
        any_case |= forms[0]
        exact |= forms[1]
    parts = [f"(?i:{re.escape(f)})" for f in sorted(any_case, key=len, reverse=True)]
    parts += [re.escape(f) for f in sorted(exact, key=len, reverse=True)]
    return re.compile("|".join(parts)) if parts else None


class ApiClient:
    """JSON over HTTP to one API, with its key header, rate limiter and retry policy.

    ``base_url`` is a setting so tests (and proxies) can point it at another server. The
    ``httpx.Client`` is made on first use and is not pickled.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        key: ApiKey,
        key_header: str,
        *,
        timeout_s: float = 20.0,
        retry: RetryPolicy | None = None,
        rate_per_s: float = 5.0,
        burst: int = 5,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.key_header = key_header
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._transport = transport
        self._sleep = sleep
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_client=None, _lock=None, _transport=None, _sleep=time.sleep)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def limiter(self) -> RateLimiter:
        return RateLimiter.shared(self.name, self.rate_per_s, self.burst)

    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=self.timeout_s,
                    transport=self._transport,
                    trust_env=False,
                    follow_redirects=False,
                    headers={"User-Agent": USER_AGENT},
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def request_json(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """The decoded JSON answer; ``ProviderError`` (redacted) once retries are spent."""
        key = self.key.value()
        headers = {self.key_header: key, "Accept": "application/json"}
        url = f"{self.base_url}{path}"
        attempt = 0
        while True:
            attempt += 1
            self.limiter.acquire(timeout_s=self.timeout_s)
            status: int | None = None
            retry_after: float | None = None
            try:
                response = self.client().request(
                    method, url, json=json, params=params, headers=headers
                )
                status = response.status_code
                if status < 300:
                    try:
                        # A provider could echo the key back (in any form): never pass it on.
                        return redact_json(response.json(), (key,))
                    except ValueError as error:
                        raise ProviderError(
                            f"{self.name} returned a response that is not JSON."
                        ) from error
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                problem = f"{self.name} answered HTTP {status}: {_brief(response.text)}"
            except httpx.TimeoutException:
                problem = f"{self.name} did not answer within {self.timeout_s:g} s"
            except httpx.HTTPError as error:
                problem = f"{self.name} could not be reached ({type(error).__name__})"
            problem = redact(problem, (key,))
            wait = retry_delay(self.retry, attempt, status, retry_after)
            if wait is None:
                log.warning("%s %s failed after %d attempt(s): %s", method, path, attempt, problem)
                raise ProviderError(f"The search failed: {problem}.")
            log.info("%s %s: %s; retrying in %.1f s", method, path, problem, wait)
            self._sleep(wait + random.uniform(0, wait / 4))


def _brief(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
