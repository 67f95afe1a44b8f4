"""The fallback's walls as the tool sees them: never root, and no start without kernel walls."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile

import pytest
from PIL import Image

import tools.sandbox
from tools import sandbox_process
from tools.base import ToolUnavailableError
from tools.sandbox import Sandbox
from tools.sandbox_walls import landlock_abi, seccomp_supported

pytestmark = pytest.mark.integration

HAVE_WALLS = landlock_abi() >= 1 and seccomp_supported()


def image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 16)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.skipif(not HAVE_WALLS, reason="needs Landlock and seccomp: Linux >= 5.13, x86-64")
def test_fallback_code_never_runs_as_root_and_is_one_process():
    with Sandbox(protection="fallback", pool_size=0) as sandbox:
        outcome = sandbox.run("import os\nprint(os.getuid(), os.geteuid(), os.getgid())", image())
        assert "Landlock, seccomp, one process" in sandbox.details
    assert outcome.ok, outcome.stderr
    uid, euid, gid = map(int, outcome.stdout.split())
    assert uid != 0 and euid != 0 and gid != 0
    if os.geteuid() != 0:
        assert uid == os.getuid()


def test_without_kernel_walls_the_tool_refuses_unless_opted_in(monkeypatch):
    monkeypatch.setattr(tools.sandbox, "kernel_walls_problem", lambda: "no Landlock here")
    refused = Sandbox(protection="fallback", pool_size=0)
    with pytest.raises(ToolUnavailableError, match="set unsafe_no_kernel_walls=True") as error:
        refused.run("print(1)", image())
    assert "Landlock and seccomp (no Landlock here)" in str(error.value)
    with pytest.raises(ToolUnavailableError):  # and keeps refusing
        _ = refused.protection
    no_bwrap = Sandbox(bwrap="/nonexistent/bwrap", pool_size=0)
    with pytest.raises(ToolUnavailableError, match=r"neither bubblewrap \(bwrap is not installed"):
        _ = no_bwrap.protection

    with Sandbox(protection="fallback", pool_size=0, unsafe_no_kernel_walls=True) as unsafe:
        assert unsafe.protection == "unconfined"
        assert "NO KERNEL WALLS" in unsafe.details
        outcome = unsafe.run("import os\nprint(os.getuid())", image())
    assert outcome.ok and outcome.protection == "unconfined"
    assert int(outcome.stdout) != 0  # still never root


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: run the tests as root")
def test_the_interpreter_copy_runs_as_an_unprivileged_user(monkeypatch):
    folder = tempfile.mkdtemp(prefix="copy-test-")
    os.chmod(folder, 0o755)
    monkeypatch.setattr(sandbox_process, "COPY_ROOT", os.path.join(folder, "copies"))
    sandbox_process.shared_interpreter.cache_clear()
    try:
        copy = sandbox_process.shared_interpreter()
        code = f"import sys\nsys.path += {list(copy.paths)!r}\nimport numpy, PIL\nprint('ran')"
        done = subprocess.run(
            ["setpriv", "--reuid=64177", "--regid=64177", "--clear-groups", "--",
             copy.executable, "-I", "-c", code],
            env={"LD_LIBRARY_PATH": copy.library_path}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert done.stdout == "ran\n", done.stderr
        assert copy.copied and all(os.path.isdir(d) for d in copy.dirs)
    finally:
        sandbox_process.shared_interpreter.cache_clear()
        shutil.rmtree(folder)
