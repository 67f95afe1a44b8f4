"""`TritonClient` against a fake tritonclient: one stream for a decoupled model, responses
matched by request id, per-request deadlines, a broken stream replaced; unary calls for a
model that is not decoupled. (Against a real server: tests/pipeline, tests/serving.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from beam_pipelines.model_client.base import CallError, Completion
from beam_pipelines.model_client.triton import TritonClient

MESSAGES = [{"role": "user", "content": "hi"}]


class FakeResult:
    """An `InferResult` of the contract's three tensors, answering `request_id`."""

    def __init__(self, request_id: str, text: str) -> None:
        self.request_id = request_id
        self.tensors = {
            "text": text,
            "finish_reason": "stop",
            "usage": json.dumps({"prompt_tokens": 3, "completion_tokens": 1}),
        }

    def get_response(self) -> Any:
        return SimpleNamespace(id=self.request_id)

    def as_numpy(self, name: str) -> np.ndarray:
        return np.array([[self.tensors[name].encode()]], dtype=np.object_)


class FakeGrpc:
    """What `TritonClient` uses of `tritonclient.grpc.InferenceServerClient`."""

    def __init__(self, decoupled: bool = True) -> None:
        policy = {"model_transaction_policy": {"decoupled": True}} if decoupled else {}
        self.config = {"max_batch_size": 16, **policy}
        self.streams: list[Callable[..., None]] = []
        self.stopped = 0
        self.sent: list[tuple[str, list[Any]]] = []
        self.unary: list[Callable[..., None]] = []
        self.refuse: InferenceServerException | None = None

    def get_model_config(self, model_name: str, as_json: bool, client_timeout: float) -> Any:
        return {"config": self.config}

    def start_stream(self, callback: Callable[..., None]) -> None:
        self.streams.append(callback)

    def stop_stream(self, cancel_requests: bool = False) -> None:
        self.stopped += 1

    def async_stream_infer(self, model_name: str, inputs: list[Any], request_id: str) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.sent.append((request_id, inputs))

    def async_infer(
        self, model_name: str, inputs: list[Any], callback: Any, client_timeout: float
    ) -> None:
        self.unary.append(callback)

    def close(self) -> None:
        pass


class Outcomes:
    """Each request's `done` call, by the order it was sent."""

    def __init__(self) -> None:
        self.calls: dict[int, list[tuple[Completion | None, BaseException | None]]] = {}
        self.changed = threading.Condition()

    def done(self, index: int) -> Callable[[Completion | None, BaseException | None], None]:
        def record(completion: Completion | None, error: BaseException | None) -> None:
            with self.changed:
                self.calls.setdefault(index, []).append((completion, error))
                self.changed.notify_all()

        return record

    def wait(self, count: int, timeout_s: float = 5) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.calls) >= count, timeout=timeout_s)


@pytest.fixture
def fake() -> FakeGrpc:
    return FakeGrpc()


def _client(fake: FakeGrpc) -> TritonClient:
    client = TritonClient("127.0.0.1:1")
    client._grpc.close()
    client._grpc = fake  # type: ignore[assignment]
    return client


def test_requests_share_one_stream_and_responses_match_by_id(fake: FakeGrpc) -> None:
    client, outcomes = _client(fake), Outcomes()
    for index in range(3):
        client.send(MESSAGES, {"max_tokens": 4}, 30, outcomes.done(index))
    assert len(fake.streams) == 1 and len(fake.sent) == 3
    ids = [request_id for request_id, _ in fake.sent]
    assert len(set(ids)) == 3
    assert fake.sent[0][1][0].shape() == [1, 1]  # the model batches
    # Answered out of order: each reply reaches its own request.
    for index in (2, 0, 1):
        fake.streams[0](result=FakeResult(ids[index], f"reply {index}"), error=None)
    outcomes.wait(3)
    assert {i: calls[0][0].text for i, calls in outcomes.calls.items()} == {
        0: "reply 0",
        1: "reply 1",
        2: "reply 2",
    }
    assert all(len(calls) == 1 and calls[0][1] is None for calls in outcomes.calls.values())


def test_a_request_past_its_deadline_fails_and_its_late_reply_is_dropped(fake: FakeGrpc) -> None:
    client, outcomes = _client(fake), Outcomes()
    client.send(MESSAGES, {}, 0.05, outcomes.done(0))
    client.send(MESSAGES, {}, 30, outcomes.done(1))
    outcomes.wait(1)
    [(completion, error)] = outcomes.calls[0]
    assert completion is None and isinstance(error, CallError)
    assert error.code == "DEADLINE_EXCEEDED"
    fake.streams[0](result=FakeResult(fake.sent[0][0], "late"), error=None)
    fake.streams[0](result=FakeResult(fake.sent[1][0], "on time"), error=None)
    outcomes.wait(2)
    assert len(outcomes.calls[0]) == 1
    assert outcomes.calls[1][0][0].text == "on time"  # the stream is still in use


def test_a_broken_stream_fails_its_requests_and_the_next_send_opens_another(
    fake: FakeGrpc,
) -> None:
    client, outcomes = _client(fake), Outcomes()
    client.send(MESSAGES, {}, 30, outcomes.done(0))
    client.send(MESSAGES, {}, 30, outcomes.done(1))
    broken = InferenceServerException("Socket closed", status="StatusCode.UNAVAILABLE")
    fake.streams[0](result=None, error=broken)
    outcomes.wait(2)
    for index in (0, 1):
        [(completion, error)] = outcomes.calls[index]
        assert completion is None and isinstance(error, CallError)
        assert error.code == "UNAVAILABLE"  # retried by the channel
    client.send(MESSAGES, {}, 30, outcomes.done(2))
    assert len(fake.streams) == 2 and fake.stopped >= 1
    # The old stream's last words (its cancellation) do not touch the new stream's requests.
    fake.streams[0](result=None, error=InferenceServerException("Locally cancelled"))
    fake.streams[1](result=FakeResult(fake.sent[2][0], "again"), error=None)
    outcomes.wait(3)
    assert outcomes.calls[2] == [
        (Completion("again", "stop", {"prompt_tokens": 3, "completion_tokens": 1}), None)
    ]


def test_a_stream_that_refuses_a_request_fails_it_at_once(fake: FakeGrpc) -> None:
    client, outcomes = _client(fake), Outcomes()
    fake.refuse = InferenceServerException(
        "stream no longer valid", status="StatusCode.UNAVAILABLE"
    )
    client.send(MESSAGES, {}, 30, outcomes.done(0))
    [(completion, error)] = outcomes.calls[0]
    assert completion is None and isinstance(error, CallError) and error.code == "UNAVAILABLE"
    fake.refuse = None
    client.send(MESSAGES, {}, 30, outcomes.done(1))
    assert len(fake.streams) == 2  # reopened


def test_a_stream_that_fails_without_a_status_is_unavailable(fake: FakeGrpc) -> None:
    """tritonclient reports an unusable stream (its server died) with no status at all, both
    on a send and through the stream: that must stay retryable, not a failure of the job."""
    client, outcomes = _client(fake), Outcomes()
    client.send(MESSAGES, {}, 30, outcomes.done(0))
    fake.streams[0](result=None, error=InferenceServerException("The stream is broken"))
    fake.refuse = InferenceServerException("The stream is no longer in valid state")
    client.send(MESSAGES, {}, 30, outcomes.done(1))
    outcomes.wait(2)
    for index in (0, 1):
        [(completion, error)] = outcomes.calls[index]
        assert completion is None and isinstance(error, CallError) and error.code == "UNAVAILABLE"


def test_a_model_that_is_not_decoupled_gets_unary_calls() -> None:
    fake = FakeGrpc(decoupled=False)
    client, outcomes = _client(fake), Outcomes()
    client.send(MESSAGES, {}, 30, outcomes.done(0))
    assert fake.streams == [] and len(fake.unary) == 1
    fake.unary[0](result=FakeResult("", "unary"), error=None)
    assert outcomes.calls[0][0][0].text == "unary"
