"""`AgentLoop`: the agent loop unrolled into `max_turns` labelled stages.

Beam graphs have no cycles, so turn k is its own pair of stages: `Generate{k}` asks the model
and routes each trajectory (answered / tool calls / malformed turn / failed), `ExecuteTools{k}`
runs the calls, and what is still running goes on to `Generate{k+1}`. A job leaves the loop at
the turn where it ends: later stages hand it on untouched, straight to the writer.

There is deliberately no GroupByKey, Reshuffle or Flatten inside: in batch mode each is a
barrier (the in-process runner materializes even a Flatten) that would make every job wait
for the slowest job of its turn. Instead the whole loop is one chain of ParDos with one
stream, which fuses into one stage, and a job moves on the moment its turn completes.

One `Shared` model channel (the gRPC client and the worker's in-flight budget) and one set of
tool pools serve every turn's DoFns in a worker.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.utils import shared

from beam_pipelines.agent import loop
from beam_pipelines.model_client.base import ModelEndpoint
from beam_pipelines.transforms.execute_tools import ExecuteTools
from beam_pipelines.transforms.generate import Generate, running
from beam_pipelines.transforms.images import ImageStore


class EndUnfinished(beam.DoFn):
    """After the last turn: anything still running ends as `max_turns` (never dropped).

    The loop already ends a trajectory at its turn budget; this is the guard that makes
    "every job ends in exactly one row" hold whatever the budget bookkeeping says.
    """

    def process(self, element: Any) -> Iterator[Any]:
        if running(element):
            element = loop.fail(
                element,
                loop.MAX_TURNS_ERROR_CLASS,
                f"still running after {element.max_turns} turns",
            )
        yield element


class AgentLoop(beam.PTransform):
    """Started trajectories (and pass-through rows) -> finished trajectories and failures."""

    def __init__(
        self,
        endpoint: ModelEndpoint,
        store: ImageStore,
        tools: Sequence[str],
        max_turns: int,
        tool_workers: int,
        tool_timeout_s: float,
        tool_settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self._endpoint = endpoint
        self._store = store
        self._tools = tuple(tools)
        self._max_turns = max_turns
        self._tool_workers = tool_workers
        self._tool_timeout_s = tool_timeout_s
        self._tool_settings = tool_settings

    def expand(self, stream: beam.PCollection) -> beam.PCollection:
        channel = shared.Shared()
        tools = shared.Shared()
        for k in range(self._max_turns):
            stream = stream | f"Generate{k}" >> beam.ParDo(Generate(k, self._endpoint, channel))
            if k == self._max_turns - 1:
                break  # the last turn's tool calls are never run: its budget is spent
            stream = stream | f"ExecuteTools{k}" >> beam.ParDo(
                ExecuteTools(
                    k,
                    self._tools,
                    self._store,
                    tools,
                    self._tool_workers,
                    self._tool_timeout_s,
                    max_outstanding=self._endpoint.max_in_flight,
                    settings=self._tool_settings,
                )
            )
        return stream | "EndUnfinished" >> beam.ParDo(EndUnfinished())
