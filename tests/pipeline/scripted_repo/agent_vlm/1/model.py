"""A scripted `agent_vlm` for pipeline tests: the model client's `call` script
(`beam_pipelines/model_client/scripted.py`) behind the serving contract's tensors
(docs/formats.md, "The serving contract"), no weights, so a test sees what a tool did inside
a run through a real Triton server.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from beam_pipelines.model_client.scripted import call_script


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "messages").as_numpy().reshape(-1)[0]
            text = call_script(json.loads(raw))
            usage = {"prompt_tokens": len(raw) // 4, "completion_tokens": len(text) // 4}
            outputs = {"text": text, "finish_reason": "stop", "usage": json.dumps(usage)}
            tensors = [
                pb_utils.Tensor(name, np.array([value.encode()], dtype=np.object_))
                for name, value in outputs.items()
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
