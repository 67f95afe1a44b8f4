"""A scripted `agent_vlm` for pipeline tests: it makes the tool call a job asks for, then
answers with what came back, so a test sees what a tool did inside a real run.

The tensor contract of DESIGN.md section 5, no weights. A job whose question is
`CALL <tool call JSON>` gets that call on its first turn (r1v4 protocol); the turn after an
observation answers with the observation's body (the JSON the protocol rendered). A job
without a call is answered `unscripted` at once.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

CALL = "CALL "
OPEN, CLOSE = "<observation>", "</observation>"


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def reply(messages: list[dict[str, Any]]) -> str:
    last = text_of(messages[-1])
    if last.startswith(OPEN) and last.endswith(CLOSE):
        return f"<think>the tool answered</think><answer>{last[len(OPEN) : -len(CLOSE)]}</answer>"
    for message in messages:
        text = text_of(message)
        if message.get("role") == "user" and text.startswith(CALL):
            return f"<think>calling</think><tool_call>{text[len(CALL) :]}</tool_call>"
    return "<think>nothing to call</think><answer>unscripted</answer>"


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "messages").as_numpy().reshape(-1)[0]
            text = reply(json.loads(raw))
            usage = {"prompt_tokens": len(raw) // 4, "completion_tokens": len(text) // 4}
            outputs = {"text": text, "finish_reason": "stop", "usage": json.dumps(usage)}
            tensors = [
                pb_utils.Tensor(name, np.array([value.encode()], dtype=np.object_))
                for name, value in outputs.items()
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
