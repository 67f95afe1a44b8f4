"""Faults: the model server dies mid-run, then the process running the pipeline dies."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from beam_pipelines import progress

from .conftest import start_server
from .runs import FAST, all_answers, annotate_run, run_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RETRY = ("--max_attempts=3", "--retry_initial_s=0.2", "--request_timeout_s=30")


def test_server_killed_mid_run_ends_in_failure_rows_and_a_rerun_completes(
    tmp_path: Path, corpus: Path
) -> None:
    out = tmp_path / "out"
    lines = len(corpus.read_text().splitlines())
    server = start_server(tmp_path / "first")

    def kill_mid_run() -> None:
        # About one turn's worth of requests in: jobs are in flight at every stage.
        deadline = time.monotonic() + 300
        while progress.board().snapshot().requests < lines and time.monotonic() < deadline:
            time.sleep(0.02)
        server.stop(timeout_s=0)  # SIGTERM then SIGKILL at once: the server just dies

    killer = threading.Thread(target=kill_mid_run, daemon=True)
    killer.start()
    started = time.monotonic()
    first = annotate_run(corpus, out, server.grpc_url, *RETRY)
    killer.join()
    assert time.monotonic() - started < 300  # no hang

    answers, failures = run_rows(first)
    assert len(answers) + len(failures) == lines
    dead = [f for f in failures if f["error_class"] == "model_unavailable"]
    assert dead, failures
    assert all(f["stage"] == "generate" and f["attempts"] == 3 for f in dead)
    assert all(f["trace_uri"] for f in dead)  # the partial trace is readable

    server = start_server(tmp_path / "second")
    try:
        second = annotate_run(corpus, out, server.grpc_url, *RETRY)
    finally:
        server.stop()
    assert second.summary.skipped == len(answers)
    retried, still_failed = run_rows(second)
    assert not [f for f in still_failed if f["error_class"] == "model_unavailable"]
    assert len(answers) + len(retried) + len(still_failed) == lines


def test_sigkill_mid_run_then_rerun_answers_each_job_exactly_once(
    tmp_path: Path, corpus: Path, triton
) -> None:
    out = tmp_path / "out"
    lines = len(corpus.read_text().splitlines())
    command = [
        sys.executable,
        "-m",
        "beam_pipelines",
        "annotate",
        f"--input={corpus}",
        f"--output={out}",
        f"--triton_url={triton.grpc_url}",
        "--shard_max_rows=1",  # every finished job is its own shard: a kill keeps them
        *FAST,
    ]
    process = subprocess.Popen(
        command,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if len(list(out.glob("runs/*/answers/part-*.parquet"))) >= 2:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    killed = all_answers(out)
    assert 2 <= len(killed) < lines

    rerun = annotate_run(corpus, out, triton.grpc_url)
    answers = all_answers(out)
    counts = collections.Counter(row["id"] for row in answers)
    assert max(counts.values()) == 1  # nothing answered twice
    _, failures = run_rows(rerun)
    assert set(counts) | {f["id"] for f in failures} == {
        f"tiny-7-{i:05d}" for i in range(lines)
    }  # nothing lost
    assert rerun.summary.skipped == len(killed)
