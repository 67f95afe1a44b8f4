"""The channel every client shares: retries, budget, deadlines, views, and `complete`."""

import base64
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from beam_pipelines.model_client.base import (
    DEADLINE_CLASS,
    MODEL_CALL_CLASS,
    UNAVAILABLE_CLASS,
    BadResponseError,
    CallError,
    Completion,
    ModelEndpoint,
    ModelError,
    ModelInfo,
    ModelReply,
    RetryPolicy,
)
from beam_pipelines.model_client.channel import (
    InFlightRequests,
    ModelChannel,
    ViewCache,
    complete,
    inline_images,
)
from beam_pipelines.model_client.scripted import ScriptedClient

FAST_RETRY = RetryPolicy(max_attempts=3, initial_s=0.01, max_s=0.02)
OK = Completion(
    "<think>t</think><answer>A</answer>", "stop", {"prompt_tokens": 3, "completion_tokens": 2}
)


@dataclass
class FailingClient:
    """Fails each request's first `failures` attempts with `error`, then completes."""

    error: BaseException
    failures: int = 1
    calls: int = 0
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(
        self,
        messages: Sequence[Mapping[str, Any]],
        sampling: Mapping[str, Any],
        timeout_s: float,
        done: Any,
    ) -> None:
        with self.lock:
            self.calls += 1
            fail = self.calls <= self.failures
        done(None, self.error) if fail else done(OK, None)

    def describe(self, timeout_s: float) -> ModelInfo:
        return ModelInfo("failing", None)

    def close(self) -> None:
        self.closed = True


def channel(client: Any, max_in_flight: int = 4) -> ModelChannel:
    endpoint = ModelEndpoint("test", max_in_flight=max_in_flight, retry=FAST_RETRY, timeout_s=5)
    return ModelChannel(endpoint, client)


def test_a_transient_error_is_retried_and_the_reply_counts_the_attempts() -> None:
    client = FailingClient(CallError("UNAVAILABLE", "server restarting"), failures=2)
    reply = complete(channel(client), [{"role": "user", "content": "q"}], {})
    assert isinstance(reply, ModelReply)
    assert (reply.text, reply.attempts, client.calls) == (OK.text, 3, 3)


def test_a_transient_error_past_the_attempts_is_a_failure_of_its_class() -> None:
    client = FailingClient(CallError("DEADLINE_EXCEEDED", "slow"), failures=99)
    reply = complete(channel(client), [], {})
    assert reply == ModelError(DEADLINE_CLASS, "DEADLINE_EXCEEDED", "slow", 3)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            CallError("INVALID_ARGUMENT", "bad tensor"),
            ModelError(MODEL_CALL_CLASS, "INVALID_ARGUMENT", "bad tensor", 1),
        ),
        (BadResponseError("no text"), ModelError(MODEL_CALL_CLASS, "", "bad response: no text", 1)),
        (RuntimeError("boom"), ModelError(MODEL_CALL_CLASS, "", "boom", 1)),
    ],
)
def test_other_errors_fail_at_once(error: BaseException, expected: ModelError) -> None:
    client = FailingClient(error, failures=99)
    assert complete(channel(client), [], {}) == expected
    assert client.calls == 1


def test_a_client_that_raises_on_send_completes_the_request_as_a_failure() -> None:
    class Raising(FailingClient):
        def send(self, *args: Any) -> None:
            raise TypeError("cannot encode")

    reply = complete(channel(Raising(RuntimeError())), [], {})
    assert isinstance(reply, ModelError) and reply.message == "cannot encode"


def test_requests_in_flight_never_exceed_the_budget_and_all_come_back() -> None:
    scripted = ScriptedClient(delay_s=0.05)
    active, peak, lock = [0], [0], threading.Lock()

    class Counting(FailingClient):
        def send(self, messages: Any, sampling: Any, timeout_s: float, done: Any) -> None:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])

            def finished(completion: Any, error: Any) -> None:
                with lock:
                    active[0] -= 1
                done(completion, error)

            scripted.send(messages, sampling, timeout_s, finished)

    requests = InFlightRequests(channel(Counting(RuntimeError()), max_in_flight=3))
    results: dict[Any, Any] = {}
    for key in range(10):
        requests.submit(key, [{"role": "user", "content": "q"}], {})
        results.update(requests.completed())
    results.update(requests.wait_all())
    assert sorted(results) == list(range(10))
    assert all(isinstance(r, ModelReply) for r in results.values())
    assert peak[0] == 3 and requests.outstanding == 0


def test_errors_of_each_class() -> None:
    from beam_pipelines.model_client.base import error_class_of

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


def test_the_last_user_to_release_a_shared_channel_closes_its_client() -> None:
    """Generate stages share a channel; a client left open after the run kept its Triton
    stream open, and the server it used then waited 30 s before it would stop."""
    first = FailingClient(CallError("UNAVAILABLE", "unused"))
    shared = ModelChannel(ModelEndpoint("call", kind="scripted"), first)
    assert shared.open() is shared and shared.open() is shared
    shared.release()
    assert not first.closed
    shared.release()
    assert first.closed
    # A stage set up after that gets a new client of the same endpoint.
    shared.open()
    assert isinstance(shared.client, ScriptedClient)
    assert complete(shared, [{"role": "user", "content": "q"}], {}).text.endswith("</answer>")
