"""Benchmark loaders and scorers for `evaluate` (V*, HR-Bench 4K/8K, MME-RealWorld, MMSearch,
FVQA, JSONL)."""

from __future__ import annotations

from beam_pipelines.benchmarks.base import Benchmark, Prediction
from beam_pipelines.benchmarks.fvqa import FVQA
from beam_pipelines.benchmarks.hrbench import HRBench
from beam_pipelines.benchmarks.jsonl import JsonlBenchmark
from beam_pipelines.benchmarks.judge import AnswerJudge, ChoiceJudge
from beam_pipelines.benchmarks.mme_realworld import MMERealWorld
from beam_pipelines.benchmarks.mmsearch import MMSearch
from beam_pipelines.benchmarks.vstar import VStar
from beam_pipelines.model_client.channel import ModelChannel

BENCHMARKS = ("vstar", "hrbench4k", "hrbench8k", "mme-realworld", "mmsearch", "fvqa", "jsonl")
#: Benchmarks whose scorer asks a judge model when `evaluate --judge_endpoint` names one.
JUDGED = ("hrbench4k", "hrbench8k", "mmsearch", "fvqa")


def get_benchmark(name: str, judge: ModelChannel | None = None) -> Benchmark:
    """A benchmark by its `--benchmark` name; `judge` is the channel to a judge model, for
    the benchmarks whose reference evaluation asks one (`JUDGED`)."""
    if name == "vstar":
        return VStar()
    if name in ("hrbench4k", "hrbench8k"):
        return HRBench(name, ChoiceJudge(judge) if judge else None)
    if name == "mme-realworld":
        return MMERealWorld()
    if name == "mmsearch":
        return MMSearch(AnswerJudge(judge) if judge else None)
    if name == "fvqa":
        return FVQA(AnswerJudge(judge) if judge else None)
    if name == "jsonl":
        return JsonlBenchmark()
    raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")


__all__ = ["BENCHMARKS", "JUDGED", "Benchmark", "Prediction", "get_benchmark"]
