"""Benchmark loaders and scorers for `evaluate` (V*, HR-Bench 4K/8K, MME-RealWorld, JSONL)."""

from __future__ import annotations

from beam_pipelines.benchmarks.base import Benchmark, Prediction
from beam_pipelines.benchmarks.hrbench import HRBench
from beam_pipelines.benchmarks.jsonl import JsonlBenchmark
from beam_pipelines.benchmarks.judge import ChoiceJudge
from beam_pipelines.benchmarks.mme_realworld import MMERealWorld
from beam_pipelines.benchmarks.vstar import VStar

BENCHMARKS = ("vstar", "hrbench4k", "hrbench8k", "mme-realworld", "jsonl")


def get_benchmark(name: str, judge: ChoiceJudge | None = None) -> Benchmark:
    """A benchmark by its `--benchmark` name; `judge` reads free-form answers where the
    benchmark's own evaluation asks one (HR-Bench)."""
    if name == "vstar":
        return VStar()
    if name in ("hrbench4k", "hrbench8k"):
        return HRBench(name, judge)
    if name == "mme-realworld":
        return MMERealWorld()
    if name == "jsonl":
        return JsonlBenchmark()
    raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")


__all__ = ["BENCHMARKS", "Benchmark", "Prediction", "get_benchmark"]
