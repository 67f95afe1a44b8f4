"""A launched server never outlives its launcher: SIGKILL the process that started a
`TritonServer` and the server, its backend stubs and the watchdog are gone within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beam_pipelines.serve import WATCHDOG, TritonInstallation, TritonServer

from .support import REPO_ROOT

GONE_WITHIN_S = 15.0


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, parent pid, process group, start time) of a process; None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _name(pid: int) -> str:
    """`watchdog` for the launcher's watchdog, else the program's name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        return "watchdog" if WATCHDOG in argv else Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def _live() -> dict[int, tuple[str, int, int, int]]:
    return {
        int(entry.name): stat
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[0] != "Z"
    }


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of `root`: pid -> start time (which tells a reused pid apart)."""
    live = _live()
    children: dict[int, list[int]] = {}
    for pid, stat in live.items():
        children.setdefault(stat[1], []).append(pid)
    found: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = live[pid][3]
        todo += children.get(pid, [])
    return found


def group(pgid: int) -> dict[int, int]:
    """Every live process of a process group: pid -> start time."""
    return {pid: stat[3] for pid, stat in _live().items() if stat[2] == pgid}


def survivors(processes: dict[int, int]) -> list[str]:
    """The processes of `processes` still running (a zombie has ended: it only awaits reaping)."""
    left = []
    for pid, start in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[0] != "Z" and stat[3] == start:
            left.append(f"{pid} ({_name(pid)})")
    return left


def wait_until_gone(processes: dict[int, int], within_s: float) -> list[str]:
    deadline = time.monotonic() + within_s
    while (left := survivors(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def launcher() -> Iterator[list[subprocess.Popen[str]]]:
    """Launcher processes started by a test; killed if still running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def start_launcher(script: str, launcher: list[subprocess.Popen[str]], *args: str) -> int:
    """Run `script` with `args` in a fresh interpreter until it prints "ready"; its pid."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    launcher.append(process)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("ready"), line + (process.stderr.read() if process.stderr else "")
    return process.pid


#: A launcher of a server stand-in (a shell with a child, like tritonserver and its stub),
#: launched exactly as the server is; `sys.argv[1]` is a scratch folder.
STAND_IN = """
    import sys, time
    from pathlib import Path
    from beam_pipelines.serve import TritonInstallation, TritonServer

    class StandIn(TritonServer):
        def command(self, installation, backend_dir):
            return ["sh", "-c", "sleep 600 & sleep 600"]

    scratch = Path(sys.argv[1])
    server = StandIn(log_file=scratch / "log")
    server._launch(TritonInstallation(scratch), scratch)
    print("ready", flush=True)
    time.sleep(600)
"""


def test_sigkill_of_the_launcher_ends_the_process_group(
    tmp_path: Path, launcher: list[subprocess.Popen[str]]
) -> None:
    pid = start_launcher(STAND_IN, launcher, str(tmp_path))
    expected = ["sh", "sleep", "sleep", "watchdog"]
    deadline = time.monotonic() + 10
    # sh forks its sleeps after the launcher says ready, and a fork is named sh until it execs
    while True:
        processes = descendants(pid)
        names = sorted(_name(p) for p in processes)
        if names == expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert names == expected, names
    os.kill(pid, signal.SIGKILL)
    assert wait_until_gone(processes, GONE_WITHIN_S) == []


def test_stop_ends_the_server_and_its_watchdog(tmp_path: Path) -> None:
    class StandIn(TritonServer):
        def command(self, installation: TritonInstallation, backend_dir: Path) -> list[str]:
            return ["sleep", "600"]

    server = StandIn(log_file=tmp_path / "log")
    server._launch(TritonInstallation(tmp_path), tmp_path)
    assert server._watchdog is not None
    processes = group(server._watchdog.pid)
    assert sorted(_name(p) for p in processes) == ["sleep", "watchdog"]
    assert server.running
    server.stop(timeout_s=5)
    assert not server.running
    assert wait_until_gone(processes, 5) == []
    server.stop()  # a second stop is a no-op


@pytest.mark.integration
def test_sigkill_of_the_launcher_leaves_no_tritonserver(
    tmp_path: Path, hf_repository: Path, launcher: list[subprocess.Popen[str]]
) -> None:
    """The real tritonserver with a Python-backend model (its stub is a grandchild)."""
    script = f"""
        import time
        from beam_pipelines.serve import TritonServer

        server = TritonServer({str(hf_repository)!r}, log_file={str(tmp_path / "log")!r},
                              startup_timeout_s=240).start()
        print("ready", server.grpc_url, flush=True)
        time.sleep(600)
    """
    pid = start_launcher(script, launcher)
    processes = descendants(pid)
    names = {_name(p) for p in processes}
    assert {"tritonserver", "watchdog"} <= names, names
    assert any(name.startswith("triton_python") for name in names), names  # the model's stub
    os.kill(pid, signal.SIGKILL)
    assert wait_until_gone(processes, GONE_WITHIN_S) == []
