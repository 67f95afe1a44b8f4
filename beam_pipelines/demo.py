"""`python -m beam_pipelines demo`: the annotate pipeline end to end on a synthetic corpus.

Writes about a hundred "zoom to read" jobs (`tiny_agent.task.write_corpus`: large images with
small markers whose characters can only be read in a crop), runs `annotate` on them with the
embedded tiny model on a local Triton server, and prints the summary. The corpus is kept
between demos (it is deterministic); the annotations folder is the demo's own and starts empty
each time, so every demo shows a full run rather than a resume that skips everything.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

from beam_pipelines import annotate
from beam_pipelines.report import print_report_path
from beam_pipelines.summary import print_summary

CORPUS_MARKER = ".demo-corpus"


def ensure_corpus(folder: Path, n: int, seed: int) -> Path:
    """The demo corpus's JSONL, written unless the same one is already there."""
    jobs = folder / "jobs.jsonl"
    marker = folder / CORPUS_MARKER
    wanted = f"{n} {seed}"
    if jobs.exists() and marker.exists() and marker.read_text() == wanted:
        return jobs
    from tiny_agent.task import write_corpus

    print(f"writing {n} synthetic jobs to {folder}", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    path = write_corpus(folder, n, seed)
    marker.write_text(wanted)
    return path


def run_demo(args: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    """Write the corpus, annotate it, print the summary; 0 when the run finished."""
    root = Path(args.output).resolve()
    jobs = ensure_corpus(root / "corpus", args.n, args.seed)
    annotations = root / "annotations"
    shutil.rmtree(annotations, ignore_errors=True)
    argv = [
        f"--input={jobs}",
        f"--output={annotations}",
        f"--max_turns={args.max_turns}",
        f"--max_in_flight={args.max_in_flight}",
        f"--progress={args.progress}",
        *([f"--triton_url={args.triton_url}"] if args.triton_url else []),
        *extra,
    ]
    result = annotate.run(argv)
    print_summary(result.summary)
    print_report_path(result.layout)
    return 0 if "DONE" in result.state.upper() else 1
