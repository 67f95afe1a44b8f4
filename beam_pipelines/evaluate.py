"""`python -m beam_pipelines evaluate`: a benchmark in its native format, through the agent.

```
<benchmark files> --load--> <output>/benchmark/jobs.jsonl (+ images/)
                  --annotate (k samples)--> <output>/annotations/runs/<run_id>/...
                  --score--> <output>/results.json, <output>/results.md
```

The loader (`benchmarks/`) writes the benchmark's questions as jobs, the annotate pipeline
answers them (with `--samples k`, k samples per question `<id>#<k>` at their own seeds, and
`--temperature` 1.0 unless given), and the benchmark's scorer scores each sample round on its
own: the figures reported are the mean over the k rounds (Avg@k; with k = 1, the plain
score). Every question counts: one without an answer row (a failure, a turn budget spent)
scores 0; rows the loader could not make a job of (a question without an image) are counted
by reason in `skipped` and reported beside the scores. Rerunning the same command resumes:
answered questions are not asked again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from beam_pipelines import annotate
from beam_pipelines.benchmarks import BENCHMARKS, JUDGED, Prediction, get_benchmark
from beam_pipelines.benchmarks.judge import judge_channel
from beam_pipelines.io.files import join, normalize, write_bytes
from beam_pipelines.outputs.readers import read_answers
from beam_pipelines.summary import print_summary
from beam_pipelines.transforms.samples import Samples, sample_id


@dataclass(frozen=True)
class EvaluateResult:
    """The scores (Avg@k and per sample round) and where everything is."""

    benchmark: str
    samples: int
    questions: int
    answered: int
    skipped: dict[str, int]
    scores: dict[str, float]
    rounds: list[dict[str, float]]
    outputs: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines evaluate",
        description="Score the agent on a benchmark in its native format. Other arguments "
        "go to annotate (--triton_url, --max_turns, --temperature, Beam options, ...).",
        allow_abbrev=False,  # never take an annotate option for an abbreviation of ours
    )
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    parser.add_argument(
        "--input",
        required=True,
        help="vstar: the benchmark folder (category folders of image + JSON pairs); "
        "hrbench4k/8k, mme-realworld: VLMEvalKit's TSV; mmsearch: the end2end Parquet file "
        "of CaraJ/MMSearch; fvqa: fvqa_test.parquet of lmms-lab/FVQA; jsonl: a job JSONL "
        "with answers",
    )
    parser.add_argument("--output", required=True, help="evaluation folder (local or gs://)")
    parser.add_argument("--samples", type=int, default=1, help="k of Avg@k (%(default)s)")
    parser.add_argument(
        "--judge_endpoint",
        "--judge-endpoint",
        default=None,
        help="hrbench4k/8k, mmsearch, fvqa: a served model (KIND:URL, as annotate's "
        "--endpoint) that judges answers as the reference evaluation's LLM judge does "
        "(HR-Bench: the option a free-form answer chose; MMSearch, FVQA: R1V4's yes/no "
        "against the reference answer); exact-match figures are reported beside",
    )
    parser.add_argument("--judge_model", "--judge-model", default="agent_vlm")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of V*'s option shuffle and of the samples' seeds (%(default)s)",
    )
    return parser


def predictions(
    jobs: Sequence[dict[str, Any]], rows: dict[str, dict[str, Any]], k: int, samples: int
) -> list[Prediction]:
    """Round `k`'s prediction for every job (`<id>#<k>` when there are several samples)."""
    out = []
    for job in jobs:
        row = rows.get(sample_id(job["id"], k) if samples > 1 else job["id"])
        answer = row["answer"] if row is not None and row["status"] == "answered" else None
        out.append(Prediction(job, answer))
    return out


def skipped_note(skipped: Mapping[str, int]) -> str:
    """` Not asked: 3 rows without an image.` (empty when every row was asked)."""
    if not skipped:
        return ""
    counts = ", ".join(f"{n} {'row' if n == 1 else 'rows'} {why}" for why, n in skipped.items())
    return f" Not asked: {counts}."


def average(rounds: Sequence[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.fmean(r[name] for r in rounds) for name in rounds[0]}


def results_markdown(result: EvaluateResult) -> str:
    """The results table: one line per metric, Avg@k, then each sample round."""
    k = result.samples
    head = ["metric", f"Avg@{k}" if k > 1 else "score"]
    if k > 1:
        head += [f"sample {i}" for i in range(k)]
    lines = [
        f"# {result.benchmark}",
        "",
        f"{result.questions} questions, {k} sample(s) each; {result.answered} answers."
        + skipped_note(result.skipped),
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |",
    ]
    for name, value in result.scores.items():
        cells = [name, f"{100 * value:.1f}"]
        if k > 1:
            cells += [f"{100 * r[name]:.1f}" for r in result.rounds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(argv: Sequence[str]) -> tuple[EvaluateResult, annotate.AnnotateResult]:
    args, extra = build_parser().parse_known_args(list(argv))
    if args.samples < 1:
        raise ValueError(f"--samples must be at least 1, got {args.samples}")
    if args.judge_endpoint and args.benchmark not in JUDGED:
        raise ValueError(f"--judge_endpoint: {args.benchmark} is scored without a judge")
    judge = judge_channel(args.judge_endpoint, args.judge_model) if args.judge_endpoint else None
    benchmark = get_benchmark(args.benchmark, judge)
    root = normalize(args.output).rstrip("/")
    jobs = benchmark.load(args.input, join(root, "benchmark", "images"), args.seed)
    if not jobs:
        raise ValueError(
            f"{args.input}: the benchmark has no questions.{skipped_note(benchmark.skipped)}"
        )
    jobs_path = join(root, "benchmark", "jobs.jsonl")
    write_bytes(jobs_path, "".join(json.dumps(j, ensure_ascii=False) + "\n" for j in jobs).encode())

    annotations = join(root, "annotations")
    samples = Samples(args.samples, args.seed) if args.samples > 1 else None
    result = annotate.run(
        [f"--input={jobs_path}", f"--output={annotations}", *extra], samples=samples
    )
    rows = {r["id"]: r for r in read_answers(result.layout.all_answers_glob())}
    try:
        rounds = [
            benchmark.score(predictions(jobs, rows, k, args.samples)) for k in range(args.samples)
        ]
    finally:
        if judge is not None:
            judge.close()
    answered = sum(
        1 for k in range(args.samples) for p in predictions(jobs, rows, k, args.samples) if p.answer
    )
    evaluation = EvaluateResult(
        benchmark=args.benchmark,
        samples=args.samples,
        questions=len(jobs),
        answered=answered,
        skipped=dict(benchmark.skipped),
        scores=average(rounds),
        rounds=rounds,
        outputs={
            "jobs": jobs_path,
            "annotations": annotations,
            "results_json": join(root, "results.json"),
            "results_md": join(root, "results.md"),
        },
    )
    payload = json.dumps(evaluation.to_dict(), indent=2) + "\n"
    write_bytes(evaluation.outputs["results_json"], payload.encode("utf-8"))
    write_bytes(evaluation.outputs["results_md"], results_markdown(evaluation).encode("utf-8"))
    return evaluation, result


def main(argv: Sequence[str]) -> int:
    """Load, answer, score, print the table; 0 when the run finished."""
    if any(a in ("-h", "--help") for a in argv):
        build_parser().print_help()
        return 0
    try:
        evaluation, result = run(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_summary(result.summary)
    print(results_markdown(evaluation))
    for name, path in evaluation.outputs.items():
        print(f"{name + ':':13} {path}")
    return 0 if "DONE" in result.state.upper() else 1
