"""`ModelClient` that answers in-process from a script: pipelines tested and benchmarked
without a server (`--endpoint scripted:call`).

The `call` script makes the tool call a job asks for, then answers with what came back, so a
test sees what a tool did inside a real run: a job whose question is `CALL <tool call JSON>`
gets that call on its first turn (r1v4 protocol); the turn after an observation answers with
the observation's body (the JSON the protocol rendered); a job without a call is answered
`unscripted` at once. `scripted:call,delay_s=0.3` answers each request after 0.3 s, every
request waiting at once (a server batching in flight, as the client sees it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from beam_pipelines.model_client.base import CallError, Completion, Done, ImageBudget, ModelInfo

CALL = "CALL "
OPEN, CLOSE = "<observation>", "</observation>"


def text_of(message: Mapping[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def call_script(messages: Sequence[Mapping[str, Any]]) -> str:
    """The `call` script (module docstring)."""
    last = text_of(messages[-1])
    if last.startswith(OPEN) and last.endswith(CLOSE):
        return f"<think>the tool answered</think><answer>{last[len(OPEN) : -len(CLOSE)]}</answer>"
    for message in messages:
        text = text_of(message)
        if message.get("role") == "user" and text.startswith(CALL):
            return f"<think>calling</think><tool_call>{text[len(CALL) :]}</tool_call>"
    return "<think>nothing to call</think><answer>unscripted</answer>"


#: The budget the scripted model states: the tiny model's, one 128 x 128 view.
SCRIPTED_BUDGET = ImageBudget(128 * 128, 128 * 128, 16, 1)

SCRIPTS: dict[str, Callable[[Sequence[Mapping[str, Any]]], str]] = {"call": call_script}


@dataclass(frozen=True)
class ScriptedClient:
    """Replies from `SCRIPTS[script]`, after `delay_s` when it is set. Picklable."""

    script: str = "call"
    delay_s: float = 0.0

    @classmethod
    def named(cls, spec: str) -> ScriptedClient:
        """`call` or `call,delay_s=0.3` (the part after `scripted:` of `--endpoint`)."""
        name, *settings = spec.split(",")
        if name not in SCRIPTS:
            raise ValueError(f"no script {name!r}; scripts: {', '.join(SCRIPTS)}")
        delay_s = 0.0
        for setting in settings:
            key, _, value = setting.partition("=")
            if key != "delay_s":
                raise ValueError(f"scripted endpoint {spec!r}: unknown setting {key!r}")
            delay_s = float(value)
        return cls(name, delay_s)

    def completion(self, messages: Sequence[Mapping[str, Any]]) -> Completion:
        text = SCRIPTS[self.script](messages)
        size = len(json.dumps(messages, ensure_ascii=False))
        return Completion(
            text=text,
            finish_reason="stop",
            usage={"prompt_tokens": size // 4, "completion_tokens": len(text) // 4},
        )

    def send(
        self,
        messages: Sequence[Mapping[str, Any]],
        sampling: Mapping[str, Any],
        timeout_s: float,
        done: Done,
    ) -> None:
        completion = self.completion(messages)
        if self.delay_s <= 0:
            done(completion, None)
            return
        if self.delay_s > timeout_s:
            timer = threading.Timer(
                timeout_s,
                done,
                (None, CallError("DEADLINE_EXCEEDED", "the script is slower than the deadline")),
            )
        else:
            timer = threading.Timer(self.delay_s, done, (completion, None))
        timer.daemon = True
        timer.start()

    def describe(self, timeout_s: float) -> ModelInfo:
        return ModelInfo(label=f"scripted:{self.script}", budget=SCRIPTED_BUDGET)

    def close(self) -> None:
        return None
