"""Triton Python-backend adapter for `agent_vlm`: tensors in, one engine call, tensors out.

All logic lives in the plain modules beside this file (`contract`, `engines`, `engine_*`),
which tests import without Triton. The tensor contract: docs/formats.md, "The serving contract".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contract import encode_result, run_batch
from engines import Instance, ServingConfig, build_engine


class TritonPythonModel:
    """The `agent_vlm` model: decodes a dynamic batch and generates it with one engine call."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Read the config's parameters and build the engine they name."""
        model_config = json.loads(args["model_config"])
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
        self.engine = build_engine(self.config, model_dir, instance)
        # Clients size their images by the budget the config states: it must be the
        # checkpoint's, or the model would be sent views it was not made for.
        self.config.image_budget(model_dir)

    def execute(self, requests: list[Any]) -> list[Any]:
        """Generate every request of the batch; a request's rows map to its output rows."""
        rows: list[tuple[bytes, bytes]] = []
        row_counts: list[int] = []
        for request in requests:
            messages = pb_utils.get_input_tensor_by_name(request, "messages").as_numpy()
            sampling = pb_utils.get_input_tensor_by_name(request, "sampling").as_numpy()
            messages, sampling = messages.reshape(-1), sampling.reshape(-1)
            count = min(len(messages), len(sampling))
            rows.extend(zip(messages[:count], sampling[:count], strict=True))
            row_counts.append(count)

        results = iter(run_batch(self.engine, rows, self.config.limits))
        responses = []
        for count in row_counts:
            encoded = [encode_result(next(results)) for _ in range(count)]
            tensors = [
                pb_utils.Tensor(name, np.array([[row[i]] for row in encoded], dtype=np.object_))
                for i, name in enumerate(("text", "finish_reason", "usage"))
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        """Release the engine (and the memory it holds) when Triton unloads the model."""
        self.engine = None
