"""Incremental runs: does a nightly run cost its new inputs, or everything ever annotated?
(docs/deployment.md, "The incremental model")

`--runs` runs of `--jobs` new jobs each (one new JSONL file a run, the "daily shard") over one
output root, each `annotate --incremental` with the in-process scripted model
(`--endpoint scripted:call`: no server, so what is measured is the pipeline's own reading and
bookkeeping). Per run: wall time, the process's CPU time, bytes read (the kernel's `rchar` for
this process: every file the run reads, the inputs, their images, the index and its own
outputs read back for the summary) and the part of them that is the index (the index file,
the done index, read at launch and by the pipeline, and the previous run's answer ids that
the launch merges in). The 1st and the last run are compared; so are the medians of the first
and last five (the machine is shared: single runs are noisy).

`--baseline-runs` then repeats the first runs without `--incremental` on a second root (every
run reads the whole input glob and every answer shard): the cost that grows with history.

    python benchmarks/incremental.py [--runs 100] [--jobs 1000] [--baseline-runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from beam_pipelines import annotate  # noqa: E402
from beam_pipelines.outputs.layout import OutputLayout  # noqa: E402

RESULT = REPO_ROOT / "benchmarks" / "results" / "incremental.json"
IMAGES = 64  # distinct job images, reused: 64 x 48 pixels of noise, ~9 KB each as PNG


def rchar() -> int:
    """Bytes this process has read through read() and friends, from any file."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(20261207)
    paths = []
    for i in range(IMAGES):
        path = folder / f"image-{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def day_file(work: Path, day: int) -> Path:
    return work / "in" / f"day-{day:03d}.jsonl"


def write_day(work: Path, day: int, jobs: int, images: list[Path]) -> Path:
    path = day_file(work, day)
    lines = (
        json.dumps(
            {
                "id": f"d{day:03d}-{i:05d}",
                "image": str(images[(day * jobs + i) % len(images)]),
                "question": f"What is shown in picture {i} of day {day}?",
            }
        )
        for i in range(jobs)
    )
    path.write_text("".join(line + "\n" for line in lines))
    return path


def index_bytes(root: Path, run_id: str, previous: str | None) -> int:
    """The bytes of index this run read: index.json and the done index (at launch, where it
    is written after the merge and, if there was one before, read first; and in the
    pipeline), and the previous run's answer shards' ids (whole shards counted)."""
    layout = OutputLayout(str(root), run_id)
    state = Path(layout.index_state)
    if not state.exists():
        return 0
    done = json.loads(state.read_text())["done"]
    total = state.stat().st_size + 2 * Path(done).stat().st_size
    if previous is not None:
        answers = Path(OutputLayout(str(root), previous).answers_dir)
        total += sum(p.stat().st_size for p in answers.glob("part-*.parquet"))
    return total


def one_run(work: Path, root: Path, day: int, jobs: int, incremental: bool) -> dict[str, Any]:
    run_id = f"run-{day:03d}"
    argv = [
        f"--input={work / 'in'}/*.jsonl",
        f"--output={root}",
        "--endpoint=scripted:call",
        "--max_pixels=3072",
        "--tools=",
        f"--run_id={run_id}",
        "--progress=off",
    ]
    if incremental:
        argv.append("--incremental")
    images = {json.loads(line)["image"] for line in day_file(work, day).read_text().splitlines()}
    read0, cpu0, t0 = rchar(), cpu_s(), time.monotonic()
    result = annotate.run(argv)
    wall, cpu, read = time.monotonic() - t0, cpu_s() - cpu0, rchar() - read0
    assert "DONE" in result.state.upper(), result.state
    record: dict[str, Any] = {
        "run": day,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "bytes_read": read,
        "answered": result.summary.counts.answered,
        "skipped_done": int(result.metrics.get("jobs_skipped_done", 0)),
        "input_bytes": sum(p.stat().st_size for p in (work / "in").glob("*.jsonl")),
    }
    # The jobs' images are read once per job: what the run reads besides them is the part
    # where history could show.
    sizes = {path: Path(path).stat().st_size for path in images}
    lines = day_file(work, day).read_text().splitlines()
    record["image_bytes"] = sum(sizes[json.loads(line)["image"]] for line in lines)
    record["bytes_read_besides_images"] = read - record["image_bytes"]
    if incremental:
        manifest = json.loads(Path(result.layout.manifest).read_text())
        record["new_files"] = manifest["incremental"]["new_files"]
        record["index_ids"] = manifest["incremental"]["index_ids"]
        previous = f"run-{day - 1:03d}" if day > 1 else None
        record["index_bytes"] = index_bytes(root, run_id, previous)
    return record


def series(
    work: Path, runs: int, jobs: int, images: list[Path], incremental: bool
) -> list[dict[str, Any]]:
    (work / "in").mkdir(parents=True)
    root = work / "out"
    records = []
    for day in range(1, runs + 1):
        write_day(work, day, jobs, images)
        record = one_run(work, root, day, jobs, incremental)
        assert record["answered"] == jobs, record
        records.append(record)
        print(json.dumps(record), flush=True)
    return records


def compare(records: list[dict[str, Any]], key: str) -> dict[str, Any]:
    first, last = records[0][key], records[-1][key]
    window = min(5, len(records) // 2) or 1
    head = statistics.median(r[key] for r in records[:window])
    tail = statistics.median(r[key] for r in records[-window:])
    return {
        "first": first,
        "last": last,
        "last_over_first": round(last / first, 3),
        f"median_first_{window}": head,
        f"median_last_{window}": tail,
        "median_last_over_first": round(tail / head, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--baseline-runs", type=int, default=10)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="incremental-") as tmp:
        work = Path(tmp)
        images = write_images(work / "images")
        # Warm-up: imports and Beam's first-run costs, in a root of its own, not counted; two
        # runs, so that the second imports what merging the index needs.
        warm = work / "warm"
        (warm / "in").mkdir(parents=True)
        for day in (1, 2):
            write_day(warm, day, 50, images)
            one_run(warm, warm / "out", day, 50, incremental=True)

        incremental = series(work / "incremental", args.runs, args.jobs, images, True)
        baseline = (
            series(work / "baseline", args.baseline_runs, args.jobs, images, False)
            if args.baseline_runs
            else []
        )
    last = incremental[-1]
    result: dict[str, Any] = {
        "benchmark": "incremental",
        "runs": args.runs,
        "jobs_per_run": args.jobs,
        "model": "scripted:call (in-process, no server)",
        "runner": "FnApiRunner (in-process)",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "note": "2 cores shared with other work: wall times are noisy, CPU time less so",
        },
        "incremental": {
            "wall_s": compare(incremental, "wall_s"),
            "cpu_s": compare(incremental, "cpu_s"),
            "bytes_read": compare(incremental, "bytes_read"),
            "bytes_read_besides_images": compare(incremental, "bytes_read_besides_images"),
            "index_bytes_last": last["index_bytes"],
            "index_ids_last": last["index_ids"],
            "index_share_of_bytes_read_last": round(last["index_bytes"] / last["bytes_read"], 4),
            "input_bytes_last": last["input_bytes"],
        },
        "per_run": incremental,
    }
    if baseline:
        result["baseline_without_incremental"] = {
            "runs": len(baseline),
            "wall_s": compare(baseline, "wall_s"),
            "bytes_read": compare(baseline, "bytes_read"),
            "bytes_read_besides_images": compare(baseline, "bytes_read_besides_images"),
            "per_run": baseline,
        }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    summary = result["incremental"]
    print(
        f"run {args.runs} / run 1: wall {summary['wall_s']['last_over_first']}x "
        f"(medians {summary['wall_s']['median_last_over_first']}x), bytes read "
        f"{summary['bytes_read']['last_over_first']}x; written to {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
