"""Serving benchmark: `agent_vlm` on the local CPU Triton server, through the model client.

Sends the first agent turn of synthetic "zoom to read" jobs (the r1v4 system prompt with the
`code` tool, the job image's model view, the question with options; greedy, the protocol's
stop strings) and measures, in one run:

- jobs/s and output tokens/s at concurrency 1, 4 and 16 (dynamic batching on);
- the same load at the highest concurrency on a server whose model takes one request at a time
  (`max_batch_size: 1`), and the speed-up of batching over it: both servers stay up and the
  two are measured alternately for a few rounds (the median ratio is reported), so that both
  see the same load on a shared machine.

Greedy decoding makes every request generate the same tokens batched or not, so the two servers
do identical work. Writes a JSON result and prints a one-line summary.

    python benchmarks/serving.py                       # the tiny model, when its weights exist
    python benchmarks/serving.py --engine hf           # a random tiny Qwen3-VL-MoE it writes
    python benchmarks/serving.py --engine hf --checkpoint /models/qwen3-vl --jobs 64
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

    server: str  # "batched" or "unbatched"
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


def build_requests(
    count: int, seed: int, view_pixels: int, max_tokens: int
) -> list[list[dict[str, Any]]]:
    """First-turn requests (chat messages) for `count` synthetic jobs; sampling is shared."""
    from beam_pipelines import synthetic
    from beam_pipelines.agent.images import model_view
    from beam_pipelines.agent.protocols import get_protocol
    from beam_pipelines.agent.records import Job
    from tools.registry import tool_specs

    protocol = get_protocol("r1v4")
    system = protocol.system_prompt(tool_specs(["code"]))
    rng = random.Random(seed)
    requests = []
    for index in range(count):
        scene = synthetic.make_scene(rng)
        question = synthetic.make_question(rng, scene, synthetic.question_kind(rng, 0.7))
        job = Job(id=f"bench-{index}", image="", question=question.text, options=question.options)
        view = model_view(synthetic.render(scene), view_pixels)
        buffer = io.BytesIO()
        view.save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        messages = [
            {"role": "system", "content": system},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": protocol.user_text(job)},
                ],
            },
        ]
        requests.append(messages)
    return requests


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
    from beam_pipelines.model_client.base import ModelEndpoint, ModelReply, RetryPolicy
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
    errors = len(outcomes) - len(replies) + sum(r.finish_reason == "error" for r in replies)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("auto", "tiny", "hf"), default="auto")
    parser.add_argument("--checkpoint", type=Path, default=None, help="hf: checkpoint directory")
    parser.add_argument("--device", default="cpu", help="hf: torch device (default cpu)")
    parser.add_argument("--jobs", type=int, default=32, help="requests per level (default 32)")
    parser.add_argument("--concurrency", default="1,4,16", help="levels (default 1,4,16)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--view-pixels", type=int, default=512 * 512, help="model view budget")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="batched/unbatched alternations")
    parser.add_argument(
        "--output", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "serving.json"
    )
    args = parser.parse_args(argv)
    levels = sorted({int(c) for c in args.concurrency.split(",")})

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        workdir = Path(tmp)
        engine, config_name, parameters = engine_parameters(args, workdir)
        requests = build_requests(args.jobs, args.seed, args.view_pixels, args.max_tokens)
        sampling = sampling_of(args.max_tokens)
        kind = "KIND_GPU" if args.device.startswith("cuda") and engine == "hf" else "KIND_CPU"
        batched_repo = stage_model_repository(
            workdir / "batched", model_config_name=config_name, parameters=parameters,
            instance_kind=kind, max_batch_size=max(16, max(levels)),
        )  # fmt: skip
        single_repo = stage_model_repository(
            workdir / "unbatched", model_config_name=config_name, parameters=parameters,
            instance_kind=kind, max_batch_size=1,
        )  # fmt: skip
        print(f"serving benchmark: engine {engine}, {args.jobs} jobs per level", file=sys.stderr)
        with contextlib.ExitStack() as servers:
            urls = {}
            for name, repository in (("batched", batched_repo), ("unbatched", single_repo)):
                running = servers.enter_context(
                    TritonServer(
                        repository, log_file=workdir / f"{name}.log", startup_timeout_s=600
                    )
                )
                urls[name] = running.grpc_url
                # The first executions are slow (lazy initialisation): keep them out of timings.
                measure(urls[name], f"{name}*", requests[:4], sampling, 4)
            batched = [measure(urls["batched"], "batched", requests, sampling, c) for c in levels]
            # Batched vs one at a time, alternating so that both see the same machine load
            # (both servers are up; the idle one costs nothing).
            top_c = max(levels)
            pairs = [
                (
                    measure(urls["batched"], "batched", requests, sampling, top_c),
                    measure(urls["unbatched"], "unbatched", requests, sampling, top_c),
                )
                for _ in range(args.rounds)
            ]
    ratios = [b.jobs_per_s / u.jobs_per_s for b, u in pairs]
    speedup = round(statistics.median(ratios), 2)
    result: dict[str, Any] = {
        "benchmark": "serving",
        "engine": engine,
        "checkpoint": parameters["checkpoint"],
        "jobs_per_level": args.jobs,
        "max_tokens": args.max_tokens,
        "view_pixels": args.view_pixels,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "levels": [asdict(level) for level in batched],
        "speedup_rounds": [
            {"batched": asdict(b), "unbatched": asdict(u), "ratio": round(r, 3)}
            for (b, u), r in zip(pairs, ratios, strict=True)
        ],
        "batching_speedup": speedup,
        "same_output_tokens": all(b.output_tokens == u.output_tokens for b, u in pairs),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    summary = " | ".join(
        f"c={lv.concurrency} {lv.jobs_per_s:.2f} jobs/s {lv.output_tokens_per_s:.1f} tok/s"
        for lv in batched
    )
    print(
        f"serving[{engine}]: {summary} | batching speed-up at c={top_c}: {speedup}x "
        f"(median of {args.rounds} alternating rounds) -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
