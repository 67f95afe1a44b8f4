"""Pipeline ceiling: what the pipeline delivers when the model is not the limit.

The same "standard crop jobs" (a 2048 px JPEG each; the model asks for one sandboxed `code`
crop, the crop is stored with its view, then it answers; a trace and an answer row are written)
against the in-process scripted model (`--endpoint scripted:call`), three ways, as
`pipeline_efficiency.py` runs them: (a) the bare asyncio loop over the model client, (b) the
annotate pipeline, (c) one job at a time. Two models: instant, and one that answers each
request after `--delay-s` with every request waiting at once (a GPU server batching in
flight, as the client sees it). For each `max_in_flight` level: jobs/s, CPU ms per job (this
process and the sandboxes it reaps: `getrusage` of self and children), cores busy (CPU
seconds over wall seconds), and for the pipeline the mean time of each stage (its `*_ms*`
metrics: preparing a job's images, a model request, a tool call). Ratios compare within one
run; the machine is shared and noisy.

A last run gives the instant model jobs whose crop first waits `--tool-latency-s` (a tool
that waits on a service), at the highest level: its jobs/s over the instant model's says how
much tool latency the pipeline hides. CPU is also read machine-wide from `/proc/stat`
(`machine_*`): a bubblewrap sandbox's processes are reaped in its own pid namespace, so their
CPU never reaches this process's rusage; those columns need a quiet machine.

    python benchmarks/pipeline_ceiling.py [--jobs 96] [--levels 16,64,256] [--delay-s 0.3]
        [--tool-workers 4] [--tool-latency-s 0.5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from PIL import Image  # noqa: E402
from pipeline_efficiency import Measured, Settings, run_bare, run_naive, run_pipeline  # noqa: E402

from beam_pipelines.agent.records import Job  # noqa: E402
from beam_pipelines.model_client.scripted import SCRIPTED_BUDGET  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "pipeline_ceiling.json"
CROP_CODE = "save_image(image.crop((512, 512, 1024, 1024)))"
IMAGES = 8  # distinct originals, cycled over the jobs (views are content-addressed)
TOOL_LATENCY = "instant+tool-latency"


@dataclass(frozen=True)
class Level:
    model: str
    mode: str
    max_in_flight: int
    jobs: int
    answered: int
    wall_s: float
    jobs_per_s: float
    cpu_ms_per_job: float
    cores_busy: float
    machine_cpu_ms_per_job: float
    machine_cores_busy: float
    stage_mean_ms: dict[str, float] = field(default_factory=dict)


def crop_call(tool_latency_s: float = 0.0) -> dict[str, Any]:
    """The standard crop as a `code` call; with `tool_latency_s`, the code first sleeps that
    long (a tool that waits on something: wall time, no CPU)."""
    code = (
        f"import time\ntime.sleep({tool_latency_s:g})\n{CROP_CODE}" if tool_latency_s else CROP_CODE
    )
    return {"name": "code", "arguments": {"code": code}}


def write_jobs(folder: Path, n: int, tool_latency_s: float = 0.0) -> tuple[Path, list[Job]]:
    """`n` standard crop jobs over `IMAGES` distinct 2048 px JPEGs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(IMAGES):
        image = Image.effect_mandelbrot((2048, 2048), (-2.0 + i / 10, -1.5, 1.0, 1.5), 60)
        buffer = io.BytesIO()
        Image.merge("RGB", (image, image.rotate(90), image.rotate(180))).save(
            buffer, "JPEG", quality=90
        )
        path = folder / f"image-{i}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    call = json.dumps(crop_call(tool_latency_s))
    lines = [
        json.dumps({"id": f"crop-{k:06d}", "image": str(paths[k % IMAGES]),
                    "question": f"CALL {call}"})
        for k in range(n)
    ]  # fmt: skip
    jobs_path = folder / "jobs.jsonl"
    jobs_path.write_text("\n".join(lines) + "\n")
    return jobs_path, [Job.from_json(line) for line in lines]


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine_cpu_seconds() -> float:
    """CPU seconds every core of the machine has been busy (``/proc/stat``), which counts
    what `cpu_seconds` cannot: a bubblewrap sandbox's processes are reaped inside its pid
    namespace, so their time never reaches this process's children. Only meaningful on a
    quiet machine."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def measure(run: Callable[[], Measured], model: str, level: int) -> Level:
    before, machine_before = cpu_seconds(), machine_cpu_seconds()
    measured = run()
    cpu, machine = cpu_seconds() - before, machine_cpu_seconds() - machine_before
    row = Level(
        model=model,
        mode=measured.mode,
        max_in_flight=level,
        jobs=measured.jobs,
        answered=measured.answered,
        wall_s=round(measured.wall_s, 3),
        jobs_per_s=round(measured.jobs_per_s, 2),
        cpu_ms_per_job=round(1000 * cpu / max(1, measured.jobs), 1),
        cores_busy=round(cpu / measured.wall_s, 2),
        machine_cpu_ms_per_job=round(1000 * machine / max(1, measured.jobs), 1),
        machine_cores_busy=round(machine / measured.wall_s, 2),
        stage_mean_ms=measured.stage_mean_ms,
    )
    print(f"  {model:8s} {measured.mode:8s} c={level:<4d} {row.jobs_per_s:7.2f} jobs/s "
          f"{row.cpu_ms_per_job:7.1f} CPU ms/job {row.cores_busy:4.2f} cores "
          f"(machine: {row.machine_cpu_ms_per_job:7.1f} ms/job {row.machine_cores_busy:4.2f} "
          f"cores) {json.dumps(row.stage_mean_ms) if row.stage_mean_ms else ''}",
          file=sys.stderr, flush=True)  # fmt: skip
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=96)
    parser.add_argument("--levels", default="16,64,256", help="max_in_flight levels")
    parser.add_argument("--delay-s", type=float, default=0.3, help="the slow model's delay")
    parser.add_argument("--tool-workers", type=int, default=4)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--tool-latency-s",
        type=float,
        default=0.5,
        help="the tool-latency run: each crop first waits this long (0: no such run)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    levels = [int(v) for v in args.levels.split(",")]
    models = {"instant": "scripted:call", "slow": f"scripted:call,delay_s={args.delay_s:g}"}

    rows: list[Level] = []
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        work = Path(tmp)
        corpus, jobs = write_jobs(work / "corpus", args.jobs)
        for model, endpoint in models.items():
            for level in levels:
                settings = Settings(
                    endpoint, level, 4, SCRIPTED_BUDGET.max_pixels, args.tool_workers, 256
                )
                out = work / f"{model}-{level}"
                rows.append(measure(partial(run_bare, jobs, out / "a", settings), model, level))
                rows.append(
                    measure(partial(run_pipeline, corpus, out / "b", settings), model, level)
                )
            if not args.skip_naive:
                settings = Settings(endpoint, 1, 4, SCRIPTED_BUDGET.max_pixels, 1, 256)
                naive_jobs = jobs[: max(8, args.jobs // 8)]  # the slow model makes it long
                naive = partial(run_naive, naive_jobs, work / f"{model}-naive", settings)
                rows.append(measure(naive, model, 1))
        if args.tool_latency_s:
            # The instant model at the highest level, every crop waiting first: how much of
            # the tool's latency the pipeline hides (compare with instant/pipeline there).
            waiting, _ = write_jobs(work / "waiting", args.jobs, args.tool_latency_s)
            level = levels[-1]
            settings = Settings(
                models["instant"], level, 4, SCRIPTED_BUDGET.max_pixels, args.tool_workers, 256
            )
            run = partial(run_pipeline, waiting, work / "waiting-out", settings)
            rows.append(measure(run, TOOL_LATENCY, level))

    def rate(model: str, mode: str, level: int) -> float | None:
        found = [r for r in rows if (r.model, r.mode, r.max_in_flight) == (model, mode, level)]
        return found[0].jobs_per_s if found else None

    ratios: dict[str, Any] = {}
    waited = rate(TOOL_LATENCY, "pipeline", levels[-1])
    plain = rate("instant", "pipeline", levels[-1])
    if waited and plain:
        ratios[f"{TOOL_LATENCY}@{levels[-1]}"] = {"over_no_latency": round(waited / plain, 3)}
    for model in models:
        naive = rate(model, "naive", 1)
        for level in levels:
            bare, pipe = rate(model, "bare", level), rate(model, "pipeline", level)
            key = f"{model}@{level}"
            ratios[key] = {"pipeline_over_bare": round(pipe / bare, 3) if bare and pipe else None}
            if naive and pipe:
                ratios[key]["pipeline_over_naive"] = round(pipe / naive, 1)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT
    ).stdout.strip()
    result = {
        "benchmark": "pipeline_ceiling",
        "commit": commit,
        "jobs": args.jobs,
        "delay_s": args.delay_s,
        "tool_latency_s": args.tool_latency_s,
        "tool_workers": args.tool_workers,
        "levels": [asdict(r) for r in rows],
        "ratios": ratios,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    best = max((r for r in rows if r.mode == "pipeline" and r.model == "instant"),
               key=lambda r: r.jobs_per_s)  # fmt: skip
    print(
        f"pipeline_ceiling: instant model, pipeline {best.jobs_per_s:.2f} jobs/s at "
        f"max_in_flight {best.max_in_flight} ({best.cpu_ms_per_job:.0f} CPU ms/job, "
        f"{best.cores_busy:.2f} cores busy); ratios {json.dumps(ratios)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
