"""`Generate`: one model turn for every trajectory that reaches turn k, many in flight.

Requests are submitted in `process` (which blocks only while the worker's in-flight budget
is spent), results are emitted as they complete (checked on every `process` call) and the
rest are drained in `finish_bundle`, so no element waits for a batch to fill and no batch
waits for its slowest member. The loop's `advance` decides what a reply means; `route`
names where the result goes (and counts it):

- `answered`: the trajectory ended (answered, max_turns, or failed inside the loop);
- `tool_calls`: it made tool calls, which `ExecuteTools{k}` runs next;
- `retry`: the turn was malformed and the model was told so; it goes on to turn k+1;
- `failed`: the model call failed after its retries (`FailedJob` with the partial trace).

All four leave on the one main output, and elements that are not running trajectories
(finished jobs, failure rows) pass straight through: the in-process runner materializes every
multi-input Flatten, which would make each turn a barrier, so the loop never splits and
re-merges its stream. Each downstream stage acts only on what concerns it.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils import shared
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from beam_pipelines import progress
from beam_pipelines.agent import loop
from beam_pipelines.agent.records import FailedJob, Failure, Trajectory
from beam_pipelines.model_client.base import ModelEndpoint, ModelError, ModelReply
from beam_pipelines.model_client.channel import InFlightRequests, ModelChannel, inline_images

GENERATE_STAGE = "generate"
ANSWERED, TOOL_CALLS, RETRY, FAILED = "answered", "tool_calls", "retry", "failed"
ROUTES = (ANSWERED, TOOL_CALLS, RETRY, FAILED)


def windowed(output: Any) -> WindowedValue:
    """An output of `finish_bundle`, which has no input element to take a window from.

    The annotate pipeline is batch and global-window only.
    """
    return WindowedValue(output, MIN_TIMESTAMP, [GlobalWindow()])


def running(element: Any) -> bool:
    """True for a trajectory still in the loop (everything else passes through)."""
    return isinstance(element, Trajectory) and not element.done


def route(traj: Trajectory, outcome: ModelReply | ModelError) -> tuple[str, Any]:
    """Apply one model outcome to a trajectory: the route name and the resulting element."""
    if isinstance(outcome, ModelError):
        message = f"{outcome.code or 'error'}: {outcome.message}"[:2000]
        failed = loop.fail(traj, outcome.error_class, message)
        failure = Failure(
            input=traj.job.to_dict(),
            stage=GENERATE_STAGE,
            error_class=outcome.error_class,
            message=message,
            attempts=outcome.attempts,
            id=traj.job.id,
        )
        return FAILED, FailedJob(failure, failed)
    traj, calls = loop.advance(
        traj,
        outcome.text,
        finish_reason=outcome.finish_reason,
        usage=outcome.usage,
        latency_s=outcome.latency_s,
    )
    if traj.done:
        return ANSWERED, traj
    return (TOOL_CALLS if calls else RETRY), traj


class Generate(beam.DoFn):
    """Turn `turn` of the loop; see the module docstring."""

    def __init__(self, turn: int, endpoint: ModelEndpoint, channel: shared.Shared) -> None:
        self._turn = turn
        self._endpoint = endpoint
        self._channel_handle = channel

    def setup(self) -> None:
        endpoint = self._endpoint
        self._channel = self._channel_handle.acquire(
            lambda: ModelChannel(endpoint), tag=f"{endpoint.address}/{endpoint.model_name}"
        ).open()
        self._views = self._channel.views
        self._requests_sent = Metrics.counter("annotate", "model_requests")
        self._errors = Metrics.counter("annotate", "model_errors")
        self._attempts = Metrics.counter("annotate", "model_attempts")
        self._latency_ms = Metrics.distribution("annotate", "model_latency_ms")
        self._prompt_tokens = Metrics.distribution("annotate", "prompt_tokens_per_turn")
        self._model_tokens = Metrics.counter("annotate", "model_tokens")
        self._routes = {r: Metrics.counter("annotate", f"route_{r}") for r in ROUTES}

    def start_bundle(self) -> None:
        self._requests = InFlightRequests(self._channel)
        self._waiting: dict[Hashable, Trajectory] = {}
        self._keys = itertools.count()

    def process(self, traj: Trajectory | Any) -> Iterator[Any]:
        if not running(traj):
            yield traj
            return
        try:
            messages = inline_images(traj.messages, self._views)
        except OSError as e:
            # A stored view vanished or storage failed: this job cannot be asked about.
            failure = Failure.from_error(traj.job.to_dict(), GENERATE_STAGE, e, id=traj.job.id)
            failed = loop.fail(traj, failure.error_class, failure.message)
            self._routes[FAILED].inc()
            yield FailedJob(failure, failed)
        else:
            key = next(self._keys)
            self._waiting[key] = traj
            self._requests.submit(key, messages, traj.sampling)
            self._requests_sent.inc()
        yield from self._emit(self._requests.completed())

    def finish_bundle(self) -> Iterator[Any]:
        for output in self._emit(self._requests.wait_all()):
            yield windowed(output)

    def teardown(self) -> None:
        # The worker's last Generate stage to go closes the shared client (ModelChannel).
        channel = getattr(self, "_channel", None)
        if channel is not None:
            channel.release()

    def _emit(self, results: Iterable[tuple[Hashable, ModelReply | ModelError]]) -> Iterator[Any]:
        for key, outcome in results:
            traj = self._waiting.pop(key)
            self._attempts.inc(outcome.attempts)
            if isinstance(outcome, ModelError):
                self._errors.inc()
            else:
                self._latency_ms.update(int(outcome.latency_s * 1000))
                self._prompt_tokens.update(outcome.usage["prompt_tokens"])
                self._model_tokens.inc(sum(outcome.usage.values()))
                progress.board().add(tokens=sum(outcome.usage.values()))
            name, element = route(traj, outcome)
            self._routes[name].inc()
            yield element
