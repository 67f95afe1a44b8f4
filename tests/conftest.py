"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# A test that skips because this machine lacks something says so as "needs WHAT: COMMAND", the
# command that provides it; the end of the run sums these up in one line, so that a plain
# `make test` cannot pass quietly without the strong sandbox or the browser tests.
NEEDS = re.compile(r"needs (?P<what>[^:]+): (?P<command>.+)$")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any) -> Iterator[None]:
    """Outermost, so the line comes after pytest's own short summary, just above the counts."""
    yield
    groups: Counter[tuple[str, str]] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        found = NEEDS.search(reason)
        if found:
            groups[found["what"], found["command"]] += 1
    if groups:
        parts = [f"{n} need {what} ({command})" for (what, command), n in groups.most_common()]
        terminalreporter.write_sep(
            "!", f"NOT TESTED HERE: {'; '.join(parts)}", yellow=True, bold=True
        )


def pytest_collection_finish(session: pytest.Session) -> None:
    """One torch CPU thread for the tests' models, all tiny: on a machine whose cores are
    shared, torch's default pool (a thread per core, spinning while it waits) made the model
    tests take three times the CPU and up to five times the wall time of one thread."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def gcs_emulator() -> Iterator[Any]:
    """A storage client of an in-memory gcp-storage-emulator on 127.0.0.1, for one module.

    `STORAGE_EMULATOR_HOST` points google-cloud-storage and Beam's GCS file system at it while
    the module runs. No credentials exist offline: Beam's client is started anonymous instead
    of retrying Application Default Credentials with backoff for about 30 s.
    """
    from apache_beam.internal.gcp import auth
    from gcp_storage_emulator.server import create_server
    from google.cloud import storage

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    auth._Credentials._credentials_init = True
    auth._Credentials._credentials = None
    client = storage.Client.create_anonymous_client()
    client.project = "test"
    try:
        yield client
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


# -- an OpenAI-compatible server process: the project's gateway, on loopback ---------------

SERVING = re.compile(r"at (http://127\.0\.0\.1:\d+/v1)")


def start_gateway(endpoint: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`python -m beam_pipelines.openai_gateway` on a free port; the process and its base URL."""
    command = [sys.executable, "-m", "beam_pipelines.openai_gateway", "--endpoint", endpoint]
    process = subprocess.Popen(
        [*command, "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    found = SERVING.search(process.stdout.readline())
    if not found:
        process.kill()
        raise RuntimeError("the gateway did not start")
    return process, found[1]


@pytest.fixture
def gateway() -> Iterator[Callable[..., str]]:
    """Starts gateways for one test (`gateway("scripted:call")` -> base URL); stops them."""
    started: list[subprocess.Popen[str]] = []

    def start(endpoint: str, *args: str) -> str:
        process, url = start_gateway(endpoint, *args)
        started.append(process)
        return url

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)
