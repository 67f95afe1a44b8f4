"""`python -m beam_pipelines demo` (and `regenerate-demo`, `eval-demo`): the pipelines end to
end on a synthetic corpus.

Writes about a hundred "zoom to read" jobs (`synthetic.write_corpus`: large images with
small markers whose characters can only be read in a crop; some ask for the codeword the
character stands for, which the offline `text_search`'s codebook names), runs `annotate` on
them with the embedded tiny model and its two tools (`code`, `text_search` with one result per
query, as its context holds) on a local Triton server, and prints the summary. The corpus is kept
between demos (it is deterministic); the annotations folder is the demo's own and starts empty
each time, so every demo shows a full run rather than a resume that skips everything.

`regenerate-demo` samples 4 trajectories per job of a smaller corpus, filters them and prints
the kept ratio and the rejections per filter; `eval-demo` writes the corpus in V*'s native
layout (`write_vstar_layout`) and scores the model through the V* loader and scorer.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from beam_pipelines import annotate
from beam_pipelines.report import print_report_path
from beam_pipelines.summary import print_summary

CORPUS_MARKER = ".demo-corpus"
#: The annotate demo's search questions: 15 %, beside write_corpus's 70 % zoom questions.
SEARCH_FRACTION = 0.15
#: The embedded model's tools in the annotate demo; its context holds one search result.
DEMO_TOOLS = ("--tools=code,text_search", "--tool_option=text_search.max_results=1")


def ensure_corpus(folder: Path, n: int, seed: int, search_fraction: float = 0.0) -> Path:
    """The demo corpus's JSONL, written unless the same one is already there."""
    jobs = folder / "jobs.jsonl"
    marker = folder / CORPUS_MARKER
    wanted = f"{n} {seed} {search_fraction}"
    if jobs.exists() and marker.exists() and marker.read_text() == wanted:
        return jobs
    from beam_pipelines.synthetic import write_corpus

    print(f"writing {n} synthetic jobs to {folder}", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    path = write_corpus(folder, n, seed, search_fraction=search_fraction)
    marker.write_text(wanted)
    return path


def _pipeline_argv(args: argparse.Namespace, extra: Sequence[str]) -> list[str]:
    return [
        f"--max_turns={args.max_turns}",
        f"--max_in_flight={args.max_in_flight}",
        f"--progress={args.progress}",
        *([f"--triton_url={args.triton_url}"] if args.triton_url else []),
        *extra,
    ]


def run_demo(args: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    """Write the corpus, annotate it, print the summary; 0 when the run finished."""
    root = Path(args.output).resolve()
    jobs = ensure_corpus(root / "corpus", args.n, args.seed, SEARCH_FRACTION)
    annotations = root / "annotations"
    shutil.rmtree(annotations, ignore_errors=True)
    argv = [
        f"--input={jobs}",
        f"--output={annotations}",
        *DEMO_TOOLS,
        *_pipeline_argv(args, extra),
    ]
    result = annotate.run(argv)
    print_summary(result.summary)
    print_report_path(result.layout)
    return 0 if "DONE" in result.state.upper() else 1


def run_regenerate_demo(args: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    """4 samples per synthetic job, filtered (the marker judge), counts printed."""
    from beam_pipelines import regenerate

    root = Path(args.output).resolve()
    jobs = ensure_corpus(root / "regenerate-corpus", args.n, args.seed)
    out = root / "regenerate"
    shutil.rmtree(out, ignore_errors=True)
    argv = [f"--input={jobs}", f"--output={out}", "--samples=4", *_pipeline_argv(args, extra)]
    return regenerate.main(argv)


def write_vstar_layout(jobs: Path, folder: Path) -> Path:
    """The synthetic jobs as a V* benchmark folder: `direct_attributes/<id>.jpg` + `.json`
    with `question` and `options`, the correct option first (V*'s convention)."""
    target = folder / "direct_attributes"
    target.mkdir(parents=True, exist_ok=True)
    for line in jobs.read_text().splitlines():
        job = json.loads(line)
        options = list(job["options"])
        correct = options.pop("ABCD".index(job["answer"]))
        record = {
            "question": job["question"],
            "options": [correct, *options],
            "target_object": [job["meta"]["kind"]],
        }
        (target / f"{job['id']}.json").write_text(json.dumps(record) + "\n")
        shutil.copyfile(job["image"], target / f"{job['id']}.jpg")
    return folder


def run_eval_demo(args: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    """The model scored through the V* loader on the synthetic set in V*'s layout."""
    from beam_pipelines import evaluate

    root = Path(args.output).resolve()
    jobs = ensure_corpus(root / "eval-corpus", args.n, args.seed)
    bench = root / "eval-vstar"
    shutil.rmtree(bench, ignore_errors=True)
    write_vstar_layout(jobs, bench)
    out = root / "eval"
    shutil.rmtree(out, ignore_errors=True)
    argv = [
        "--benchmark=vstar",
        f"--input={bench}",
        f"--output={out}",
        *_pipeline_argv(args, extra),
    ]
    return evaluate.main(argv)
