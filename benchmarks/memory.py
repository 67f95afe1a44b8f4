"""Memory: peak RSS of an annotate run of 5,000 jobs over that of a 500-job run (aim <= 1.5).

Memory must not grow with the corpus (vLLM #30268: 177 GB for a 500k-line batch). Each run is
a separate `python -m beam_pipelines annotate` process against one shared Triton server, and
its peak resident set size comes from `wait4` (the kernel's high-water mark for that process
and the sandboxes it waited for). The jobs cycle over a hundred synthetic images with distinct
ids, so the large run has ten times the jobs, trajectories, traces and answer rows without
ten times the image rendering.

`--model tiny` (the default) serves the project's `triton_repo`, the embedded tiny model; 5,500
jobs of it cost about 45 minutes of CPU. `--model scripted` serves the scripted `agent_vlm` of
the pipeline tests (`tests/pipeline/scripted_repo`) instead, and rewrites each job's question
to `CALL <code tool call>` cropping a 160 px box around the job's target marker (the tiny
model's own zoom code, `tiny_agent.data.crop_code`). Every job then takes the path a zoom takes
with the real model: a tool call parsed from the reply, a sandboxed `code` run that crops the
full-resolution image, a tool image written, an observation, an answer, and the trajectory,
trace and answer writers. That is a fair load for a memory measurement: the pipeline's memory
depends on the elements it holds, not on the model's arithmetic, which runs in the server, not
in the measured process; a faster model means more elements in flight per second, not fewer.
The results record which model was used.

`--model instant` needs no server: annotate's in-process scripted model (`--endpoint
scripted:call`) asks for one `image_zoom_in_tool` crop around the target, then answers; every
job still reads and views its image (512 px here), stores a tool image and its view, and
writes a trajectory, trace and answer row, at a fraction of the CPU, so a 50,000-job run fits
in minutes.

    python benchmarks/memory.py [--model tiny|scripted|instant] [--small 500] [--large 5000]
        [--triton-url H:P]
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
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from beam_pipelines.serve import DEFAULT_MODEL_REPOSITORY, TritonServer  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "memory.json"
DISTINCT_IMAGES = 100
SCRIPTED_REPO = REPO_ROOT / "tests" / "pipeline" / "scripted_repo"
INSTANT_SIDE = 512  # px, the instant model's images (`shrink_images`)


def scripted_question(job: dict[str, Any]) -> str:
    """`CALL` + the `code` call that crops a 160 px box around the job's target marker."""
    from tiny_agent.data import crop_code, fraction

    target = job["meta"]["target"]
    code = crop_code(fraction(target["x"]), fraction(target["y"]))
    return "CALL " + json.dumps({"name": "code", "arguments": {"code": code}})


def shrink_images(folder: Path, side: int) -> None:
    """Re-save the corpus's JPEGs at `side` px: the instant model's jobs measure how memory
    grows with the number of jobs, and small images keep 50,000 of them affordable (a box in
    relative coordinates crops the same content at any size)."""
    from PIL import Image

    for path in folder.glob("*.jpg"):
        with Image.open(path) as image:
            small = image.resize((side, side), Image.Resampling.BICUBIC)
        small.save(path, quality=92)


def zoom_question(job: dict[str, Any]) -> str:
    """`CALL` + the `image_zoom_in_tool` call for the same box (relative 0-1000 coordinates)."""
    from beam_pipelines.synthetic import IMAGE_SIDE

    target = job["meta"]["target"]
    x, y = (round(1000 * target[k] / IMAGE_SIDE) for k in ("x", "y"))
    box = [max(0, x - 40), max(0, y - 40), min(1000, x + 40), min(1000, y + 40)]
    return "CALL " + json.dumps({"name": "image_zoom_in_tool", "arguments": {"bbox_2d": box}})


def write_jobs(base: Path, n: int, destination: Path, model: str = "tiny") -> Path:
    """`n` jobs cycling over the base corpus's jobs, each with its own id; for the scripted
    models each question is the model's call (`scripted_question`, `zoom_question`)."""
    templates = [json.loads(line) for line in base.read_text().splitlines()]
    question = {"scripted": scripted_question, "instant": zoom_question}.get(model)
    if question is not None:
        # Without options: the protocol appends them to the question, after the call's JSON.
        templates = [
            {k: v for k, v in job.items() if k not in ("options", "answer")}
            | {"question": question(job)}
            for job in templates
        ]
    with destination.open("w") as f:
        for i in range(n):
            job = dict(templates[i % len(templates)])
            job["id"] = f"mem-{i:06d}"
            f.write(json.dumps(job) + "\n")
    return destination


def answer_rows(out: Path) -> dict[str, int]:
    """What the run wrote: answer rows by status, and how many made at least one tool call."""
    from beam_pipelines.outputs.layout import OutputLayout
    from beam_pipelines.outputs.readers import read_answers

    rows = read_answers(OutputLayout(str(out), run_id="").all_answers_glob())
    counts = Counter(row["status"] for row in rows)
    counts["with_tool_call"] = sum(1 for row in rows if row["tool_calls"])
    return dict(counts)


def measure(
    jobs: Path, out: Path, endpoint: str, max_turns: int, concurrency: int, extra: Sequence[str]
) -> dict[str, Any]:
    """Run annotate in its own process; its peak RSS and wall time."""
    command = [
        sys.executable,
        "-m",
        "beam_pipelines",
        "annotate",
        f"--input={jobs}",
        f"--output={out}",
        f"--endpoint={endpoint}",
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
        "rows": answer_rows(out),
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
        "wall_s": wall_s,
        "jobs_per_s": lines / wall_s,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        choices=("tiny", "scripted", "instant"),
        default="tiny",
        help="tiny: the embedded model (triton_repo); scripted: the pipeline tests' scripted "
        "agent_vlm, every job one sandboxed crop then an answer; instant: the in-process "
        "scripted model (no server), every job one image_zoom_in_tool crop then an answer, "
        "cheap enough for --large 50000",
    )
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=None, help="default: annotate's")
    parser.add_argument("--triton-url", default=None, help="default: start the local server")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from beam_pipelines.synthetic import write_corpus

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-mem-")))
        base = write_corpus(work / "base", DISTINCT_IMAGES, seed=99)
        scripted = args.model == "scripted"
        extra = [f"--max_tokens={args.max_tokens}"] if args.max_tokens else []
        if args.model == "instant":
            shrink_images(base.parent / "images", INSTANT_SIDE)
            endpoint = "scripted:call"
            extra.append("--tools=image_zoom_in_tool")
        elif args.triton_url:
            endpoint = f"triton:{args.triton_url}"
        else:
            repository = SCRIPTED_REPO if scripted else DEFAULT_MODEL_REPOSITORY
            server = TritonServer(repository, log_file=work / "tritonserver.log")
            endpoint = f"triton:{stack.enter_context(server).grpc_url}"
        runs = {}
        for name, n in (("small", args.small), ("large", args.large)):
            jobs = write_jobs(base, n, work / f"{name}.jsonl", args.model)
            runs[name] = measure(
                jobs, work / f"out-{name}", endpoint, args.max_turns, args.concurrency, extra
            )

    ratio = runs["large"]["peak_rss_mib"] / runs["small"]["peak_rss_mib"]
    line = (
        f"memory ({args.model} model): peak RSS {runs['small']['peak_rss_mib']:.0f} MiB at "
        f"{args.small} jobs, "
        f"{runs['large']['peak_rss_mib']:.0f} MiB at {args.large} jobs: ratio {ratio:.2f} "
        "(aim <= 1.5)"
    )
    result = {
        "benchmark": "memory",
        "model": args.model,
        "model_repository": (
            "in-process (scripted:call)"
            if args.model == "instant"
            else args.triton_url
            or str((SCRIPTED_REPO if scripted else DEFAULT_MODEL_REPOSITORY).relative_to(REPO_ROOT))
        ),
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
