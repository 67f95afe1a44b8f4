"""Memory: peak RSS of an annotate run of 5,000 jobs over that of a 500-job run (aim <= 1.5).

Memory must not grow with the corpus (vLLM #30268: 177 GB for a 500k-line batch). Each run is
a separate `python -m beam_pipelines annotate` process against one shared Triton server, and
its peak resident set size comes from `wait4` (the kernel's high-water mark for that process
and the sandboxes it waited for). The jobs cycle over a hundred synthetic images with distinct
ids, so the large run has ten times the jobs, trajectories, traces and answer rows without
ten times the image rendering.

    python benchmarks/memory.py [--small 500] [--large 5000] [--triton-url H:P]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from beam_pipelines.serve import TritonServer  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "memory.json"
DISTINCT_IMAGES = 100


def write_jobs(base: Path, n: int, destination: Path) -> Path:
    """`n` jobs cycling over the base corpus's jobs, each with its own id."""
    templates = [json.loads(line) for line in base.read_text().splitlines()]
    with destination.open("w") as f:
        for i in range(n):
            job = dict(templates[i % len(templates)])
            job["id"] = f"mem-{i:06d}"
            f.write(json.dumps(job) + "\n")
    return destination


def measure(
    jobs: Path, out: Path, url: str, max_turns: int, concurrency: int, extra: Sequence[str]
) -> dict[str, Any]:
    """Run annotate in its own process; its peak RSS and wall time."""
    command = [
        sys.executable,
        "-m",
        "beam_pipelines",
        "annotate",
        f"--input={jobs}",
        f"--output={out}",
        f"--triton_url={url}",
        f"--max_turns={max_turns}",
        f"--max_in_flight={concurrency}",
        "--progress=off",
        *extra,
    ]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"annotate exited with {process.returncode}")
    lines = sum(1 for _ in jobs.open())
    return {
        "jobs": lines,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
        "wall_s": wall_s,
        "jobs_per_s": lines / wall_s,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=None, help="default: annotate's")
    parser.add_argument("--triton-url", default=None, help="default: start the local server")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from tiny_agent.task import write_corpus

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-mem-")))
        base = write_corpus(work / "base", DISTINCT_IMAGES, seed=99)
        url = args.triton_url
        if not url:
            url = stack.enter_context(TritonServer(log_file=work / "tritonserver.log")).grpc_url
        runs = {}
        for name, n in (("small", args.small), ("large", args.large)):
            jobs = write_jobs(base, n, work / f"{name}.jsonl")
            extra = [f"--max_tokens={args.max_tokens}"] if args.max_tokens else []
            runs[name] = measure(
                jobs, work / f"out-{name}", url, args.max_turns, args.concurrency, extra
            )

    ratio = runs["large"]["peak_rss_mib"] / runs["small"]["peak_rss_mib"]
    line = (
        f"memory: peak RSS {runs['small']['peak_rss_mib']:.0f} MiB at {args.small} jobs, "
        f"{runs['large']['peak_rss_mib']:.0f} MiB at {args.large} jobs: ratio {ratio:.2f} "
        "(aim <= 1.5)"
    )
    result = {
        "benchmark": "memory",
        "runs": runs,
        "rss_ratio": ratio,
        "summary": line,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
