"""Sandbox processes: how one is launched, run for exactly one job, and destroyed.

The machinery under ``tools.sandbox`` (which holds the pool and the public API, and explains
the two protection levels): the command lines of the bubblewrap and fallback launchers, the
per-sandbox user ids leased when the parent is root, and ``SandboxProcess``, which starts the
runner (``tools/sandbox_runner.py``), feeds it a job, collects its output within the limits,
and kills everything it left behind.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import pwd
import random
import select
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools import sandbox_runner, sandbox_walls
from tools.base import ToolUnavailableError

if TYPE_CHECKING:
    from tools.sandbox import SandboxLimits

log = logging.getLogger(__name__)

RUNNER_SOURCE = Path(sandbox_runner.__file__).read_text()
WALLS_SOURCE = Path(sandbox_walls.__file__).read_text()
SCRATCH_INSIDE = "/tmp"  # the scratch directory's path inside a bubblewrap sandbox
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


# --------------------------------------------------------------------------------------------
# How a sandbox process is launched


@dataclass(frozen=True)
class Interpreter:
    """The Python a sandbox runs: the parent's own, or a copy its unprivileged uid can read."""

    executable: str
    #: Directories the interpreter and its packages need (mounted, or granted by Landlock).
    dirs: tuple[str, ...]
    #: ``sys.path`` entries the runner adds: the parent's site-packages directories.
    paths: tuple[str, ...] = ()
    #: ``LD_LIBRARY_PATH`` of the copy (its libpython), empty for the parent's.
    library_path: str = ""
    copied: bool = False


@dataclass(frozen=True)
class Launcher:
    """The command line of one protection level, found to work by probing."""

    protection: str  # "bubblewrap", "fallback" (Landlock + seccomp) or "unconfined"
    prefix: tuple[str, ...]  # bwrap ... -- / unshare --net -- / nothing
    own_uid: bool  # each sandbox gets a leased uid and the runner drops to it (root only)
    network_isolated: bool
    interpreter: Interpreter = field(default_factory=lambda: host_interpreter())
    #: A fallback with this process's uid: the runner sets RLIMIT_NPROC to the user's task
    #: count at its start plus this (the limit counts all of the user's tasks). Counted by
    #: the runner while it waits in the pool, not when a call comes.
    nproc_above_user: int | None = None

    @property
    def walls(self) -> bool:
        """Whether the runner puts up seccomp (and, in the fallback, Landlock)."""
        if self.protection == "bubblewrap":  # a second wall there; the fallback needs it
            return sandbox_walls.seccomp_supported()
        return self.protection == "fallback"

    @property
    def details(self) -> str:
        parts = [self.protection]
        parts.append("no network" if self.network_isolated else "network not isolated")
        parts.append("own uid per sandbox" if self.own_uid else "same uid as the parent")
        if self.protection == "fallback":
            parts.append("Landlock, seccomp, one process")
        elif self.walls:
            parts.append("seccomp")
        elif self.protection == "unconfined":
            parts.append("NO KERNEL WALLS: audit hook and rlimits only")
        if self.interpreter.copied:
            parts.append("world-readable copy of the interpreter")
        return ", ".join(parts)

    def argv(self, scratch: str, result_fd: int, uid: int | None, probe: bool) -> list[str]:
        argv = [*self.prefix, self.interpreter.executable, "-I", "-S", "-B", "-c", RUNNER_SOURCE]
        argv += ["--result-fd", str(result_fd), "--scratch", scratch]
        if uid is not None:
            argv += ["--uid", str(uid), "--gid", str(uid)]
        if self.interpreter.paths:
            argv += ["--path", json.dumps(self.interpreter.paths)]
        if self.protection != "bubblewrap":
            # What bubblewrap would have mounted: Landlock's read-only grants, and the audit
            # hook's read allowlist.
            readable = json.dumps([*SYSTEM_DIRS, *self.interpreter.dirs])
            argv += ["--fallback", "1", "--parent", str(os.getpid()), "--readable", readable]
        if self.nproc_above_user is not None:
            argv += ["--nproc-above-user", str(self.nproc_above_user)]
        if self.walls:
            argv += ["--walls", WALLS_SOURCE]
        if probe:
            argv += ["--probe", "1"]
        return argv

    def env(self, scratch: str) -> dict[str, str]:
        env = _child_env(scratch)
        if self.interpreter.library_path:
            env["LD_LIBRARY_PATH"] = self.interpreter.library_path
        return env


def _child_env(scratch: str) -> dict[str, str]:
    """The whole environment of the model's code: nothing inherited from the parent."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": scratch,
        "TMPDIR": scratch,
        "LANG": "C.UTF-8",
        "MPLCONFIGDIR": scratch,
        # One thread each: threads count against the process limit and the CPU is shared.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


@functools.cache
def python_dirs() -> tuple[str, ...]:
    """Directories the interpreter needs that the system directories do not already hold."""
    import numpy
    import PIL

    candidates = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.dirname(sys.executable)),
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
        os.path.dirname(os.path.dirname(PIL.__file__)),
        os.path.dirname(os.path.dirname(numpy.__file__)),
    }
    real = sorted({os.path.realpath(p) for p in candidates} | candidates)
    chosen: list[str] = []
    for path in real:
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        covered = [*SYSTEM_DIRS, *chosen]
        if any(path == c or path.startswith(c.rstrip("/") + "/") for c in covered):
            continue
        chosen.append(path)
    return tuple(chosen)


def host_interpreter() -> Interpreter:
    """This process's own interpreter, as it is."""
    return Interpreter(sys.executable, python_dirs(), site_dirs())


@functools.cache
def site_dirs() -> tuple[str, ...]:
    """This process's site-packages directories (``python -I`` may not find them itself)."""
    return tuple(
        os.path.realpath(p)
        for p in sys.path
        if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)
    )


def _reachable(path: str) -> bool:
    """Whether any user can read ``path`` (a directory): o+rx on it and o+x on every parent."""
    current = os.path.realpath(path)
    try:
        if os.stat(current).st_mode & 0o005 != 0o005:
            return False
        while current != "/":
            current = os.path.dirname(current)
            if not os.stat(current).st_mode & 0o001:
                return False
    except OSError:
        return False
    return True


#: Where ``shared_interpreter`` puts its copies (root-owned, mode 0755); where ``/var/cache``
#: is read-only (a read-only root file system), ``tools-sandbox`` in the temporary folder.
COPY_ROOT = "/var/cache/tools-sandbox"


def _copy_root() -> str:
    if os.access(os.path.dirname(COPY_ROOT), os.W_OK):
        return COPY_ROOT
    return os.path.join(tempfile.gettempdir(), "tools-sandbox")


@functools.cache
def shared_interpreter() -> Interpreter:
    """A copy of the interpreter that an unprivileged uid can run, made once per machine.

    For a root parent whose interpreter lives where other users cannot go (a pyenv under
    ``/root``, mode 0700): the sandbox must never keep uid 0, so the interpreter's
    directories that other users cannot reach are mirrored, as hard links where possible
    (copies otherwise), under ``COPY_ROOT``. The mirror runs as a plain interpreter (not the
    virtual environment): the parent's site-packages directories go on the runner's
    ``sys.path`` and the copy's ``lib`` on ``LD_LIBRARY_PATH`` (its libpython). A base
    interpreter's own site-packages is left out unless this process uses it.
    """
    executable = os.path.realpath(sys.executable)
    sites = site_dirs()
    base = os.path.realpath(sys.base_prefix)
    sources = sorted({base, *(d for d in python_dirs() if d != sys.prefix), *sites})
    sources = [d for d in sources if not _reachable(d)]
    skip = {
        os.path.join(folder, name)
        for folder, names, _ in os.walk(base)
        for name in names
        if name in ("site-packages", "dist-packages")
    } - set(sites)
    key = f"{sys.version}|{executable}|{'|'.join(sources)}"
    folder = _copy_root()
    root = os.path.join(folder, f"python-{hashlib.sha256(key.encode()).hexdigest()[:16]}")
    if not os.path.isdir(root):
        _make_copy(folder, root, sources, skip)

    def inside(path: str) -> str:
        covered = any(path == d or path.startswith(d + "/") for d in sources)
        return root + path if covered else path

    dirs = sorted({inside(d) for d in [*python_dirs(), *sites] if d != sys.prefix})
    return Interpreter(
        inside(executable),
        tuple(dirs),
        tuple(inside(d) for d in sites),
        inside(os.path.join(base, "lib")),
        copied=True,
    )


def _make_copy(folder: str, root: str, sources: list[str], skip: set[str]) -> None:
    os.makedirs(folder, mode=0o755, exist_ok=True)
    info = os.lstat(folder)  # in /tmp, another user may have made it first: then refused
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise PermissionError(f"{folder} must be this user's and not writable by others")
    building = tempfile.mkdtemp(prefix=".building-", dir=folder)
    try:
        for source in sources:
            for folder, names, files in os.walk(source):
                target = building + folder
                os.makedirs(target, exist_ok=True)
                os.chmod(target, 0o755)
                links = [n for n in names if os.path.islink(os.path.join(folder, n))]
                names[:] = [
                    n for n in names if n not in links and os.path.join(folder, n) not in skip
                ]
                for name in [*files, *links]:
                    _copy_file(os.path.join(folder, name), os.path.join(target, name))
        os.chmod(building, 0o755)
        with contextlib.suppress(OSError):  # another process made it first: theirs is used
            os.rename(building, root)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _copy_file(source: str, target: str) -> None:
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
        return
    info = os.stat(source)
    if info.st_mode & 0o004:
        try:
            os.link(source, target)  # the same inode: readable by everyone already
            return
        except OSError:
            pass  # another file system
    shutil.copy2(source, target)
    os.chmod(target, (info.st_mode & 0o755) | 0o444)


def _bwrap_features(bwrap: str) -> set[str]:
    text = subprocess.run(
        [bwrap, "--help"], capture_output=True, text=True, timeout=10, env={}
    ).stdout
    options = ("--size", "--perms", "--chmod", "--remount-ro", "--disable-userns")
    return {opt for opt in options if opt in text}


def bwrap_prefix(bwrap: str, privileged: bool, scratch_bytes: int) -> tuple[str, ...]:
    features = _bwrap_features(bwrap)
    argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net"]
    argv += ["--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
    if privileged:
        # Root without a user namespace, so that the sandbox's user is a real, unprivileged
        # uid on the host; the runner needs these two capabilities only to switch to it.
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--cap-drop", "ALL"]
        if "--disable-userns" in features:  # no nested user namespaces: less kernel surface
            argv += ["--disable-userns"]
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    # The scratch tmpfs goes on before the interpreter's folders: an environment that lives
    # under /tmp (a CI checkout made with mktemp -d) is then bound on top of it, not hidden.
    if "--perms" in features:
        argv += ["--perms", "01777"]
    if "--size" in features:
        argv += ["--size", str(scratch_bytes)]
    argv += ["--tmpfs", SCRATCH_INSIDE]
    if "--perms" not in features and "--chmod" in features:
        argv += ["--chmod", "01777", SCRATCH_INSIDE]
    made = {SCRATCH_INSIDE}  # exists already; its mode must stay the scratch's 01777
    for path in python_dirs():
        parts = Path(path).parts
        for depth in range(2, len(parts)):
            ancestor = str(Path(*parts[:depth]))
            if ancestor not in made:
                made.add(ancestor)
                # Parents are created 0755: the originals (e.g. /root) may be private.
                argv += (["--perms", "0755"] if "--perms" in features else []) + ["--dir", ancestor]
        argv += ["--ro-bind", path, path]
    argv += ["--dev", "/dev", "--proc", "/proc"]
    if "--remount-ro" in features:
        # /dev is a tmpfs the sandbox's user may own (user namespace): files there would use
        # memory outside every limit. Device nodes stay usable on a read-only mount.
        argv += ["--remount-ro", "/dev"]
    if "--remount-ro" in features:
        argv += ["--remount-ro", "/"]
    argv += ["--chdir", SCRATCH_INSIDE, "--clearenv"]
    for key, value in _child_env(SCRATCH_INSIDE).items():
        argv += ["--setenv", key, value]
    return (*argv, "--")


_unshare_ok: bool | None = None


def _unshare_net_works() -> bool:
    global _unshare_ok
    if _unshare_ok is None:
        tool = shutil.which("unshare")
        try:
            _unshare_ok = bool(tool) and (
                subprocess.run(
                    [tool, "--net", "--", "true"], capture_output=True, timeout=10, env={}
                ).returncode
                == 0
            )
        except (OSError, subprocess.SubprocessError):
            _unshare_ok = False
    return _unshare_ok


def fallback_launcher(
    protection: str, own_uid: bool, interpreter: Interpreter, nproc_above_user: int | None = None
) -> Launcher:
    """``"fallback"`` (Landlock and seccomp) or ``"unconfined"`` (the explicit opt-in)."""
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0 and _unshare_net_works():
        # As root: also a new network namespace (nothing but a down loopback).
        prefix = (shutil.which("unshare") or "unshare", "--net", "--")
    isolated = bool(prefix) or protection == "fallback"  # seccomp refuses every socket
    return Launcher(protection, prefix, own_uid, isolated, interpreter, nproc_above_user)


def kernel_walls_problem() -> str | None:
    """Why the fallback's Landlock and seccomp walls cannot go up here; None when they can."""
    import platform

    if not sandbox_walls.seccomp_supported():
        return f"no seccomp system call table for {platform.machine()}"
    if sandbox_walls.landlock_abi() < 1:
        return "Landlock is not available (Linux >= 5.13 with landlock among the LSMs)"
    return None


# --------------------------------------------------------------------------------------------
# Per-sandbox user ids (root only)


class UidLeases:
    """Unused uids from a range, one per live sandbox, locked across processes with flock."""

    def __init__(self, base: int, count: int) -> None:
        self.base, self.count = base, count
        root = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
        self.folder = os.path.join(root, "tools-sandbox-uids")
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        self._held: dict[int, int] = {}
        self._lock = threading.Lock()

    def acquire(self) -> int:
        import fcntl

        with self._lock:
            start = random.randrange(self.count)
            for step in range(self.count):
                uid = self.base + (start + step) % self.count
                if uid in self._held or _user_exists(uid):
                    continue
                fd = os.open(
                    os.path.join(self.folder, str(uid)), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC
                )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                self._held[uid] = fd
                return uid
        raise ToolUnavailableError(
            f"no free sandbox user id in {self.base}..{self.base + self.count - 1}"
        )

    def release(self, uid: int) -> None:
        with self._lock:
            fd = self._held.pop(uid, None)
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    def forget(self) -> None:
        """After fork, in the child: the locks belong to the parent; drop them silently."""
        for fd in self._held.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held.clear()
        self._lock = threading.Lock()


def _user_exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _uid_processes(uid: int) -> int:
    """Live (non-zombie) processes whose real or effective uid is ``uid``."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                lines = status.read().splitlines()
        except OSError:
            continue
        state = next((line for line in lines if line.startswith("State:")), "")
        uids = next((line for line in lines if line.startswith("Uid:")), "").split()[1:3]
        if str(uid) in uids and "Z" not in state.split()[1:2]:
            count += 1
    return count


def _kill_uid(uid: int) -> bool:
    """SIGKILL every process of ``uid`` (kill(-1) sent as that user); True when none is left.

    ``setpriv`` becomes the user after its own exec, so this process can start it with vfork.
    Asking ``subprocess`` to switch users makes it fork this many-threaded process (gRPC,
    Arrow and torch threads in a pipeline) instead, and that copy now and then crashed before
    its exec: a "Fatal Python error" on stderr and no kill that attempt.
    """
    if not _uid_processes(uid):
        return True  # the usual case: the sandbox's processes are gone, nothing to start
    kill = shutil.which("kill", path="/usr/bin:/bin")
    command = [kill, "-9", "-1"] if kill else [sys.executable, "-I", "-S", "-c",
               "import os\ntry: os.kill(-1, 9)\nexcept OSError: pass"]  # fmt: skip
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    if setpriv:
        command = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *command]
        as_user: dict[str, Any] = {}
    else:
        as_user = {"user": uid, "group": uid, "extra_groups": []}
    for attempt in range(5):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                command, env={}, timeout=10, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **as_user,
            )  # fmt: skip
        if not _uid_processes(uid):
            return True
        time.sleep(0.02 * (attempt + 1))
    return False


# --------------------------------------------------------------------------------------------
# One sandbox process


class _Capture:
    """Bounded capture of one output stream: the first or the last ``limit`` bytes."""

    def __init__(self, limit: int, keep: str) -> None:
        self.limit, self.keep = limit, keep
        self.data = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.keep == "head":
            room = self.limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]
        else:
            self.data += chunk
            if len(self.data) > self.limit:
                del self.data[: len(self.data) - self.limit]

    def text(self, stream: str) -> str:
        body = self.data.decode("utf-8", errors="replace")
        if self.total <= self.limit:
            return body
        if self.keep == "head":
            return (
                f"{body}\n[{stream} truncated: {self.total} bytes were written, only the first "
                f"{self.limit} are shown]"
            )
        return (
            f"[{stream} truncated: {self.total} bytes were written, only the last {self.limit} "
            f"are shown]\n{body}"
        )


@dataclass
class RunRecord:
    """What the parent observed of one run, before interpretation."""

    stdout: _Capture
    stderr: _Capture
    result: dict[str, Any] | None = None
    blobs: list[bytes] = field(default_factory=list)
    timed_out: bool = False
    returncode: int | None = None
    invalid: str | None = None  # the sandbox broke the result protocol
    startup_failed: bool = False


#: How often the whole-sandbox limits are checked while code runs (seconds).
WATCH_S = 0.05
#: Files and directories the fallback's scratch directory may hold.
SCRATCH_ENTRIES = 20_000


def _tree_usage(folder: str) -> tuple[int, int]:
    """Bytes allocated (or, for sparse files, their length if larger) and entries under
    ``folder``, not following links; stops counting past ``SCRATCH_ENTRIES``."""
    used, entries, stack = 0, 0, [folder]
    while stack and entries <= SCRATCH_ENTRIES:
        try:
            with os.scandir(stack.pop()) as listing:
                for entry in listing:
                    entries += 1
                    info = entry.stat(follow_symlinks=False)
                    used += max(info.st_blocks * 512, info.st_size)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return used, entries


#: Processes of an idle bubblewrap sandbox: bwrap, its pid-1 reaper, the runner.
_BWRAP_BASE_PROCESSES = 3


def _tree_memory(pid: int) -> int:
    """Proportional set size, in bytes, of ``pid`` and all its descendants; 0 while the code
    has started no process (the runner's own address-space limit is then the total).

    Reading ``smaps_rollup`` takes the target's memory-map lock, which slows a process that
    is faulting pages in; the common case of no extra process reads none.
    """
    pids, stack = [], [pid]
    while stack:
        current = stack.pop()
        if current in pids:
            continue
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    stack += [int(child) for child in handle.read().split()]
        except (OSError, ValueError):
            continue
    if len(pids) <= _BWRAP_BASE_PROCESSES:
        return 0
    total = 0
    for current in pids:
        try:
            with open(f"/proc/{current}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError):
            continue
    return total


def _grow_pipe(fd: int) -> None:
    """Enlarge a pipe (64 KiB by default) so a job or a result crosses in one or two writes:
    every extra round trip is a wake-up, and on a busy machine each one waits for a CPU."""
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ; capped by /proc/sys/fs/pipe-max-size


class SandboxProcess:
    """One sandbox process, used for at most one job."""

    def __init__(
        self,
        launcher: Launcher,
        leases: UidLeases | None,
        probe: bool = False,
    ) -> None:
        self.launcher = launcher
        self.leases = leases if launcher.own_uid else None
        self.uid = self.leases.acquire() if self.leases else None
        self.scratch_host: str | None = None
        self.result_fd = -1
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self._start(probe)
        except BaseException:
            self.destroy()
            raise

    def _start(self, probe: bool) -> None:
        if self.launcher.protection == "bubblewrap":
            scratch, env = SCRATCH_INSIDE, {}
        else:
            self.scratch_host = tempfile.mkdtemp(prefix="tools-sandbox-")
            if self.uid is not None:
                os.chown(self.scratch_host, self.uid, self.uid)
            scratch, env = self.scratch_host, self.launcher.env(self.scratch_host)
        read_end, write_end = os.pipe()
        self.result_fd = read_end
        _grow_pipe(write_end)
        try:
            self.proc = subprocess.Popen(
                self.launcher.argv(scratch, write_end, self.uid, probe),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(write_end,),
                env=env,
                start_new_session=True,
            )
        except OSError as error:
            raise ToolUnavailableError(f"cannot start a sandbox process: {error}") from error
        finally:
            os.close(write_end)
        assert self.proc.stdin is not None
        _grow_pipe(self.proc.stdin.fileno())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        """Whether the runner has said ``ready`` (its message waits, unread, in the pipe)."""
        readable, _, _ = select.select([self.result_fd], [], [], 0)
        return bool(readable) and self.alive()

    def run(self, job: bytes, limits: SandboxLimits, startup_timeout_s: float) -> RunRecord:
        """Send ``job``, collect output and result until done or out of time."""
        assert self.proc is not None and self.proc.stdin and self.proc.stdout and self.proc.stderr
        raw = RunRecord(
            _Capture(limits.output_bytes, "head"), _Capture(limits.output_bytes, "tail")
        )
        stdin, stdout, stderr = self.proc.stdin, self.proc.stdout, self.proc.stderr
        result_cap = limits.max_image_bytes + (1 << 20)
        buffer = bytearray()
        pending = memoryview(job)
        selector = selectors.DefaultSelector()
        for stream in (stdin, stdout, stderr):
            os.set_blocking(stream.fileno(), False)
        os.set_blocking(self.result_fd, False)
        selector.register(stdin.fileno(), selectors.EVENT_WRITE, "stdin")
        selector.register(stdout.fileno(), selectors.EVENT_READ, raw.stdout)
        selector.register(stderr.fileno(), selectors.EVENT_READ, raw.stderr)
        selector.register(self.result_fd, selectors.EVENT_READ, "result")
        deadline = time.monotonic() + startup_timeout_s
        next_check = 0.0
        ready = False
        result_open = True
        try:
            while result_open and raw.result is None and raw.invalid is None:
                now = time.monotonic()
                timeout = deadline - now
                if timeout <= 0:
                    raw.timed_out, raw.startup_failed = True, not ready
                    break
                if ready:
                    if now >= next_check:
                        raw.invalid = self._over_budget(limits)
                        if raw.invalid is not None:
                            break
                        next_check = now + WATCH_S
                    timeout = min(timeout, next_check - now)
                for key, _ in selector.select(timeout):
                    if key.data == "stdin":
                        try:
                            pending = pending[os.write(key.fd, pending) :]
                        except BrokenPipeError:
                            pending = pending[:0]
                        if not pending:
                            selector.unregister(key.fd)
                            stdin.close()
                        continue
                    chunk = os.read(key.fd, 1 << 16)
                    if key.data == "result":
                        if not chunk:
                            selector.unregister(key.fd)
                            result_open = False
                            continue
                        buffer += chunk
                        if len(buffer) > result_cap:
                            raw.invalid = "it returned more data than the image limits allow"
                            break
                        while raw.result is None and raw.invalid is None:
                            try:
                                message = sandbox_runner.decode_message(buffer)
                            except ValueError as error:
                                raw.invalid = f"its result could not be read ({error})"
                                break
                            if message is None:
                                break
                            header, blobs, size = message
                            del buffer[:size]
                            if header.get("type") == "ready" and not ready:
                                # The clock starts when the code can run, not at startup.
                                ready = True
                                deadline = time.monotonic() + limits.wall_s
                            elif header.get("type") == "result" and ready:
                                raw.result, raw.blobs = header, blobs
                            else:
                                raw.invalid = "it sent an unexpected message"
                    elif chunk:
                        key.data.add(chunk)
                    else:
                        selector.unregister(key.fd)
            if raw.result is not None:
                # Output written before the result is already in the pipes: take what is there.
                self._drain(selector, raw)
                raw.invalid = self._over_budget(limits)
            elif not raw.timed_out and raw.invalid is None and buffer:
                raw.invalid = "its result pipe held bytes that are not a result"
            elif not raw.timed_out and raw.invalid is None:
                # The result pipe closed without a result: the process died. Its exit status
                # says why; wait briefly for it and for the rest of its output.
                try:
                    raw.returncode = self.proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    raw.returncode = None
                self._drain(selector, raw)
        finally:
            selector.close()
        return raw

    def _over_budget(self, limits: SandboxLimits) -> str | None:
        """Whole-sandbox limits the kernel does not keep here; None when within them.

        Scratch in the fallback (a host directory; bubblewrap's is a tmpfs with a size):
        bytes and entries in all. Memory under bubblewrap, where the code may start processes
        and each has its own address-space limit: the proportional set size of them all.
        Checked every ``WATCH_S`` while the code runs and once at its end.
        """
        from tools.sandbox import format_size

        if self.scratch_host is not None:
            used, entries = _tree_usage(self.scratch_host)
            if used > limits.scratch_bytes or entries > SCRATCH_ENTRIES:
                return (
                    f"its files took more than the {format_size(limits.scratch_bytes)} (or "
                    f"{SCRATCH_ENTRIES} files) the working directory may hold"
                )
        bubblewrap = self.launcher.protection == "bubblewrap" and self.proc is not None
        if bubblewrap and _tree_memory(self.proc.pid) > limits.memory_bytes:
            return (
                f"its processes together used more than {format_size(limits.memory_bytes)} "
                "of memory"
            )
        return None

    @staticmethod
    def _drain(selector: selectors.BaseSelector, raw: RunRecord) -> None:
        for key in list(selector.get_map().values()):
            if not isinstance(key.data, _Capture):
                continue
            for _ in range(256):  # bounded: a live child could keep writing
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                key.data.add(chunk)

    def destroy(self) -> None:
        """Kill the sandbox and everything it started; free its uid and scratch directory."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            self.proc = None
        if self.result_fd >= 0:
            os.close(self.result_fd)
            self.result_fd = -1
        if self.uid is not None and self.leases is not None:
            # bubblewrap's pid namespace already took everything down; in the fallback,
            # processes the code detached (setsid) are found by their uid.
            if _kill_uid(self.uid):
                self.leases.release(self.uid)
            else:  # keep the uid leased (unused) rather than hand a dirty one out again
                log.warning("sandbox uid %d still has processes; not reusing it", self.uid)
            self.uid = None
        if self.scratch_host is not None:
            shutil.rmtree(self.scratch_host, ignore_errors=True)
            self.scratch_host = None
