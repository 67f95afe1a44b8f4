"""Triton Python-backend adapter for `agent_vlm`: a decoupled model, each request answered
when the engine finishes it.

`execute` decodes every request Triton hands over, gives the valid ones to the engine and
returns at once; the engine answers each through the request's response sender (one response,
flagged final) as soon as it is generated, so a short request never waits for a long one and
arrivals join the engine's running batch. All logic lives in the plain modules beside this
file (`contract`, `engines`, `engine_*`), which tests import without Triton. The tensor
contract: docs/formats.md, "The serving contract".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contract import GenerationResult, answer, encode_result
from engines import ConfigError, Instance, ServingConfig, build_engine


class TritonPythonModel:
    """The `agent_vlm` model: requests in as they arrive, each answered when it is done."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Read the config's parameters and build the engine they name."""
        model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(model_config):
            raise ConfigError(
                "agent_vlm answers requests as they finish: its config needs "
                "model_transaction_policy { decoupled: true }"
            )
        parameters = {
            key: value["string_value"] for key, value in model_config.get("parameters", {}).items()
        }
        self.config = ServingConfig.from_parameters(parameters)
        instance = Instance(
            kind=str(args.get("model_instance_kind", "CPU")),
            device_id=int(args.get("model_instance_device_id", 0)),
        )
        # `model_repository` is this model's directory (the one holding config.pbtxt).
        model_dir = Path(args["model_repository"])
        max_batch = max(1, int(model_config.get("max_batch_size", 0)))
        self.engine = build_engine(self.config, model_dir, instance, max_batch)
        # Clients size their images by the budget the config states: it must be the
        # checkpoint's, or the model would be sent views it was not made for.
        self.config.image_budget(model_dir)

    def execute(self, requests: list[Any]) -> None:
        """Hand every request's rows to the engine; each is answered through its sender."""
        for request in requests:
            messages = pb_utils.get_input_tensor_by_name(request, "messages").as_numpy()
            sampling = pb_utils.get_input_tensor_by_name(request, "sampling").as_numpy()
            messages, sampling = messages.reshape(-1), sampling.reshape(-1)
            count = min(len(messages), len(sampling))
            rows = list(zip(messages[:count], sampling[:count], strict=True))
            answer(self.engine, rows, _responder(request.get_response_sender()), self.config.limits)

    def finalize(self) -> None:
        """Stop the engine (requests still running fail) and release what it holds."""
        self.engine.close()
        self.engine = None


def _responder(sender: Any) -> Any:
    """Sends a request's results (one per row) as its one, final response."""

    def respond(results: list[GenerationResult]) -> None:
        encoded = [encode_result(result) for result in results]
        tensors = [
            pb_utils.Tensor(name, np.array([[row[i]] for row in encoded], dtype=np.object_))
            for i, name in enumerate(("text", "finish_reason", "usage"))
        ]
        sender.send(
            pb_utils.InferenceResponse(output_tensors=tensors),
            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
        )

    return respond
