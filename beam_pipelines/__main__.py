"""Command line: `python -m beam_pipelines <command> ...`.

Each subcommand is one `add_<name>_command(subparsers)` function that declares its arguments
and sets `handler`, a function taking the parsed arguments and returning an exit code. To add a
command, write both and list the `add_` function in `COMMANDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SubParsers = Any  # argparse's _SubParsersAction is private


def add_serve_command(subparsers: SubParsers) -> None:
    """`serve`: run the local Triton server with `agent_vlm` until interrupted."""
    from beam_pipelines.serve import DEFAULT_MODEL_REPOSITORY

    parser = subparsers.add_parser(
        "serve",
        help="serve agent_vlm on a local Triton server (127.0.0.1) until Ctrl-C",
        description="Start the tritonserver from the nvidia-pytriton wheel with agent_vlm.",
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=DEFAULT_MODEL_REPOSITORY,
        help="Triton model repository (default: %(default)s)",
    )
    parser.add_argument(
        "--model-config-name",
        default=None,
        help="deployment config under agent_vlm/configs/<name>.pbtxt (default: config.pbtxt)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config parameter, e.g. --param checkpoint=/models/qwen3-vl (repeatable)",
    )
    parser.add_argument(
        "--instance-kind",
        choices=("KIND_CPU", "KIND_GPU"),
        default=None,
        help="run the model's instances on this kind instead of the config's",
    )
    parser.add_argument("--log-file", type=Path, default=None, help="server log file")
    parser.add_argument(
        "--startup-timeout", type=float, default=300.0, help="seconds to wait for readiness"
    )
    parser.add_argument("--metrics", action="store_true", help="serve Prometheus metrics")
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Start the server, print its addresses, and block until SIGINT/SIGTERM."""
    from beam_pipelines.serve import TritonServer, TritonStartupError, stage_model_repository

    try:
        parameters = dict(_key_value(item) for item in args.param)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with contextlib.ExitStack() as cleanup:
        repository, config_name = args.model_repository, args.model_config_name
        if parameters or args.instance_kind or config_name:  # staging states the image budget
            staging = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="agent-vlm-"))
            repository = stage_model_repository(
                staging,
                source=args.model_repository,
                model_config_name=config_name,
                parameters=parameters,
                instance_kind=args.instance_kind,
            )
            config_name = None
        server = TritonServer(
            repository,
            model_config_name=config_name,
            log_file=args.log_file,
            startup_timeout_s=args.startup_timeout,
            metrics=args.metrics,
        )
        try:
            server.start()
        except (TritonStartupError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        cleanup.callback(server.stop)
        print(f"agent_vlm ready: grpc {server.grpc_url}  http {server.http_url}", flush=True)
        if args.metrics:
            print(f"metrics: {server.metrics_url}", flush=True)
        print(f"log: {server.log_file}  (Ctrl-C to stop)", flush=True)
        while not stop.wait(1.0):
            if not server.running:
                print(f"error: tritonserver exited\n{server.log_tail()}", file=sys.stderr)
                return 1
    return 0


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--param takes KEY=VALUE, got {item!r}")
    return key, value


def add_annotate_command(subparsers: SubParsers) -> None:
    """`annotate`: the annotate pipeline; every argument goes to its pipeline options."""
    parser = subparsers.add_parser(
        "annotate",
        help="answer a corpus of image-question jobs with the agent (a Beam pipeline)",
        add_help=False,  # --help is answered by the pipeline options below
    )
    parser.set_defaults(handler=run_annotate, passes_through=True)


def run_annotate(args: argparse.Namespace) -> int:
    from beam_pipelines import annotate

    return annotate.main(args.extra)


def add_demo_command(subparsers: SubParsers) -> None:
    """`demo`: annotate ~100 synthetic jobs with the embedded tiny model; print the summary."""
    parser = subparsers.add_parser(
        "demo",
        help="run annotate on a synthetic corpus with the embedded model and print a summary",
        description="Write a synthetic corpus, annotate it on a local Triton server with the "
        "embedded tiny model, and print counts, accuracy, tokens, jobs/s and output paths. "
        "Unrecognised arguments go to annotate.",
    )
    parser.add_argument("--output", default="demo_output", help="demo folder (%(default)s)")
    parser.add_argument("--n", type=int, default=100, help="number of jobs (%(default)s)")
    parser.add_argument("--seed", type=int, default=20251125, help="corpus seed")
    parser.add_argument("--max-turns", "--max_turns", type=int, default=8)
    parser.add_argument("--max-in-flight", "--max_in_flight", type=int, default=32)
    parser.add_argument("--triton-url", "--triton_url", default=None, help="use this server")
    parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
    parser.set_defaults(handler=run_demo, passes_through=True)


def run_demo(args: argparse.Namespace) -> int:
    from beam_pipelines import demo

    return demo.run_demo(args, args.extra)


def add_report_command(subparsers: SubParsers) -> None:
    """`report`: write a run's static HTML report (summary, trajectory list and pages)."""
    from beam_pipelines.report import DEFAULT_MAX_TRAJECTORIES

    parser = subparsers.add_parser(
        "report",
        help="write a static HTML report of an annotate run (opens without a server)",
        description="Read a run's answers, failures and traces under an output root and write "
        "runs/<run_id>/report/index.html with one page per trajectory.",
    )
    parser.add_argument("--output", required=True, help="the run's output root (local or gs://)")
    parser.add_argument("--run", default=None, help="run id (default: the newest run)")
    parser.add_argument(
        "--max-trajectories",
        "--max_trajectories",
        type=int,
        default=DEFAULT_MAX_TRAJECTORIES,
        help="trajectories that get a page; a larger run is sampled by id hash (%(default)s)",
    )
    parser.add_argument(
        "--report-dir", default=None, help="write here instead of runs/<run_id>/report"
    )
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from beam_pipelines.report import build_report

    if args.max_trajectories < 0:
        print("error: --max-trajectories must be at least 0", file=sys.stderr)
        return 2
    try:
        result = build_report(
            args.output,
            args.run,
            max_trajectories=args.max_trajectories,
            report_dir=args.report_dir,
        )
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"report of run {result.run_id}: {result.pages} trajectory pages "
        f"(of {result.trajectories}), {result.images} images",
        flush=True,
    )
    print(f"report: {result.index}", flush=True)
    return 0


def add_status_command(subparsers: SubParsers) -> None:
    """`status`: a run's state and counts, counted from its outputs (after a detached run)."""
    parser = subparsers.add_parser(
        "status",
        help="count a run's outputs and write its counts.json (what a detached run leaves)",
        description="Read a run's manifest, count its answer and failure rows (answers once "
        "per id) and write the counts to the file the manifest names, runs/<run_id>/counts.json. "
        "A Dataflow or flex template run is submitted without waiting; run this once it ends "
        "(while it runs, the counts are those of the shards written so far).",
    )
    parser.add_argument("run", nargs="?", default=None, help="run id (default: the newest run)")
    parser.add_argument("--output", required=True, help="the run's output root (local or gs://)")
    parser.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    import json

    from beam_pipelines.outputs.counts import count_run, write_counts
    from beam_pipelines.outputs.readers import read_manifest, resolve_run

    try:
        layout = resolve_run(args.output, args.run)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    manifest = read_manifest(layout)
    counts = count_run(layout)
    path = write_counts(layout, counts)
    job = f" (job {manifest['job_id']})" if manifest.get("job_id") else ""
    print(f"run {layout.run_id}: {manifest.get('status', 'unknown')}{job}")
    print(json.dumps(counts.to_dict(), indent=2))
    print(f"counts: {path}", flush=True)
    return 0


def add_regenerate_command(subparsers: SubParsers) -> None:
    """`regenerate`: N samples per job, filtered, exported for SFT (a Beam pipeline)."""
    parser = subparsers.add_parser(
        "regenerate",
        help="sample N trajectories per job, filter them and export the kept ones for SFT",
        add_help=False,  # --help is answered by the pipeline options
    )
    parser.set_defaults(handler=run_regenerate, passes_through=True)


def run_regenerate(args: argparse.Namespace) -> int:
    from beam_pipelines import regenerate

    return regenerate.main(args.extra)


def add_evaluate_command(subparsers: SubParsers) -> None:
    """`evaluate`: score the agent on V*, HR-Bench 4K/8K, MME-RealWorld, MMSearch, FVQA or a
    job JSONL."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score the agent on a benchmark in its native format (Avg@k with --samples)",
        add_help=False,  # --help is answered by evaluate's own parser
    )
    parser.set_defaults(handler=run_evaluate, passes_through=True)


def run_evaluate(args: argparse.Namespace) -> int:
    from beam_pipelines import evaluate

    return evaluate.main(args.extra)


def add_demo_variants(subparsers: SubParsers) -> None:
    """`regenerate-demo` and `eval-demo`: the two other pipelines on synthetic data."""
    for name, handler, n, what in (
        ("regenerate-demo", run_regenerate_demo, 12, "regenerate 4 samples per synthetic job"),
        ("eval-demo", run_eval_demo, 24, "evaluate on a synthetic set in V*'s native format"),
    ):
        parser = subparsers.add_parser(
            name,
            help=f"{what} with the embedded model",
            description=f"{what} with the embedded tiny model on a local Triton server. "
            "Unrecognised arguments go to the pipeline.",
        )
        parser.add_argument("--output", default="demo_output", help="demo folder (%(default)s)")
        parser.add_argument("--n", type=int, default=n, help="number of jobs (%(default)s)")
        parser.add_argument("--seed", type=int, default=20251125, help="corpus seed")
        parser.add_argument("--max-turns", "--max_turns", type=int, default=8)
        parser.add_argument("--max-in-flight", "--max_in_flight", type=int, default=32)
        parser.add_argument("--triton-url", "--triton_url", default=None, help="use this server")
        parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
        parser.set_defaults(handler=handler, passes_through=True)


def run_regenerate_demo(args: argparse.Namespace) -> int:
    from beam_pipelines import demo

    return demo.run_regenerate_demo(args, args.extra)


def run_eval_demo(args: argparse.Namespace) -> int:
    from beam_pipelines import demo

    return demo.run_eval_demo(args, args.extra)


COMMANDS: tuple[Callable[[SubParsers], None], ...] = (
    add_serve_command,
    add_annotate_command,
    add_demo_command,
    add_report_command,
    add_status_command,
    add_regenerate_command,
    add_evaluate_command,
    add_demo_variants,
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines",
        description="Batch agentic vision-language pipelines on Beam and Triton.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m beam_pipelines` and the `beam-agentic-vlm` script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # annotate, regenerate, evaluate and the demos hand the arguments they do not declare on
    # to the pipeline options.
    if getattr(args, "passes_through", False):
        args.extra = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
