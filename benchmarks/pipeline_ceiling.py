"""Pipeline ceiling: what the pipeline delivers when the model is not the limit.

The same "standard crop jobs" (a 2048 px JPEG each; the model asks for one sandboxed `code`
crop, the crop is stored with its view, then it answers; a trace and an answer row are written)
against the in-process scripted model (`--endpoint scripted:call`), three ways, as
`pipeline_efficiency.py` runs them: (a) the bare asyncio loop over the model client, (b) the
annotate pipeline, (c) one job at a time. Two models: instant, and one that answers each
request after `--delay-s` with every request waiting at once (a GPU server batching in
flight, as the client sees it). For each `max_in_flight` level: jobs/s, CPU ms per job (this
process and its sandboxes: `getrusage` of self and of reaped children), cores busy (CPU
seconds over wall seconds). Ratios compare within one run; the machine is shared and noisy.

    python benchmarks/pipeline_ceiling.py [--jobs 96] [--levels 16,64,256] [--delay-s 0.3]
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
from dataclasses import asdict, dataclass
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
CROP = {"name": "code", "arguments": {"code": "save_image(image.crop((512, 512, 1024, 1024)))"}}
IMAGES = 8  # distinct originals, cycled over the jobs (views are content-addressed)


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


def write_jobs(folder: Path, n: int) -> tuple[Path, list[Job]]:
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
    lines = [
        json.dumps({"id": f"crop-{k:06d}", "image": str(paths[k % IMAGES]),
                    "question": f"CALL {json.dumps(CROP)}"})
        for k in range(n)
    ]  # fmt: skip
    jobs_path = folder / "jobs.jsonl"
    jobs_path.write_text("\n".join(lines) + "\n")
    return jobs_path, [Job.from_json(line) for line in lines]


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(run: Callable[[], Measured], model: str, level: int) -> Level:
    before = cpu_seconds()
    measured = run()
    cpu = cpu_seconds() - before
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
    )
    print(f"  {model:8s} {measured.mode:8s} c={level:<4d} {row.jobs_per_s:7.2f} jobs/s "
          f"{row.cpu_ms_per_job:7.1f} CPU ms/job {row.cores_busy:4.2f} cores",
          file=sys.stderr, flush=True)  # fmt: skip
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=96)
    parser.add_argument("--levels", default="16,64,256", help="max_in_flight levels")
    parser.add_argument("--delay-s", type=float, default=0.3, help="the slow model's delay")
    parser.add_argument("--tool-workers", type=int, default=4)
    parser.add_argument("--skip-naive", action="store_true")
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

    def rate(model: str, mode: str, level: int) -> float | None:
        found = [r for r in rows if (r.model, r.mode, r.max_in_flight) == (model, mode, level)]
        return found[0].jobs_per_s if found else None

    ratios: dict[str, Any] = {}
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
