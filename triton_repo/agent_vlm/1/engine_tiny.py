"""The `tiny` engine: the project's own small MoE vision-language model (`tiny_agent`).

Adapter over `tiny_agent.runtime.TinyRuntime` (`load(checkpoint_dir)`), whose `generate`
takes a batch of `(messages, sampling)` pairs (messages as decoded by `contract`, image parts
holding PIL images; sampling with `max_tokens, temperature, top_p, seed, stop`) and returns per
request a `Generation` with `text, finish_reason, prompt_tokens, completion_tokens` (a 4-tuple
in that order is accepted too).

Parameters: `checkpoint` (directory, relative to the model directory; default `tiny`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from contract import GenerationRequest, GenerationResult, Sampling
from engines import Instance, resolve_path, take_parameters

DEFAULTS = {"checkpoint": "tiny"}
FINISH_REASONS = ("stop", "length", "error")


class TinyRuntime(Protocol):
    """What this adapter needs from `tiny_agent.runtime.TinyRuntime`."""

    def generate(self, batch: list[tuple[list[dict[str, Any]], Sampling]]) -> Sequence[Any]: ...


class TinyEngine:
    """Generates a whole dynamic batch with one call into the tiny model's runtime."""

    def __init__(self, runtime: TinyRuntime) -> None:
        self.runtime = runtime

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        outputs = self.runtime.generate([(r.messages, r.sampling) for r in requests])
        results = []
        for output in outputs:
            text, finish_reason, prompt_tokens, completion_tokens = _fields(output)
            if finish_reason not in FINISH_REASONS:
                raise ValueError(f"tiny runtime returned finish_reason {finish_reason!r}")
            results.append(
                GenerationResult(
                    text=text,
                    finish_reason=finish_reason,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    error=text if finish_reason == "error" else None,
                )
            )
        return results


def from_parameters(
    model_dir: Path, parameters: Mapping[str, str], instance: Instance
) -> TinyEngine:
    """Load the tiny model from `checkpoint` (the tiny model runs on CPU)."""
    params = take_parameters(parameters, DEFAULTS, "tiny")
    checkpoint = resolve_path(params["checkpoint"], model_dir)
    runtime_module = _import_runtime()
    return TinyEngine(runtime_module.TinyRuntime.load(checkpoint))


def _fields(output: Any) -> tuple[str, str, int, int]:
    if isinstance(output, tuple):
        text, finish_reason, prompt_tokens, completion_tokens = output
    else:
        text, finish_reason = output.text, output.finish_reason
        prompt_tokens, completion_tokens = output.prompt_tokens, output.completion_tokens
    return str(text), str(finish_reason), int(prompt_tokens), int(completion_tokens)


def _import_runtime() -> Any:
    """Import `tiny_agent.runtime`; when the project is not installed in the server's
    environment, fall back to the project checkout this file belongs to."""
    try:
        return importlib.import_module("tiny_agent.runtime")
    except ModuleNotFoundError as exc:
        if exc.name not in ("tiny_agent", "tiny_agent.runtime"):
            raise
    # triton_repo/agent_vlm/1/engine_tiny.py -> the project root (symlinks resolved).
    project_root = Path(__file__).resolve().parents[3]
    if not (project_root / "tiny_agent").is_dir():
        raise ModuleNotFoundError(
            "tiny_agent is not importable: install the project (pip install -e .) in the "
            "server's environment"
        )
    sys.path.insert(0, str(project_root))
    return importlib.import_module("tiny_agent.runtime")
