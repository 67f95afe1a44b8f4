"""The escape suite: every attempt of ``sandbox_escape_driver.py``, in every mode, is blocked.

Modes: bubblewrap and the Landlock + seccomp fallback, each with a root parent and with an
unprivileged parent. An unprivileged parent is this test's own process when it is not root;
as root, the driver runs under an unused uid (``setpriv``) with the world-readable copy of the
interpreter the sandbox itself uses. The fallback's audit hook is taken down by every attempt,
so what is tested is the kernel's walls.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import sandbox_escape_driver as driver

from tools.sandbox_process import shared_interpreter
from tools.sandbox_walls import landlock_abi, seccomp_supported

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ROOT = os.geteuid() == 0
HAVE_BWRAP = shutil.which("bwrap") is not None
HAVE_WALLS = landlock_abi() >= 1 and seccomp_supported()


def _free_uid() -> int:
    for uid in range(64100, 64200):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise RuntimeError("no unused uid in 64100..64199")


def _mode(protection: str, parent: str) -> object:
    marks = []
    if protection == "bubblewrap" and not HAVE_BWRAP:
        marks.append(pytest.mark.skip(reason="needs bubblewrap: apt-get install bubblewrap"))
    if protection == "fallback" and not HAVE_WALLS:
        marks.append(pytest.mark.skip(reason="needs Landlock and seccomp: Linux >= 5.13, x86-64"))
    if parent == "root" and not ROOT:
        marks.append(pytest.mark.skip(reason="needs root: run the tests as root"))
    return pytest.param((protection, parent), id=f"{protection}-{parent}", marks=marks)


MODES = [_mode(p, who) for p in ("bubblewrap", "fallback") for who in ("root", "user")]


def readable_checkout() -> Path:
    """The driver and `tools/` copied where any uid can read them: the checkout itself may sit
    in a folder only root can enter (a `mktemp -d` clone), which a non-root parent could not
    import from."""
    folder = Path(tempfile.mkdtemp(prefix="escape-driver-"))
    folder.chmod(0o755)
    shutil.copytree(HERE.parents[1] / "tools", folder / "tools")
    (folder / "tests" / "tools").mkdir(parents=True)
    shutil.copy(HERE / "sandbox_escape_driver.py", folder / "tests" / "tools")
    for path in (folder, folder / "tests", folder / "tests" / "tools"):
        path.chmod(0o755)
    return folder


def run_driver(protection: str, parent: str) -> dict:
    names = ",".join(driver.ATTEMPTS)
    script = str(HERE / "sandbox_escape_driver.py")
    staged = None
    if parent == "user" and ROOT:
        python = shared_interpreter()
        uid = _free_uid()
        staged = readable_checkout()
        command = [
            shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}",
            "--clear-groups", "--", python.executable, "-I", "-B",
            str(staged / "tests" / "tools" / "sandbox_escape_driver.py"), protection, names,
            json.dumps(python.paths),
        ]  # fmt: skip
        env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": python.library_path}
    else:
        command = [sys.executable, "-B", script, protection, names, "[]"]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    if "_unavailable" in report:  # e.g. no unprivileged user namespaces for bubblewrap
        pytest.skip(f"needs this mode on the machine: {report['_unavailable']}")
    assert report["_meta"]["protection"] == protection
    assert (report["_meta"]["uid"] == 0) == (parent == "root")
    return report


@pytest.fixture(scope="module", params=MODES)
def report(request) -> dict:
    return run_driver(*request.param)


def test_the_parent_is_unharmed_and_the_hook_was_down(report):
    assert report["_healthy"] == "(64, 48) 42\n"
    assert "hook down" in report["_unhook"]
    if report["_meta"]["protection"] == "fallback":
        assert "Landlock, seccomp" in report["_meta"]["details"]


@pytest.mark.parametrize("name", list(driver.ATTEMPTS))
def test_escape_is_blocked(report, name):
    result = report[name]
    assert result["evidence"] == [], result["output"]
