"""`ExecuteTools`: run one turn's tool calls, store their images, and observe the results.

Tool calls run on worker-wide thread pools, one per tool kind (`cpu`: the code sandbox and
zoom, whose work happens in subprocesses or C code; `io`: search and web pages), each bounded
by `--tool_workers`, so a slow kind cannot starve the other and a worker never runs more
sandboxes than it has room for. Like `Generate`, the DoFn submits in `process`, emits what has
completed, and drains in `finish_bundle`, so the thread that feeds the model is never blocked
by a tool.

Each call gets the job's original images (read from their URIs, cached per worker) and the
full-resolution sub-images of earlier turns; the images it returns are validated with the
safe loader and stored content-addressed together with their model views, and `loop.observe`
turns the results into the next observation turn. A tool that cannot run at all
(`ToolUnavailableError`) or crashes ends the job as a failure row, not the pipeline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from beam_pipelines import progress
from beam_pipelines.agent import loop
from beam_pipelines.agent.images import ImageError
from beam_pipelines.agent.records import (
    FailedJob,
    Failure,
    ImageRef,
    Observation,
    ToolCall,
    Trajectory,
)
from beam_pipelines.io.files import read_bytes
from beam_pipelines.io.image_uris import PUBLIC_IMAGES
from beam_pipelines.model_client.channel import chat_for
from beam_pipelines.transforms.backlog import Backlog
from beam_pipelines.transforms.generate import running, windowed
from beam_pipelines.transforms.images import ImageStore
from tools.base import AsksModel, Tool, ToolContext, ToolResult, ToolUnavailableError
from tools.registry import build_tools, run_tool

TOOLS_STAGE = "tools"
ORIGINALS_CACHE_BYTES = 128 * 1024 * 1024
KINDS = ("cpu", "io")


class ToolRuntime:
    """A worker's tools, a thread pool per tool kind, and a small cache of original images.

    One per worker process (through `Shared`), whatever the number of turns: the code tool
    keeps a pool of warm sandboxes, and `workers` of them are what one worker can afford
    (unless `settings` size the pool). `settings` are the tools' own (`--tool_config`).
    """

    def __init__(
        self,
        names: Sequence[str],
        workers: int,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        config = {name: dict(values) for name, values in (settings or {}).items()}
        if "code" in names:
            config["code"] = {"pool_size": workers, **config.get("code", {})}
        self.tools: dict[str, Tool] = build_tools(names, **config)
        for tool in self.tools.values():
            if isinstance(tool, AsksModel) and (model := tool.model_settings()):
                tool.attach_chat(chat_for(model))
        self.pools = {
            kind: ThreadPoolExecutor(workers, thread_name_prefix=f"tools-{kind}") for kind in KINDS
        }
        self._originals: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def original(self, uri: str) -> bytes:
        """The job image's bytes; jobs usually call tools on several turns, so keep a few."""
        with self._lock:
            data = self._originals.get(uri)
            if data is not None:
                self._originals.move_to_end(uri)
                return data
        data = PUBLIC_IMAGES.read(uri)
        with self._lock:
            if uri not in self._originals:
                self._originals[uri] = data
                self._bytes += len(data)
            while self._bytes > ORIGINALS_CACHE_BYTES and len(self._originals) > 1:
                _, evicted = self._originals.popitem(last=False)
                self._bytes -= len(evicted)
        return data


@dataclass(frozen=True)
class CallStats:
    """What one call did, for metrics on the DoFn's thread (metrics are thread-bound)."""

    tool: str
    seconds: float
    error: bool


@dataclass(frozen=True)
class TurnResult:
    """A turn's calls done: the observed trajectory, or the failure that ended it."""

    outcome: Trajectory | FailedJob
    stats: tuple[CallStats, ...]


def run_call(
    tools: Mapping[str, Tool], call: ToolCall, context: ToolContext, store: ImageStore
) -> tuple[Observation, list[ImageRef]]:
    """One call -> its observation (full-resolution images) and their views.

    `run_tool` turns unknown tools and bad arguments into error results the model reads.
    """
    result: ToolResult = run_tool(tools, call.name, dict(call.arguments), context)
    if result.error is not None:
        return Observation(text=result.text, error=result.error, tool=call.name), []
    full: list[ImageRef] = []
    views: list[ImageRef] = []
    try:
        for png in result.images:
            image, view = store.put_tool_image(png)
            full.append(image)
            views.append(view)
    except ImageError as e:
        return Observation(
            text=result.text, error=f"the tool produced an unreadable image: {e}", tool=call.name
        ), []
    return Observation(text=result.text, images=tuple(full), tool=call.name), views


def run_turn(
    traj: Trajectory, runtime: ToolRuntime, store: ImageStore, timeout_s: float
) -> TurnResult:
    """Every pending call of a trajectory's last turn, in order, then `loop.observe`."""
    calls = loop.pending_calls(traj)
    stats: list[CallStats] = []
    try:
        context = loop.tool_context(
            traj,
            [runtime.original(ref.uri) for ref in traj.originals],
            [read_bytes(ref.uri) for ref in loop.sub_images(traj)],
            timeout_s=timeout_s,
        )
        observations: list[Observation] = []
        views: list[list[ImageRef]] = []
        for call in calls:
            started = time.monotonic()
            observation, call_views = run_call(runtime.tools, call, context, store)
            stats.append(
                CallStats(call.name, time.monotonic() - started, observation.error is not None)
            )
            observations.append(observation)
            views.append(call_views)
        return TurnResult(loop.observe(traj, calls, observations, views), tuple(stats))
    except Exception as e:  # ToolUnavailableError, storage errors, tool bugs: this job only
        error_class = "tool_unavailable" if isinstance(e, ToolUnavailableError) else None
        failure = Failure.from_error(traj.job.to_dict(), TOOLS_STAGE, e, id=traj.job.id)
        if error_class:
            failure = dataclasses.replace(failure, error_class=error_class)
        failed = loop.fail(traj, failure.error_class, failure.message[:2000])
        return TurnResult(FailedJob(failure, failed), tuple(stats))


class ExecuteTools(beam.DoFn):
    """Trajectory waiting for observations -> observed Trajectory or `FailedJob`.

    Everything else (finished jobs, failure rows, a turn the model must redo) passes through.
    """

    def __init__(
        self,
        turn: int,
        tools: Sequence[str],
        store: ImageStore,
        runtime: shared.Shared,
        workers: int,
        timeout_s: float,
        max_outstanding: int,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._turn = turn
        self._tool_names = tuple(tools)
        self._settings = {name: dict(values) for name, values in (settings or {}).items()}
        self._store = store
        self._runtime_handle = runtime
        self._workers = workers
        self._timeout_s = timeout_s
        self._max_outstanding = max_outstanding

    def setup(self) -> None:
        names, workers, settings = self._tool_names, self._workers, self._settings
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self._runtime = self._runtime_handle.acquire(
            lambda: ToolRuntime(names, workers, settings),
            tag=f"tools:{','.join(names)}:{workers}:{digest}",
        )
        self._tools = self._runtime.tools
        self._calls = {n: Metrics.counter("annotate", f"tool_calls_{n}") for n in self._tools}
        self._errors = {n: Metrics.counter("annotate", f"tool_errors_{n}") for n in self._tools}
        self._latency = {
            n: Metrics.distribution("annotate", f"tool_latency_ms_{n}") for n in self._tools
        }
        self._failed_jobs = Metrics.counter("annotate", "tool_failed_jobs")

    def start_bundle(self) -> None:
        self._backlog: Backlog[TurnResult] = Backlog(self._max_outstanding)

    def process(self, traj: Trajectory | Any) -> Iterator[Any]:
        if not running(traj) or not loop.pending_calls(traj):
            yield traj
            return
        pool = self._runtime.pools[self._kind(loop.pending_calls(traj)[0].name)]
        args = (traj, self._runtime, self._store, self._timeout_s)
        for future in self._backlog.submit(pool, run_turn, *args):
            yield from self._emit(future)
        for future in self._backlog.ready():
            yield from self._emit(future)

    def finish_bundle(self) -> Iterator[Any]:
        for future in self._backlog.drain():
            for output in self._emit(future):
                yield windowed(output)

    def _kind(self, name: str) -> str:
        tool = self._tools.get(name)
        kind = getattr(tool, "kind", "cpu")
        return kind if kind in KINDS else "cpu"

    def _emit(self, future: Future[TurnResult]) -> Iterator[Any]:
        # run_turn turns every error into a FailedJob; a future cannot fail short of a bug.
        result = future.result()
        progress.board().add(tool_calls=len(result.stats))
        for stat in result.stats:
            if stat.tool in self._calls:
                self._calls[stat.tool].inc()
                self._latency[stat.tool].update(int(stat.seconds * 1000))
                if stat.error:
                    self._errors[stat.tool].inc()
        if isinstance(result.outcome, FailedJob):
            self._failed_jobs.inc()
        yield result.outcome
