"""Generate's routing of model outcomes, and the Backlog that PrepareImages/ExecuteTools use."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from beam_pipelines.agent.records import FailedJob
from beam_pipelines.model_client.base import ModelError, ModelReply
from beam_pipelines.transforms.backlog import Backlog
from beam_pipelines.transforms.generate import ANSWERED, FAILED, RETRY, TOOL_CALLS, route

from .helpers import started


def reply(text: str, finish_reason: str = "stop") -> ModelReply:
    usage = {"prompt_tokens": 3, "completion_tokens": 2}
    return ModelReply(text, finish_reason, usage, latency_s=0.01, attempts=1)


def test_an_answer_finishes_the_job(tmp_path: Path) -> None:
    name, traj = route(started(tmp_path), reply("<think>a</think><answer>B</answer>"))
    assert name == ANSWERED and traj.status == "answered" and traj.final.answer == "B"


def test_a_tool_call_goes_to_the_tools(tmp_path: Path) -> None:
    call = json.dumps({"name": "code", "arguments": {"code": "print(1)"}})
    name, traj = route(started(tmp_path), reply(f"<think>t</think><tool_call>{call}</tool_call>"))
    assert name == TOOL_CALLS and not traj.done


def test_a_malformed_turn_goes_on_to_the_next_turn(tmp_path: Path) -> None:
    name, traj = route(started(tmp_path), reply("no tags at all"))
    assert name == RETRY and not traj.done and traj.format_errors == 1


def test_a_failed_call_is_a_failure_row_with_the_partial_trace(tmp_path: Path) -> None:
    error = ModelError("model_unavailable", "UNAVAILABLE", "connection refused", attempts=4)
    name, failed = route(started(tmp_path), error)
    assert name == FAILED and isinstance(failed, FailedJob)
    assert failed.failure.stage == "generate" and failed.failure.attempts == 4
    assert failed.failure.input["id"] == "job-1"
    assert failed.trajectory.status == "failed"
    assert failed.trajectory.error_class == "model_unavailable"


def test_backlog_returns_results_in_completion_order_and_bounds_the_pool() -> None:
    backlog: Backlog[int] = Backlog(limit=2)
    running = 0
    peak = 0
    lock = threading.Lock()

    def work(seconds: float, value: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(seconds)
        with lock:
            running -= 1
        return value

    with ThreadPoolExecutor(4) as pool:
        got = [f.result() for f in backlog.submit(pool, work, 0.3, 1)]
        got += [f.result() for f in backlog.submit(pool, work, 0.05, 2)]
        got += [f.result() for f in backlog.submit(pool, work, 0.05, 3)]  # waits for room
        got += [f.result() for f in backlog.drain()]
    assert sorted(got) == [1, 2, 3] and got[0] == 2  # the slow one did not hold the others
    assert peak <= 2 and backlog.outstanding == 0


def test_backlog_needs_room() -> None:
    with pytest.raises(ValueError):
        Backlog(0)
