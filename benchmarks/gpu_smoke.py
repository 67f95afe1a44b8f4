"""GPU smoke benchmark: serve `agent_vlm` with one engine on the GPU and run agent jobs through it.

A random-initialised tiny Qwen3-VL-MoE checkpoint (written on the spot by the serving code's
`random_checkpoint`, as the GPU machine has no model hub) is served by the real `tritonserver`
with the `hf` engine (`configs/hf.pbtxt`, bf16, `KIND_GPU`) or the `trtllm` engine
(`configs/skywork_r1v4_trtllm.pbtxt`). Synthetic jobs (`beam_pipelines.synthetic.write_corpus`)
are driven by the project's own agent loop (`beam_pipelines.agent.loop`: system prompt, the job
image's model view, then one turn after another until the job ends) through the project's
Triton client (gRPC; `agent_vlm` is decoupled, so requests go over Triton's stream), with
`--concurrency` jobs in flight. A random model never writes a valid action, so
every job runs its turns until the format-error or turn cap: several requests per job with a
growing prompt, which is the shape of real agent traffic (and what KV-cache prefix reuse is
for).

It writes a JSON result and prints one summary line: output tokens/s, jobs/s, requests/s.

    PYTHONPATH=. python benchmarks/gpu_smoke.py --engine hf --out results/gpu_smoke_hf.json
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_CODE = REPO_ROOT / "triton_repo" / "agent_vlm" / "1"
CONFIG_NAMES = {"hf": "hf", "trtllm": "skywork_r1v4_trtllm"}
# Settings of the deployment configs that a toy checkpoint on one GPU needs changed.
ENGINE_PARAMETERS: dict[str, dict[str, str]] = {
    "hf": {},
    "trtllm": {"max_seq_len": "4096", "cuda_graph_max_batch_size": "0"},
}
VIEW_PIXELS = 256 * 256


@dataclass(frozen=True)
class JobResult:
    """One job's outcome: its status, model requests sent and token usage (errored jobs count
    no tokens for the failed request, and no job in jobs/s)."""

    status: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


class AgentVLMClient:
    """A blocking `agent_vlm` client over the project's `TritonClient` (gRPC stream)."""

    def __init__(self, grpc_url: str, model: str = "agent_vlm", timeout_s: float = 600.0) -> None:
        from beam_pipelines.model_client.triton import TritonClient

        self.client = TritonClient(grpc_url, model)
        self.timeout_s = timeout_s

    def infer(self, messages: Sequence[Mapping[str, Any]], sampling: Mapping[str, Any]) -> dict:
        """Send one request; returns `text`, `finish_reason` and `usage` (decoded)."""
        answered = threading.Event()
        outcome: list[Any] = []

        def done(completion: Any, error: BaseException | None) -> None:
            outcome.extend((completion, error))
            answered.set()

        self.client.send(messages, sampling, self.timeout_s, done)
        answered.wait()
        completion, error = outcome
        if error is not None:
            raise error
        return {
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "usage": completion.usage,
        }


def inline_views(messages: Sequence[Mapping[str, Any]], cache: dict[str, str]) -> list[dict]:
    """The messages with every image URI (a local PNG) replaced by a `data:` URL."""
    out = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            parts = []
            for part in content:
                if part.get("type") == "image_url":
                    uri = part["image_url"]["url"]
                    if uri not in cache:
                        data = base64.b64encode(Path(uri).read_bytes()).decode("ascii")
                        cache[uri] = f"data:image/png;base64,{data}"
                    part = {"type": "image_url", "image_url": {"url": cache[uri]}}
                parts.append(part)
            content = parts
        out.append({**message, "content": content})
    return out


def prepare_jobs(work: Path, n: int, seed: int) -> list[tuple[Any, Any, Any]]:
    """Write `n` synthetic jobs; return (job, original ImageRef, view ImageRef) for each."""
    from beam_pipelines.agent.images import encode_png, load_image, model_view, sha256_hex
    from beam_pipelines.agent.records import ImageRef, Job
    from beam_pipelines.synthetic import write_corpus

    jobs_path = write_corpus(work / "corpus", n, seed)
    views = work / "views"
    views.mkdir(exist_ok=True)
    prepared = []
    for line in jobs_path.read_text().splitlines():
        job = Job.from_dict(json.loads(line))
        data = Path(job.image).read_bytes()
        original = load_image(data)
        view = model_view(original, VIEW_PIXELS)
        png = encode_png(view)
        digest = sha256_hex(png)
        path = views / f"{digest}.png"
        path.write_bytes(png)
        prepared.append(
            (
                job,
                ImageRef(job.image, sha256_hex(data), original.width, original.height),
                ImageRef(str(path), digest, view.width, view.height),
            )
        )
    return prepared


def run_job(
    client: AgentVLMClient,
    prepared: tuple[Any, Any, Any],
    sampling: Mapping[str, Any],
    max_turns: int,
    cache: dict[str, str],
) -> JobResult:
    """Drive one job with the agent loop until it ends; no tools are enabled."""
    from beam_pipelines.agent import loop

    job, original, view = prepared
    traj = loop.start(
        job, "r1v4", [], original, view, model="agent_vlm", sampling=sampling, max_turns=max_turns
    )
    requests = prompt_tokens = completion_tokens = 0
    try:
        while not traj.done:
            started = time.perf_counter()
            requests += 1
            reply = client.infer(inline_views(traj.messages, cache), traj.sampling)
            if reply["finish_reason"] == "error":
                return JobResult("error", requests, prompt_tokens, completion_tokens, reply["text"])
            usage = reply["usage"]
            prompt_tokens += int(usage["prompt_tokens"])
            completion_tokens += int(usage["completion_tokens"])
            traj, calls = loop.advance(
                traj,
                reply["text"],
                finish_reason=reply["finish_reason"],
                usage=usage,
                latency_s=time.perf_counter() - started,
            )
            if calls:  # unreachable without tools; never leave a job half-run silently
                return JobResult("tool_call", requests, prompt_tokens, completion_tokens)
    except Exception as exc:
        return JobResult("error", requests, prompt_tokens, completion_tokens, repr(exc))
    return JobResult(str(traj.status), requests, prompt_tokens, completion_tokens)


def gpu_name() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=sorted(CONFIG_NAMES), default="hf")
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128, help="per model request")
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--checkpoint", type=Path, help="default: write a random tiny one")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="JSON result file")
    parser.add_argument(
        "--cpu", action="store_true", help="dry run of the hf engine on CPU (no GPU figures)"
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(MODEL_CODE))
    from beam_pipelines.serve import TritonServer, stage_model_repository

    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint
    if checkpoint is None:
        from random_checkpoint import write_checkpoint

        checkpoint = write_checkpoint(work / "checkpoint", seed=args.seed)
    prepared = prepare_jobs(work, args.jobs, args.seed)
    parameters = {"checkpoint": str(checkpoint), **ENGINE_PARAMETERS[args.engine]}
    if args.cpu:
        parameters.update(device="cpu", dtype="float32")
    repository = stage_model_repository(
        work / f"repo-{args.engine}",
        model_config_name=CONFIG_NAMES[args.engine],
        parameters=parameters,
        instance_kind="KIND_CPU" if args.cpu else None,
    )
    sampling = {"max_tokens": args.max_tokens, "temperature": 0.0}
    log_file = work / f"tritonserver-{args.engine}.log"
    load_started = time.perf_counter()
    with TritonServer(repository, log_file=log_file, startup_timeout_s=900) as server:
        load_s = time.perf_counter() - load_started
        client = AgentVLMClient(server.grpc_url)
        cache: dict[str, str] = {}
        run_job(client, prepared[0], sampling, 1, cache)  # warm-up: one request
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            results = list(
                pool.map(
                    lambda p: run_job(client, p, sampling, args.max_turns, cache),
                    prepared,
                )
            )
        wall_s = time.perf_counter() - started
        log_tail = server.log_tail(20)

    statuses: dict[str, int] = {}
    for result in results:
        statuses[result.status] = statuses.get(result.status, 0) + 1
    finished = sum(1 for r in results if r.status != "error")
    completion = sum(r.completion_tokens for r in results)
    requests = sum(r.requests for r in results)
    summary = {
        "engine": args.engine,
        "config": CONFIG_NAMES[args.engine],
        "gpu": "none (--cpu dry run)" if args.cpu else gpu_name(),
        "python": platform.python_version(),
        "jobs": len(results),
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "max_turns": args.max_turns,
        "statuses": statuses,
        "requests": requests,
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "completion_tokens": completion,
        "wall_s": round(wall_s, 3),
        "load_s": round(load_s, 1),
        "output_tokens_per_s": round(completion / wall_s, 1),
        "jobs_per_s": round(finished / wall_s, 3),
        "requests_per_s": round(requests / wall_s, 2),
        "errors": [asdict(r) for r in results if r.error][:5],
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"gpu_smoke {args.engine} on {summary['gpu']}: {summary['output_tokens_per_s']} output "
        f"tokens/s, {summary['jobs_per_s']} jobs/s, {summary['requests_per_s']} requests/s "
        f"({len(results)} jobs, {requests} requests, concurrency {args.concurrency}, "
        f"{wall_s:.1f}s; statuses {statuses})"
    )
    if statuses.get("error"):
        print(f"errors: {summary['errors']}\n--- server log tail ---\n{log_tail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
