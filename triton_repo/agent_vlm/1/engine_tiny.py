"""The `tiny` engine: the project's own small MoE vision-language model (`tiny_agent`), with
continuous batching.

A scheduler thread drives one `tiny_agent.runtime.RunningBatch`: between decode steps it
prefills the requests that arrived meanwhile (as one group) and adds them to the running rows,
and every request that stops leaves the batch and is answered at once, so a short request
never waits for a long one and a new request waits at most one step to start. Prompts are
rendered on arrival (a prompt beyond the context fails alone, before it joins).

Parameters: `checkpoint` (directory, relative to the model directory; default `tiny`),
`max_running` (requests decoding at once; default 16, the rest wait their turn: on a CPU a
decode step costs about in proportion to its rows beyond a few, so more at once only delays
them all).
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contract import Done, GenerationRequest, GenerationResult, WaitingRequests
from engines import Instance, parse_int, resolve_path, take_parameters

DEFAULTS = {"checkpoint": "tiny", "max_running": "16"}


class TinyEngine:
    """Continuous batching over the tiny model's `RunningBatch` (an `InFlightEngine`)."""

    def __init__(self, batch: Any, max_running: int = 16) -> None:
        self.batch = batch
        self.max_running = max_running
        self._waiting: WaitingRequests[tuple[Done, Any, GenerationRequest]] = WaitingRequests()
        self._thread = threading.Thread(target=self._run, name="tiny-scheduler", daemon=True)
        self._thread.start()

    def submit(self, requests: Sequence[tuple[GenerationRequest, Done]]) -> None:
        if self._waiting.closed:
            raise RuntimeError("the engine is closed")
        arrivals = []
        for request, done in requests:
            try:
                arrivals.append((done, self.batch.prepare(request.messages), request))
            except ValueError as exc:
                done(GenerationResult.failure(str(exc)))
        self._waiting.put(arrivals)

    def close(self) -> None:
        self._waiting.close()
        self._thread.join()

    def _run(self) -> None:
        # Only this thread changes the running batch, so its size holds while it waits.
        while True:
            room = self.max_running - len(self.batch)
            arrivals = self._waiting.take(room, busy=lambda: bool(self.batch))
            if arrivals is None:
                break
            self._admit(arrivals)
            try:
                finished = self.batch.step()
            except Exception as exc:  # every running request fails, the engine goes on
                _fail(self.batch.clear(), exc)
                continue
            for done, generation in finished:
                done(_result(generation))
        dropped = [done for done, _, _ in self._waiting.drain()] + self.batch.clear()
        for done in dropped:
            done(GenerationResult.failure("the engine was closed"))

    def _admit(self, arrivals: list[tuple[Done, Any, GenerationRequest]]) -> None:
        """Prefill the arrivals together; when that fails, each alone (only the request that
        breaks the model fails)."""
        group = [(done, prompt, request.sampling) for done, prompt, request in arrivals]
        try:
            self.batch.admit(group)
        except Exception as exc:
            if len(group) == 1:
                _fail([group[0][0]], exc)
                return
            for member in group:
                try:
                    self.batch.admit([member])
                except Exception as alone:
                    _fail([member[0]], alone)


def _fail(dones: Sequence[Done], exc: Exception) -> None:
    for done in dones:
        done(GenerationResult.failure(f"engine error: {type(exc).__name__}: {exc}"))


def _result(generation: Any) -> GenerationResult:
    return GenerationResult(
        text=generation.text,
        finish_reason=generation.finish_reason,
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
    )


def from_parameters(
    model_dir: Path, parameters: Mapping[str, str], instance: Instance
) -> TinyEngine:
    """Load the tiny model from `checkpoint` (the tiny model runs on CPU)."""
    params = take_parameters(parameters, DEFAULTS, "tiny")
    checkpoint = resolve_path(params["checkpoint"], model_dir)
    max_running = parse_int(params["max_running"], "max_running", minimum=1)
    runtime_module = _import_runtime()
    runtime = runtime_module.TinyRuntime.load(checkpoint)
    return TinyEngine(runtime_module.RunningBatch(runtime), max_running)


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
