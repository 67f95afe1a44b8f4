"""Pipeline efficiency: is the Beam pipeline ever the bottleneck? (docs/operations.md,
"Performance checks")

The same synthetic jobs, on the same Triton server, at the same model concurrency, three ways:

- (a) bare: an asyncio loop over the model client's Triton client that runs the agent loop
  itself (the agent core's `start / advance / observe`, tools inline on a thread pool), every
  job started at once and at most `concurrency` model requests in flight: what the server
  delivers when nothing else is in the way, the reference;
- (b) pipeline: `python -m beam_pipelines annotate` on the in-process runner with
  `--max_in_flight=concurrency`, writing every output (answers, traces, images);
- (c) naive: one job at a time, each turn waiting for the previous one.

Reported: jobs/s of each, b/a (aim >= 0.9) and b/c (aim >= 5 at concurrency 16), and each
mode's accuracy (the same greedy model on the same jobs should answer alike). Each mode stores
views and tool images the same way, so they do the same work. The machine is shared and noisy:
(a) and (b) are measured alternately for `--rounds` rounds and b/a is the median of the
rounds' ratios; compare ratios of one run, not absolute times across runs.

    python benchmarks/pipeline_efficiency.py [--jobs 96] [--concurrency 16] [--triton-url H:P]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from beam_pipelines import annotate  # noqa: E402
from beam_pipelines.agent import loop  # noqa: E402
from beam_pipelines.agent.records import Job, Trajectory, answer_row  # noqa: E402
from beam_pipelines.model_client.base import (  # noqa: E402
    Completion,
    ModelClient,
    ModelEndpoint,
    ModelError,
    ModelReply,
)
from beam_pipelines.model_client.channel import (  # noqa: E402
    ModelChannel,
    ViewCache,
    client_for,
    complete,
    inline_images,
)
from beam_pipelines.model_client.triton import TritonClient  # noqa: E402
from beam_pipelines.options import DEFAULT_SAMPLING  # noqa: E402
from beam_pipelines.outputs.layout import OutputLayout  # noqa: E402
from beam_pipelines.serve import TritonServer  # noqa: E402
from beam_pipelines.transforms.execute_tools import ToolRuntime, run_turn  # noqa: E402
from beam_pipelines.transforms.images import ImageStore  # noqa: E402
from beam_pipelines.transforms.prepare import start_trajectory  # noqa: E402
from tools.registry import tool_specs  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "pipeline_efficiency.json"
MODEL = "agent_vlm"
TOOLS = ("code",)


@dataclass(frozen=True)
class Settings:
    endpoint: str  # KIND:URL, as annotate's --endpoint
    concurrency: int
    max_turns: int
    max_pixels: int
    tool_workers: int
    max_tokens: int

    @property
    def sampling(self) -> dict[str, Any]:
        return {**DEFAULT_SAMPLING, "max_tokens": self.max_tokens}


@dataclass(frozen=True)
class Measured:
    mode: str
    jobs: int
    answered: int
    correct: int
    wall_s: float
    #: The pipeline's mean time per stage, ms (its `*_ms*` distributions; empty for the others).
    stage_mean_ms: dict[str, float] = field(default_factory=dict)

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s


async def _ask(
    client: ModelClient, messages: list[dict[str, Any]], sampling: dict[str, Any]
) -> ModelReply:
    """One request on the client's own threads, awaited on the event loop (no retries)."""
    running = asyncio.get_running_loop()
    future: asyncio.Future[Completion] = running.create_future()

    def settle(completion: Completion | None, error: BaseException | None) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(completion)

    started = time.monotonic()
    client.send(messages, sampling, 600.0, lambda c, e: running.call_soon_threadsafe(settle, c, e))
    completion = await future
    return ModelReply(
        completion.text, completion.finish_reason, completion.usage, time.monotonic() - started, 1
    )


def _score(mode: str, trajectories: Sequence[Trajectory], wall_s: float) -> Measured:
    rows = [answer_row(t, None) for t in trajectories]
    return Measured(
        mode=mode,
        jobs=len(rows),
        answered=sum(r["status"] == "answered" for r in rows),
        correct=sum(bool(r["correct"]) for r in rows),
        wall_s=wall_s,
    )


def _apply(traj: Trajectory, reply: ModelReply | ModelError) -> tuple[Trajectory, list[Any]]:
    if isinstance(reply, ModelError):
        raise RuntimeError(f"the benchmark's server failed: {reply.message}")
    return loop.advance(
        traj,
        reply.text,
        finish_reason=reply.finish_reason,
        usage=reply.usage,
        latency_s=reply.latency_s,
    )


def _context(out: Path, settings: Settings) -> tuple[ImageStore, Any]:
    store = ImageStore(OutputLayout(str(out), "bench"), settings.max_pixels)
    specs = tool_specs(TOOLS)
    return store, specs


def run_bare(jobs: Sequence[Job], out: Path, settings: Settings) -> Measured:
    """(a) all jobs started at once, at most `concurrency` model requests in flight."""
    store, specs = _context(out, settings)
    runtime = ToolRuntime(TOOLS, settings.tool_workers)
    prepare_pool = ThreadPoolExecutor(settings.tool_workers)
    cache = ViewCache()

    async def main() -> list[Trajectory]:
        client = client_for(ModelEndpoint.at(settings.endpoint, MODEL))
        slots = asyncio.Semaphore(settings.concurrency)
        running = asyncio.get_running_loop()

        async def one(job: Job) -> Trajectory:
            traj = await running.run_in_executor(
                prepare_pool,
                start_trajectory,
                job, store, "r1v4", specs, MODEL, settings.sampling, settings.max_turns,
            )  # fmt: skip
            while not traj.done:
                messages = inline_images(traj.messages, cache)
                async with slots:
                    reply = await _ask(client, messages, traj.sampling)
                traj, calls = _apply(traj, reply)
                if calls:
                    turn = await running.run_in_executor(
                        runtime.pools["cpu"], run_turn, traj, runtime, store, 60.0
                    )
                    traj = turn.outcome if isinstance(turn.outcome, Trajectory) else traj
                    if not isinstance(turn.outcome, Trajectory):
                        return turn.outcome.trajectory
            return traj

        try:
            return await asyncio.gather(*(one(job) for job in jobs))
        finally:
            client.close()

    started = time.monotonic()
    trajectories = asyncio.run(main())
    return _score("bare", trajectories, time.monotonic() - started)


def run_naive(jobs: Sequence[Job], out: Path, settings: Settings) -> Measured:
    """(c) one job at a time, one turn at a time."""
    store, specs = _context(out, settings)
    runtime = ToolRuntime(TOOLS, 1)
    channel = ModelChannel(
        ModelEndpoint.at(settings.endpoint, MODEL, timeout_s=600, max_in_flight=1)
    )
    cache = ViewCache()
    trajectories = []
    begun = time.monotonic()
    for job in jobs:
        traj = start_trajectory(
            job, store, "r1v4", specs, MODEL, settings.sampling, settings.max_turns
        )
        while not traj.done:
            messages = inline_images(traj.messages, cache)
            traj, calls = _apply(traj, complete(channel, messages, traj.sampling))
            if calls:
                outcome = run_turn(traj, runtime, store, 60.0).outcome
                traj = outcome if isinstance(outcome, Trajectory) else outcome.trajectory
        trajectories.append(traj)
    channel.close()
    return _score("naive", trajectories, time.monotonic() - begun)


def run_pipeline(corpus: Path, out: Path, settings: Settings) -> Measured:
    """(b) the annotate pipeline, every output written."""
    started = time.monotonic()
    result = annotate.run(
        [
            f"--input={corpus}",
            f"--output={out}",
            f"--endpoint={settings.endpoint}",
            f"--max_in_flight={settings.concurrency}",
            f"--max_turns={settings.max_turns}",
            f"--tool_workers={settings.tool_workers}",
            f"--max_pixels={settings.max_pixels}",
            f"--max_tokens={settings.max_tokens}",
            "--progress=off",
        ]
    )
    wall_s = time.monotonic() - started
    counts = result.summary.counts
    stages = {
        name: round(value["mean"], 1)
        for name, value in sorted(result.metrics.items())
        if "_ms" in name and isinstance(value, dict)  # prepare_ms, tool_latency_ms_code, ...
    }
    return Measured("pipeline", counts.finished, counts.answered, counts.correct, wall_s, stages)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--tool-workers", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_SAMPLING["max_tokens"])
    parser.add_argument("--triton-url", default=None, help="default: start the local server")
    parser.add_argument("--rounds", type=int, default=3, help="alternating (a, b) rounds")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from beam_pipelines.synthetic import write_corpus

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pipe-")))
        corpus = write_corpus(work / "corpus", args.jobs, seed=4242)
        jobs = [Job.from_json(line) for line in corpus.read_text().splitlines()]
        url = args.triton_url
        if not url:
            server = stack.enter_context(TritonServer(log_file=work / "tritonserver.log"))
            url = server.grpc_url
        budget = TritonClient(url, MODEL).describe(60).budget
        if budget is None:
            raise SystemExit(f"{url} states no image budget for {MODEL}")
        settings = Settings(
            f"triton:{url}",
            args.concurrency,
            args.max_turns,
            budget.max_pixels,
            args.tool_workers,
            args.max_tokens,
        )
        run_bare(jobs[: min(8, len(jobs))], work / "warmup", settings)  # warm the server
        rounds: list[tuple[Measured, Measured]] = []
        for i in range(args.rounds):
            rounds.append(
                (
                    run_bare(jobs, work / f"bare-{i}", settings),
                    run_pipeline(corpus, work / f"pipeline-{i}", settings),
                )
            )
        naive = None if args.skip_naive else run_naive(jobs, work / "naive", settings)

    ratios = sorted(b.jobs_per_s / a.jobs_per_s for a, b in rounds)
    # The round whose ratio is the median stands for the run.
    a, b = next(r for r in rounds if r[1].jobs_per_s / r[0].jobs_per_s == ratios[len(ratios) // 2])
    measured = [a, b, *([naive] if naive else [])]
    by_mode = {m.mode: m for m in measured}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT
    ).stdout.strip()
    result: dict[str, Any] = {
        "benchmark": "pipeline_efficiency",
        "commit": commit,
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "max_turns": args.max_turns,
        "modes": {m.mode: {**asdict(m), "jobs_per_s": m.jobs_per_s} for m in measured},
        "rounds": [
            {"bare_jobs_per_s": r[0].jobs_per_s, "pipeline_jobs_per_s": r[1].jobs_per_s}
            for r in rounds
        ],
        "b_over_a": ratios[len(ratios) // 2],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    line = (
        f"pipeline_efficiency: {args.jobs} jobs at concurrency {args.concurrency}: "
        f"bare {a.jobs_per_s:.2f} jobs/s, pipeline {b.jobs_per_s:.2f} jobs/s "
        f"(b/a {result['b_over_a']:.2f}, median of {args.rounds} rounds)"
    )
    if "naive" in by_mode:
        c = by_mode["naive"]
        result["b_over_c"] = b.jobs_per_s / c.jobs_per_s
        line += f", naive {c.jobs_per_s:.2f} jobs/s (b/c {result['b_over_c']:.1f})"
    accuracy = {m.mode: round(m.correct / m.jobs, 3) for m in measured if m.jobs}
    line += f"; accuracy {accuracy}"
    result["summary"] = line
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
