"""Accuracy of the embedded tiny model through the real stack, with and without tools.

Writes a held-out synthetic corpus (a seed never used in training) with zoom, search and
global questions, starts the local Triton server with the tiny model once, and runs the
annotate pipeline on the corpus three times: with the sandboxed `code` tool and the offline
`text_search` (its default corpus, whose codebook no training example read; one result per
query, as the tiny model's deployments set it), with `code` alone (search questions cannot be
answered), and with no tool at all (the model must answer from the global view). Reports
accuracy and tool use by question kind for each, as JSON plus a one-line summary.

    python benchmarks/tiny_accuracy.py [--n 240] [--seed 20261125]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

from beam_pipelines import annotate
from beam_pipelines.outputs.readers import read_answers
from beam_pipelines.serve import TritonServer
from beam_pipelines.synthetic import write_corpus

RESULTS = Path(__file__).parent / "results" / "tiny_accuracy.json"
MODES = {"tools": "code,text_search", "code_only": "code", "no_tools": ""}


def accuracy(jobs: dict[str, dict], answers: list[dict]) -> dict[str, dict[str, float]]:
    """Accuracy and tool use by question kind; a job without an answer row counts as wrong."""
    rows = {row["id"]: row for row in answers}
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for job_id, job in jobs.items():
        row = rows.get(job_id) or {}
        for kind in (job["meta"]["kind"], "all"):
            tally[kind][0] += bool(row.get("correct"))
            tally[kind][1] += 1
            tally[kind][2] += (row.get("tool_calls") or 0) > 0
    return {
        kind: {"accuracy": round(c / n, 3), "tool_use": round(t / n, 3), "jobs": n}
        for kind, (c, n, t) in sorted(tally.items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=240)
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--max_in_flight", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tiny-accuracy-"))
    corpus = write_corpus(
        work / "corpus", args.n, args.seed, zoom_fraction=0.5, search_fraction=0.25
    )
    jobs = {job["id"]: job for job in map(json.loads, corpus.read_text().splitlines())}
    results: dict = {"n": args.n, "seed": args.seed}
    with TritonServer(log_file=work / "tritonserver.log") as server:
        for mode, tools in MODES.items():
            options = ["--tool_option=text_search.max_results=1"] if "text_search" in tools else []
            run = annotate.run(
                [
                    f"--input={corpus}",
                    f"--output={work / mode}",
                    f"--triton_url={server.grpc_url}",
                    f"--tools={tools}",
                    *options,
                    f"--max_in_flight={args.max_in_flight}",
                    "--max_turns=4",
                    "--max_tokens=256",
                    "--progress=off",
                ]
            )
            answers = read_answers(run.layout.answers_glob())
            results[mode] = accuracy(jobs, answers)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    with_tools, without = results["tools"], results["no_tools"]
    print(
        f"tiny model, {args.n} held-out jobs: with tools {with_tools['all']['accuracy']:.1%} "
        f"(zoom {with_tools['zoom']['accuracy']:.1%}, search "
        f"{with_tools['search']['accuracy']:.1%}); tools disabled, zoom "
        f"{without['zoom']['accuracy']:.1%}, search {without['search']['accuracy']:.1%}; "
        f"results in {RESULTS}"
    )


if __name__ == "__main__":
    main()
