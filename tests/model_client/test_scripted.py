"""The in-process scripted client: the `call` script, its settings, its delay."""

import pickle
import threading
from typing import Any

import pytest

from beam_pipelines.model_client.base import CallError, Completion
from beam_pipelines.model_client.scripted import ScriptedClient, call_script

CALL = '{"name": "code", "arguments": {"code": "print(1)"}}'


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def test_the_call_script_calls_then_answers_with_the_observation() -> None:
    first = call_script([user(f"CALL {CALL}")])
    assert first == f"<think>calling</think><tool_call>{CALL}</tool_call>"
    then = call_script([user(f"CALL {CALL}"), user("<observation>1</observation>")])
    assert then == "<think>the tool answered</think><answer>1</answer>"
    assert call_script([user("what is it?")]).endswith("<answer>unscripted</answer>")


def test_named_scripts_and_settings() -> None:
    assert ScriptedClient.named("call") == ScriptedClient("call", 0.0)
    assert ScriptedClient.named("call,delay_s=0.25") == ScriptedClient("call", 0.25)
    with pytest.raises(ValueError, match="no script"):
        ScriptedClient.named("echo")
    with pytest.raises(ValueError, match="unknown setting"):
        ScriptedClient.named("call,speed=2")


def wait(client: ScriptedClient, timeout_s: float) -> tuple[Any, Any]:
    got: list[tuple[Any, Any]] = []
    event = threading.Event()

    def done(completion: Any, error: Any) -> None:
        got.append((completion, error))
        event.set()

    client.send([user("q")], {}, timeout_s, done)
    assert event.wait(5)
    return got[0]


def test_a_delayed_reply_arrives_and_one_past_the_deadline_fails_as_a_deadline() -> None:
    completion, error = wait(ScriptedClient(delay_s=0.05), timeout_s=1)
    assert isinstance(completion, Completion) and error is None
    assert completion.usage["prompt_tokens"] > 0
    completion, error = wait(ScriptedClient(delay_s=2), timeout_s=0.05)
    assert completion is None and isinstance(error, CallError)
    assert error.code == "DEADLINE_EXCEEDED"


def test_the_scripted_client_pickles() -> None:
    client = ScriptedClient("call", 0.5)
    assert pickle.loads(pickle.dumps(client)) == client
