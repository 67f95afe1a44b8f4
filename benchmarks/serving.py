"""Serving benchmark: `agent_vlm` on the local CPU Triton server, through the model client.

Sends the agent's real mix of requests: the turns of synthetic "zoom to read" jobs, each job
1 to 3 turns deep (as deep as the tiny model's 768-token context allows): the r1v4 system
prompt with the `code` tool, the job image's view and the question, then per earlier turn the
model's tool call and its observation with a crop's view (views sized, as the pipeline sizes
them, to the image budget the served model states); shuffled the way jobs at different turns
are in flight together, with the pipeline's sampling (greedy, `max_tokens` 1024, the
protocol's stop strings), so prompts and completions vary widely in length. It measures
jobs/s, output tokens/s and the client's p50/p95 latency at each concurrency (default 16, 64).

- `--compare REV` (default `HEAD`): the same load on the model as committed at REV (a git
  worktree of it, its own `triton_repo` and `tiny_agent`), both servers up and measured
  alternately for `--rounds` rounds so that both see the same machine load; the medians and
  the throughput ratio (this tree / REV) are reported. `--compare ''` measures this tree only.

Greedy decoding makes both servers generate the same tokens for the same requests (checked:
`same_output_tokens`). Both servers run torch on `--threads` threads (OMP_NUM_THREADS, default
1): on a small shared machine two OpenMP threads on the Triton stub's main thread run the tiny
model some 20x slower than one (oversubscribed cores), which would swamp what is compared.
Writes a JSON result and prints a one-line summary.

    python benchmarks/serving.py                       # the tiny model, against HEAD
    python benchmarks/serving.py --compare HEAD~3 --concurrency 16,64 --jobs 128
    python benchmarks/serving.py --engine hf --compare ''   # a random tiny Qwen3-VL-MoE
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
MODEL_DIR = REPO_ROOT / "triton_repo" / "agent_vlm"
TINY_WEIGHTS = MODEL_DIR / "tiny"
MODEL_NAME = "agent_vlm"

from beam_pipelines.serve import TritonServer, stage_model_repository  # noqa: E402


@dataclass(frozen=True)
class Level:
    """One measured load: `jobs` requests with at most `concurrency` in flight."""

    server: str  # "this" or "compared"
    concurrency: int
    jobs: int
    errors: int
    wall_s: float
    jobs_per_s: float
    output_tokens: int
    output_tokens_per_s: float
    prompt_tokens_mean: float
    latency_p50_s: float
    latency_p95_s: float


def _png_url(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def build_requests(count: int, seed: int, view_pixels: int) -> list[list[dict[str, Any]]]:
    """`count` requests (chat messages) of the agent's mix: turns of synthetic jobs, each job
    1-3 turns deep, every turn of a job sent, shuffled."""
    from beam_pipelines import synthetic
    from beam_pipelines.agent.images import model_view
    from beam_pipelines.agent.protocols import get_protocol
    from beam_pipelines.agent.records import Job
    from tools.registry import tool_specs

    protocol = get_protocol("r1v4")
    system = protocol.system_prompt(tool_specs(["code"]))
    rng = random.Random(seed)
    requests: list[list[dict[str, Any]]] = []
    index = 0
    while len(requests) < count:
        scene = synthetic.make_scene(rng)
        question = synthetic.make_question(rng, scene, synthetic.question_kind(rng, 0.7))
        job = Job(id=f"bench-{index}", image="", question=question.text, options=question.options)
        index += 1
        image = synthetic.render(scene)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": _png_url(model_view(image, view_pixels))},
                    },
                    {"type": "text", "text": protocol.user_text(job)},
                ],
            },
        ]
        for turn in range(rng.randint(1, 3)):
            requests.append(list(messages))
            width, height = image.size
            x, y = rng.randrange(width // 2), rng.randrange(height // 2)
            box = (x, y, x + width // 2, y + height // 2)
            call = {"name": "code", "arguments": {"code": f"crop(image, {box})"}}
            messages.append(
                {
                    "role": "assistant",
                    "content": f"<think>The text is small; zoom into {box} (step {turn + 1})."
                    f"</think><tool_call>{json.dumps(call)}</tool_call>",
                }
            )
            observation = {"result": f"crop {box} shown as image {turn + 2}", "type": "code"}
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": f"<observation>{json.dumps(observation)}</observation>",
                        },
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": _png_url(model_view(image.crop(box), view_pixels))
                            },
                        },
                    ],
                }
            )
    rng.shuffle(requests)
    return requests[:count]


def sampling_of(max_tokens: int) -> dict[str, Any]:
    from beam_pipelines.agent.protocols import get_protocol

    stop = list(get_protocol("r1v4").stop)
    return {"max_tokens": max_tokens, "temperature": 0, "stop": stop}


def run_level(
    url: str,
    server: str,
    requests: Sequence[list[dict[str, Any]]],
    sampling: dict[str, Any],
    concurrency: int,
) -> Level:
    """Send every request with at most `concurrency` in flight (the model client's budget,
    no retries); measure throughput and the client's latencies."""
    from beam_pipelines.model_client.base import (
        ModelEndpoint,
        ModelError,
        ModelReply,
        RetryPolicy,
    )
    from beam_pipelines.model_client.channel import InFlightRequests, ModelChannel

    endpoint = ModelEndpoint(
        url, MODEL_NAME, max_in_flight=concurrency, retry=RetryPolicy(max_attempts=1)
    )
    channel = ModelChannel(endpoint)
    in_flight = InFlightRequests(channel)
    started = time.perf_counter()
    for key, messages in enumerate(requests):
        in_flight.submit(key, messages, sampling)
    outcomes = [outcome for _, outcome in in_flight.wait_all()]
    wall = time.perf_counter() - started
    channel.close()
    replies = [o for o in outcomes if isinstance(o, ModelReply)]
    failures = [o.message for o in outcomes if isinstance(o, ModelError)]
    failures += [r.text for r in replies if r.finish_reason == "error"]
    errors = len(failures)
    for message in sorted(set(failures))[:3]:
        print(f"  {server} error: {message[:200]}", file=sys.stderr)
    output_tokens = sum(r.usage["completion_tokens"] for r in replies)
    ordered = sorted(r.latency_s for r in replies)
    return Level(
        server=server,
        concurrency=concurrency,
        jobs=len(requests),
        errors=errors,
        wall_s=round(wall, 3),
        jobs_per_s=round(len(requests) / wall, 3),
        output_tokens=output_tokens,
        output_tokens_per_s=round(output_tokens / wall, 2),
        prompt_tokens_mean=round(statistics.fmean(r.usage["prompt_tokens"] for r in replies), 1),
        latency_p50_s=round(ordered[len(ordered) // 2], 3),
        latency_p95_s=round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
    )


def measure(
    url: str,
    server: str,
    requests: Sequence[list[dict[str, Any]]],
    sampling: dict[str, Any],
    c: int,
) -> Level:
    """Run one level and report it on stderr."""
    level = run_level(url, server, requests, sampling, c)
    print(f"  {server:9s} c={c:<3d} {level.jobs_per_s:7.3f} jobs/s "
          f"{level.output_tokens_per_s:8.1f} tok/s  p50 {level.latency_p50_s:.2f}s",
          file=sys.stderr, flush=True)  # fmt: skip
    return level


def engine_parameters(
    args: argparse.Namespace, workdir: Path
) -> tuple[str, str | None, dict[str, str]]:
    """The engine to serve, the config it starts from, and its parameter overrides."""
    engine = args.engine
    if engine == "auto":
        engine = "tiny" if (TINY_WEIGHTS / "config.json").exists() else "hf"
    if engine == "tiny":
        if not (TINY_WEIGHTS / "config.json").exists():
            raise SystemExit(f"no tiny model weights under {TINY_WEIGHTS} (make train-tiny)")
        return engine, None, {"checkpoint": str(TINY_WEIGHTS)}
    checkpoint = args.checkpoint
    if checkpoint is None:
        sys.path.insert(0, str(MODEL_DIR / "1"))
        from random_checkpoint import write_checkpoint

        checkpoint = write_checkpoint(workdir / "random-qwen3-vl-moe")
    return (
        engine,
        "hf",
        {
            "checkpoint": str(Path(checkpoint).resolve()),
            "device": args.device,
            "dtype": "auto",
        },
    )


def stated_max_pixels(url: str) -> int:
    """The `max_pixels` of the image budget the served model states."""
    from beam_pipelines.model_client.triton import TritonClient

    client = TritonClient(url, MODEL_NAME)
    try:
        budget = client.describe(30).budget
    finally:
        client.close()
    if budget is None:
        raise SystemExit("the served model states no image budget: pass --view-pixels")
    return budget.max_pixels


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def this_commit() -> str:
    """HEAD, marked `+changes` when the tree differs from it in what the benchmark serves."""
    head = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--", "triton_repo", "tiny_agent", "beam_pipelines")
    return head + ("+changes" if changed else "")


@contextlib.contextmanager
def worktree(revision: str, workdir: Path) -> Any:
    """A detached git worktree of `revision` (removed afterwards)."""
    path = workdir / "compare-tree"
    git("worktree", "add", "--detach", str(path), revision)
    try:
        yield path
    finally:
        git("worktree", "remove", "--force", str(path))


def median_level(levels: Sequence[Level]) -> dict[str, Any]:
    """The median of each measure over rounds of one level."""
    keys = ("jobs_per_s", "output_tokens_per_s", "latency_p50_s", "latency_p95_s", "wall_s")
    return {
        "concurrency": levels[0].concurrency,
        "jobs": levels[0].jobs,
        "errors": sum(level.errors for level in levels),
        **{
            key: round(statistics.median(getattr(level, key) for level in levels), 3)
            for key in keys
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("auto", "tiny", "hf"), default="auto")
    parser.add_argument("--checkpoint", type=Path, default=None, help="hf: checkpoint directory")
    parser.add_argument("--device", default="cpu", help="hf: torch device (default cpu)")
    parser.add_argument("--jobs", type=int, default=128, help="requests per level (default 128)")
    parser.add_argument("--concurrency", default="16,64", help="levels (default 16,64)")
    parser.add_argument("--max-tokens", type=int, default=1024, help="per request (the pipeline's)")
    parser.add_argument(
        "--view-pixels", type=int, default=None, help="view budget (default: the model's stated)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--compare", default="HEAD", help="git revision to compare with ('': none)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations per level")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each server")
    parser.add_argument(
        "--output", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "serving.json"
    )
    args = parser.parse_args(argv)
    levels = sorted({int(c) for c in args.concurrency.split(",")})

    with (
        tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        engine, config_name, parameters = engine_parameters(args, workdir)
        sampling = sampling_of(args.max_tokens)
        kind = "KIND_CPU" if not args.device.startswith("cuda") or engine != "hf" else "KIND_GPU"
        servers: dict[str, tuple[Path, dict[str, str]]] = {
            "this": (
                stage_model_repository(
                    workdir / "this", model_config_name=config_name, parameters=parameters,
                    instance_kind=kind,
                ),
                {"OMP_NUM_THREADS": str(args.threads)},
            )
        }  # fmt: skip
        compared = git("rev-parse", "--short", args.compare) if args.compare else None
        if args.compare:
            tree = stack.enter_context(worktree(args.compare, workdir))
            servers["compared"] = (
                stage_model_repository(
                    workdir / "compared", source=tree / "triton_repo",
                    model_config_name=config_name, parameters=parameters, instance_kind=kind,
                ),
                {"OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(tree)},  # its tiny_agent
            )  # fmt: skip
        urls = {}
        for name, (repository, env) in servers.items():
            running = stack.enter_context(
                TritonServer(
                    repository, log_file=workdir / f"{name}.log", startup_timeout_s=600, env=env
                )
            )
            urls[name] = running.grpc_url
        # Views as the pipeline sizes them: to the image budget the served model states.
        view_pixels = args.view_pixels or stated_max_pixels(urls["this"])
        requests = build_requests(args.jobs, args.seed, view_pixels)
        print(
            f"serving benchmark: engine {engine}, {len(requests)} requests per level, views of "
            f"{view_pixels} pixels, this tree vs {compared or 'nothing'}",
            file=sys.stderr,
        )
        for name, url in urls.items():
            # The first executions are slow (lazy initialisation): keep them out of timings.
            measure(url, f"{name}*", requests[:4], sampling, 4)
        rounds: dict[str, dict[int, list[Level]]] = {name: {c: [] for c in levels} for name in urls}
        for round_index in range(args.rounds):
            for c in levels:
                # Alternate which server goes first, so that neither always follows the other.
                order = list(urls) if round_index % 2 == 0 else list(reversed(urls))
                for name in order:
                    rounds[name][c].append(measure(urls[name], name, requests, sampling, c))
    completions = [
        level.output_tokens for by_c in rounds.values() for ls in by_c.values() for level in ls
    ]
    result: dict[str, Any] = {
        "benchmark": "serving",
        "engine": engine,
        "checkpoint": parameters["checkpoint"],
        "commit": this_commit(),
        "compared_with": compared,
        "mix": "agent turns 1-3 deep, shuffled; greedy, the r1v4 stop strings",
        "torch_threads": args.threads,
        "requests_per_level": len(requests),
        "max_tokens": args.max_tokens,
        "view_pixels": view_pixels,
        "rounds": args.rounds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "servers": {name: [median_level(by_c[c]) for c in levels] for name, by_c in rounds.items()},
        "all_rounds": {
            name: [asdict(level) for c in levels for level in by_c[c]]
            for name, by_c in rounds.items()
        },
        "same_output_tokens": len(set(completions)) == 1,
    }
    if compared:
        result["ratios"] = [
            {
                "concurrency": c,
                "throughput": round(
                    statistics.median(lv.jobs_per_s for lv in rounds["this"][c])
                    / statistics.median(lv.jobs_per_s for lv in rounds["compared"][c]),
                    2,
                ),
                "p50": round(
                    statistics.median(lv.latency_p50_s for lv in rounds["this"][c])
                    / statistics.median(lv.latency_p50_s for lv in rounds["compared"][c]),
                    2,
                ),
                "p95": round(
                    statistics.median(lv.latency_p95_s for lv in rounds["this"][c])
                    / statistics.median(lv.latency_p95_s for lv in rounds["compared"][c]),
                    2,
                ),
            }
            for c in levels
        ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    summary = " | ".join(
        f"{name} c={lv['concurrency']} {lv['jobs_per_s']:.2f} jobs/s "
        f"p50 {lv['latency_p50_s']:.2f}s p95 {lv['latency_p95_s']:.2f}s"
        for name, by_level in result["servers"].items()
        for lv in by_level
    )
    ratios = " ".join(f"c={r['concurrency']}: {r['throughput']}x" for r in result.get("ratios", []))
    print(f"serving[{engine}]: {summary} | throughput vs {compared}: {ratios} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
