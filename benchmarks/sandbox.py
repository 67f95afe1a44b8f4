"""Code-sandbox benchmark: latency of a typical crop-and-save call, warm pool vs cold start.

The call is what the agent does most: crop a region of a 1536x1536 JPEG original (photo-like:
gradients, fine texture, sharp-edged objects; about 0.5 MB) and return it with ``save_image``.
Measured side by side in one process, calls alternating so that all see the same load on a
shared machine:

- **warm**: a pool of pre-started sandboxes (interpreter up, Pillow and numpy imported);
- **cold**: ``pool_size=0``, every call starts its own sandbox;
- **in_process**: the same work (decode, crop, PNG encode) done directly, without a sandbox:
  the floor the sandbox adds to;
- **warm_trivial**: a warm call that only prints, i.e. the sandbox's own per-call overhead.

Before each call the benchmark waits until every sandbox is idle (the warm pool refilled, the
used ones cleaned up): in the pipeline, model generation between tool calls gives the pool that
time. Each call is still a fresh, isolated process; the pool only moves the start-up out of the
call. Writes ``benchmarks/results/sandbox.json`` and prints a one-line summary.

    python benchmarks/sandbox.py                  # auto protection (bubblewrap when usable)
    python benchmarks/sandbox.py --protection fallback --calls 50   # Landlock + seccomp

Both protections put up their kernel walls (seccomp; Landlock in the fallback) and the parent
checks every returned PNG in full, so those costs are in the warm figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from PIL import Image  # noqa: E402

from tools.sandbox import Sandbox  # noqa: E402

CODE = (
    "w, h = image.size\n"
    "crop = image.crop((w // 3, h // 3, w // 3 + 512, h // 3 + 384))\n"
    "print(crop.size)\n"
    "save_image(crop)\n"
)


def photo_like_jpeg(side: int = 1536, seed: int = 0) -> bytes:
    """A JPEG with the size and entropy of a photo: smooth gradients, texture and edges."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    base = np.stack([x * 200 + 30, y * 180 + 40, (1 - x) * 160 + 50], axis=-1)
    texture = rng.normal(0, 6, size=(side, side, 3))
    image = Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8))
    for _ in range(40):  # some sharp-edged objects
        x0, y0 = rng.integers(0, side - 200, size=2)
        colour = tuple(int(c) for c in rng.integers(0, 255, size=3))
        image.paste(colour, (int(x0), int(y0), int(x0) + 120, int(y0) + 80))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def in_process(image: bytes) -> float:
    """The call's own work without a sandbox: decode, crop, PNG-encode (as save_image does)."""
    started = time.perf_counter()
    original = Image.open(io.BytesIO(image))
    w, h = original.size
    crop = original.crop((w // 3, h // 3, w // 3 + 512, h // 3 + 384))
    crop.save(io.BytesIO(), format="PNG", compress_level=1)
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(latencies_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in latencies_s]
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
    }


def timed_call(sandbox: Sandbox, image: bytes, code: str = CODE) -> tuple[float, dict]:
    started = time.perf_counter()
    outcome = sandbox.run(code, image)
    elapsed = time.perf_counter() - started
    expected = (1, "(512, 384)") if code == CODE else (0, "ok")
    if not outcome.ok or (len(outcome.images), outcome.stdout.strip()) != expected:
        raise RuntimeError(f"unexpected outcome: {outcome}")
    return elapsed, outcome.timings


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30, help="measured calls per mode")
    parser.add_argument("--pool-size", type=int, default=2)
    parser.add_argument("--protection", default="auto", choices=("auto", "bubblewrap", "fallback"))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/sandbox.json")
    args = parser.parse_args(argv)

    image = photo_like_jpeg()
    warm_box = Sandbox(protection=args.protection, pool_size=args.pool_size)
    cold_box = Sandbox(protection=args.protection, pool_size=0)
    boxes = (warm_box, cold_box)
    series: dict[str, Callable[[], tuple[float, dict]]] = {
        "warm": lambda: timed_call(warm_box, image),
        "cold": lambda: timed_call(cold_box, image),
        "in_process": lambda: (in_process(image), {}),
        "warm_trivial": lambda: timed_call(warm_box, image, "print('ok')"),
    }
    latencies: dict[str, list[float]] = {name: [] for name in series}
    inside: list[dict] = []
    try:
        # One unmeasured round: probing the machine and first imports are not the point.
        for measure in series.values():
            measure()
        for _ in range(args.calls):
            for name, measure in series.items():
                for box in boxes:
                    if not box.wait_warm(timeout_s=60):
                        raise RuntimeError("the sandbox pool did not settle within 60 s")
                elapsed, timings = measure()
                latencies[name].append(elapsed)
                if name == "warm":
                    inside.append(timings)
        protection, details = warm_box.protection, warm_box.details
    finally:
        for box in boxes:
            box.close()

    stats = {name: summary(values) for name, values in latencies.items()}
    warm_stats, cold_stats = stats["warm"], stats["cold"]
    result = {
        "benchmark": "sandbox",
        "call": "crop 512x384 of a 1536x1536 JPEG and save_image it",
        "protection": protection,
        "protection_details": details,
        "image": {"width": 1536, "height": 1536, "format": "JPEG", "bytes": len(image)},
        "calls_per_mode": args.calls,
        "pool_size": args.pool_size,
        **stats,
        "warm_inside_sandbox_ms": {
            key: round(statistics.median(t[key] for t in inside) * 1000, 2)
            for key in ("code_s", "collect_s")
            if all(key in t for t in inside)
        },
        "cold_over_warm_median": round(cold_stats["median_ms"] / warm_stats["median_ms"], 2),
        "warm_over_in_process_median": round(
            warm_stats["median_ms"] / stats["in_process"]["median_ms"], 2
        ),
        "warm_target_ms": 50,
        "latencies_ms": {k: [round(v * 1000, 2) for v in vs] for k, vs in latencies.items()},
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "parent_uid": os.geteuid(),  # root parents lease a uid per sandbox
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"sandbox ({protection}): warm median {warm_stats['median_ms']:.1f} ms, "
        f"p95 {warm_stats['p95_ms']:.1f} ms | cold median {cold_stats['median_ms']:.1f} ms, "
        f"p95 {cold_stats['p95_ms']:.1f} ms | cold/warm {result['cold_over_warm_median']:.1f}x | "
        f"same work in-process {stats['in_process']['median_ms']:.1f} ms, empty warm call "
        f"{stats['warm_trivial']['median_ms']:.1f} ms (n={args.calls} each) -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
