"""Run model-written Python in a throwaway sandbox process, with a warm pool of ready ones.

Every call gets a fresh process that is used for exactly one job and then destroyed, so no
state (globals, files, processes) can leak from one call into the next. Starting that process
(bubblewrap, the interpreter, importing Pillow) costs far more than a typical job, so
a pool keeps ``pool_size`` of them started and waiting; a background thread replaces each one
as it is used and cleans up the used ones. With ``pool_size=0`` every call starts its own.

Protection levels, reported as ``Sandbox.protection``; every one is a kernel wall:

``"bubblewrap"`` (strong): ``bwrap`` with new pid, network, ipc and uts namespaces, no
capabilities, an empty root filesystem holding only read-only system directories (``/usr``,
``/lib*``, ``/bin``, ``/etc``) and the interpreter's own directories, a fresh ``/proc`` and a
read-only ``/dev``, and a size-limited tmpfs at ``/tmp`` as the scratch directory and only
writable place (it vanishes with the sandbox). This is deliberately narrower than
``--ro-bind / /``: home directories, ``/run`` (container secrets), the repository and data
directories are simply not there, so files holding secrets cannot be read. Plus rlimits and
a seccomp filter (``tools/sandbox_walls.py``: no sockets, ptrace, namespaces, mounts, ...).

``"fallback"`` (when ``bwrap`` is missing or cannot create its namespaces, as in many
containers): a plain child process behind Landlock (read-only system directories and
interpreter, the private scratch directory the only writable place; nothing else, ``/proc``
files, ``/tmp`` and ``/dev/shm`` included) and a seccomp filter that keeps it one process (no
fork or exec, signals only to itself, no socket of any family, no ptrace, namespaces or
mounts), plus rlimits and, as root, ``unshare --net``. A Python audit hook gives friendly
errors for refused operations; it is not a wall (code can take it down; the kernel's walls
stay).

``"unconfined"``: neither of the above is possible here (no bubblewrap, no Landlock or
seccomp) and the user set ``unsafe_no_kernel_walls=True``: the audit hook and rlimits alone,
which code can break out of. Without that setting the tool refuses to start
(``ToolUnavailableError``); ``require_strong`` refuses everything but bubblewrap.

Model code never runs as root. The environment starts empty (no inherited secrets), and
when the parent runs as root each sandbox runs as its own unprivileged user, leased from
``uid_base`` upwards with a lock file so that concurrent processes never share one. That
makes ``RLIMIT_NPROC`` a per-sandbox limit (the kernel ignores it for root), keeps root-only
files unreadable, and lets cleanup kill every process the sandbox left behind. When that user
cannot read the interpreter (a pyenv under ``/root``), a world-readable copy of it is made once
under ``/var/cache/tools-sandbox`` (hard links where possible) and used instead. As a non-root
user, bubblewrap's user namespace gives the per-sandbox process count, and the fallback is one
process.

Limits (``SandboxLimits``): wall clock (the parent kills the sandbox), CPU time, address space,
processes, file size, output size (stdout is kept from the start, stderr from the end, each
truncated with a note), number of returned images (the first N saved are returned, with a
note), pixels per image (an image over the limit is refused with an error telling the model to
downscale; it is never silently resized), and total image bytes.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import struct
import subprocess
import threading
import time
import weakref
import zlib
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Any

from tools import png, sandbox_runner, sandbox_walls
from tools.base import ToolUnavailableError
from tools.sandbox_process import (
    Launcher,
    RunRecord,
    SandboxProcess,
    UidLeases,
    bwrap_prefix,
    fallback_launcher,
    host_interpreter,
    kernel_walls_problem,
    shared_interpreter,
)

log = logging.getLogger(__name__)

PROTECTIONS = ("bubblewrap", "fallback", "unconfined")


@dataclass(frozen=True)
class SandboxLimits:
    """Per-call limits; every one is enforced by the kernel or by the parent."""

    wall_s: float = 10.0
    cpu_s: float = 10.0
    memory_bytes: int = 1 << 30  # address space (RLIMIT_AS)
    output_bytes: int = 4096  # of stdout, and separately of stderr, returned to the model
    max_images: int = 8
    max_image_pixels: int = 4096 * 4096
    max_image_bytes: int = 128 << 20  # all returned PNGs together
    max_processes: int = 32  # processes and threads of the sandbox's user
    scratch_bytes: int = 256 << 20  # the scratch tmpfs, and the largest file (RLIMIT_FSIZE)

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ValueError(f"sandbox limit {f.name} must be positive")


@dataclass(frozen=True)
class SandboxConfig:
    """How sandboxes are made: limits, protection, pool size."""

    limits: SandboxLimits = field(default_factory=SandboxLimits)
    #: "auto" (bubblewrap when usable, else fallback), "bubblewrap" or "fallback".
    protection: str = "auto"
    #: Refuse to run (ToolUnavailableError) unless bubblewrap protection is active.
    require_strong: bool = False
    #: Started sandboxes kept waiting for a call; 0 starts one per call.
    pool_size: int = 2
    #: How long a new sandbox may take to start (interpreter and imports) before a call fails.
    startup_timeout_s: float = 30.0
    #: Path of the bwrap binary; None looks it up on PATH.
    bwrap: str | None = None
    #: Range of user ids leased to sandboxes when the parent is root.
    uid_base: int = 61000
    uid_count: int = 1000
    #: Without bubblewrap and without Landlock and seccomp, run model code anyway, behind the
    #: audit hook and rlimits alone (which it can break out of). Off: the tool refuses.
    unsafe_no_kernel_walls: bool = False

    def __post_init__(self) -> None:
        if self.protection not in ("auto", "bubblewrap", "fallback"):
            raise ValueError(
                f"protection must be 'auto', 'bubblewrap' or 'fallback', not {self.protection!r}"
            )
        if self.require_strong and self.protection == "fallback":
            raise ValueError("require_strong=True contradicts protection='fallback'")
        if self.pool_size < 0 or self.uid_count <= 0 or self.startup_timeout_s <= 0:
            raise ValueError("pool_size must be >= 0; uid_count, startup_timeout_s > 0")

    @classmethod
    def from_settings(cls, **settings: Any) -> SandboxConfig:
        """A config from flat settings: limit names and config names mixed; unknown: error."""
        limit_names = {f.name for f in fields(SandboxLimits)}
        config_names = {f.name for f in fields(cls)} - {"limits"}
        unknown = sorted(set(settings) - limit_names - config_names)
        if unknown:
            known = ", ".join(sorted(limit_names | config_names))
            raise TypeError(f"unknown sandbox setting {unknown[0]!r}; known settings: {known}")
        limits = SandboxLimits(**{k: v for k, v in settings.items() if k in limit_names})
        return cls(limits=limits, **{k: v for k, v in settings.items() if k in config_names})


@dataclass(frozen=True)
class SandboxOutcome:
    """What one run produced. ``reason`` is set (for the model) whenever ``status != "ok"``.

    ``status``: ``ok``; ``error`` (the code raised, or an image was refused); ``timeout``
    (wall clock); ``killed`` (the process died: CPU time, memory, a crash, ``os._exit``).
    ``stdout``/``stderr`` are already truncated to the output limit, with a note saying so.
    """

    status: str
    stdout: str
    stderr: str
    images: tuple[bytes, ...]
    notes: tuple[str, ...]
    reason: str | None
    protection: str
    elapsed_s: float
    #: Seconds spent inside the sandbox as the runner reports them (``code_s``: decoding the
    #: inputs and running the code; ``collect_s``: gathering the saved images). Informational.
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# --------------------------------------------------------------------------------------------
# The sandbox and its pool

_live: weakref.WeakSet[Sandbox] = weakref.WeakSet()


class Sandbox:
    """Runs code in fresh sandbox processes; thread-safe; start nothing until first used."""

    def __init__(self, config: SandboxConfig | None = None, **settings: Any) -> None:
        if config is not None and settings:
            raise TypeError("give either a SandboxConfig or settings, not both")
        self.config = config or SandboxConfig.from_settings(**settings)
        self._launcher: Launcher | None = None
        self._unavailable: str | None = None
        self._leases: UidLeases | None = None
        self._init_state()
        _live.add(self)

    def _init_state(self) -> None:
        self._cond = threading.Condition()
        self._probe_lock = threading.Lock()
        self._idle: deque[SandboxProcess] = deque()
        self._retired: list[SandboxProcess] = []
        self._thread: threading.Thread | None = None
        self._destroying = 0
        self._closed = False

    # -- protection ---------------------------------------------------------------------------

    @property
    def protection(self) -> str:
        """``"bubblewrap"`` or ``"fallback"``: what protects calls here (probes on first use)."""
        return self._launch().protection

    @property
    def details(self) -> str:
        """A short description of the active protection, e.g. for a run's manifest."""
        return self._launch().details

    def _launch(self) -> Launcher:
        with self._probe_lock:
            if self._launcher is None:
                if self._unavailable is not None:
                    raise ToolUnavailableError(self._unavailable)
                try:
                    self._launcher = self._choose()
                except ToolUnavailableError as error:
                    self._unavailable = str(error)
                    raise
            return self._launcher

    def _choose(self) -> Launcher:
        config = self.config
        privileged = os.geteuid() == 0
        if privileged:
            self._leases = UidLeases(config.uid_base, config.uid_count)
        problem = "not asked for"
        if config.protection in ("auto", "bubblewrap"):
            bwrap = config.bwrap or shutil.which("bwrap")
            if bwrap is None or not os.access(bwrap, os.X_OK):
                problem = f"bwrap is not installed{f' at {bwrap}' if bwrap else ''}"
            else:
                try:
                    prefix = bwrap_prefix(bwrap, privileged, config.limits.scratch_bytes)
                except (OSError, subprocess.SubprocessError) as error:
                    problem = f"bwrap cannot be run ({error})"
                else:
                    launcher = Launcher("bubblewrap", prefix, privileged, True)
                    problem = self._probe(launcher)
                    if problem is None:
                        return launcher
            if config.protection == "bubblewrap" or config.require_strong:
                raise ToolUnavailableError(
                    f"the code sandbox needs bubblewrap here but {problem}; install bubblewrap "
                    "(Debian/Ubuntu package 'bubblewrap') and allow it to create namespaces"
                )
            log.warning("code sandbox: no bubblewrap (%s); trying Landlock and seccomp", problem)
        walls_problem = kernel_walls_problem()
        if walls_problem is None:
            launcher, walls_problem = self._first_working("fallback", privileged)
            if launcher is not None:
                if not privileged:
                    # The sandbox has this process's uid: without this it could open this
                    # process's pipes (other sandboxes' jobs and results) via /proc/PID/fd.
                    sandbox_walls.make_undumpable()
                    log.warning("code sandbox: this process is now non-dumpable (no core dumps)")
                return launcher
        if not config.unsafe_no_kernel_walls:
            raise ToolUnavailableError(
                "the code sandbox has no kernel walls here: neither bubblewrap "
                f"({problem}) nor "
                f"Landlock and seccomp ({walls_problem}). Install bubblewrap, or use Linux "
                ">= 5.13 with Landlock enabled; to run model code behind an audit hook and "
                "rlimits alone, which code can break out of, set unsafe_no_kernel_walls=True"
            )
        log.warning(
            "code sandbox: RUNNING MODEL CODE WITHOUT KERNEL WALLS (unsafe_no_kernel_walls): "
            "the code can escape; %s",
            walls_problem,
        )
        launcher, problem = self._first_working("unconfined", privileged)
        if launcher is None:
            raise ToolUnavailableError(f"the code sandbox cannot start: {problem}")
        return launcher

    def _first_working(self, protection: str, privileged: bool) -> tuple[Launcher | None, str]:
        """A fallback launcher that starts, and otherwise what went wrong.

        A root parent's sandbox always runs under a leased uid: when that uid cannot run this
        interpreter (a pyenv under ``/root``), a world-readable copy is made and used.
        """
        extra = None if privileged else self.config.limits.max_processes
        launcher = fallback_launcher(protection, privileged, host_interpreter(), extra)
        problem = self._probe(launcher)
        if problem is not None and privileged:
            try:
                copy = shared_interpreter()
            except OSError as error:
                return None, f"{problem}; no copy of the interpreter could be made ({error})"
            launcher = fallback_launcher(protection, privileged, copy)
            problem = self._probe(launcher)
        if problem is None:
            return launcher, ""
        return None, problem

    def _probe(self, launcher: Launcher) -> str | None:
        """None when a sandbox of this kind starts and imports Pillow; else what went wrong."""
        try:
            worker = SandboxProcess(launcher, self._leases, probe=True)
        except ToolUnavailableError as error:
            return str(error)
        try:
            assert worker.proc is not None
            try:
                _, err = worker.proc.communicate(timeout=self.config.startup_timeout_s)
            except subprocess.TimeoutExpired:
                return "it did not start in time"
            os.set_blocking(worker.result_fd, False)
            try:
                said = os.read(worker.result_fd, 1 << 16)
            except BlockingIOError:
                said = b""
            message = sandbox_runner.decode_message(said) if said else None
            if worker.proc.returncode != 0 or not message or message[0].get("type") != "ready":
                detail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                return f"a test sandbox failed (exit status {worker.proc.returncode}: {detail[0]})"
            return None
        finally:
            worker.destroy()

    # -- running ------------------------------------------------------------------------------

    def run(
        self,
        code: str,
        image: bytes,
        sub_images: tuple[bytes, ...] = (),
        *,
        more_images: tuple[bytes, ...] = (),
        wall_s: float | None = None,
        max_images: int | None = None,
    ) -> SandboxOutcome:
        """Run ``code`` with ``image`` (encoded original) and earlier PNG ``sub_images``;
        ``more_images`` are a multi-image job's other originals (``images[1:]`` in the code).

        ``wall_s`` and ``max_images`` can only lower the configured limits.
        """
        launcher = self._launch()
        limits = self.config.limits
        if wall_s is not None:
            limits = replace(limits, wall_s=max(min(limits.wall_s, wall_s), 0.001))
        if max_images is not None:
            limits = replace(limits, max_images=max(min(limits.max_images, max_images), 0))
        job = sandbox_runner.encode_message(
            {
                "type": "job",
                "code": code,
                "limits": self._job_limits(limits, launcher),
                "originals": 1 + len(more_images),
            },
            [image, *more_images, *sub_images],
        )
        started = time.monotonic()
        worker = self._take(launcher)
        try:
            raw = worker.run(job, limits, self.config.startup_timeout_s)
            if raw.startup_failed:
                raise ToolUnavailableError(
                    f"a sandbox did not become ready within {self.config.startup_timeout_s:g} s"
                )
            # Checked before the worker is retired: the replacement's start-up (the pool
            # thread) would compete with the image check for the CPU.
            return _interpret(raw, limits, launcher.protection, time.monotonic() - started)
        finally:
            self._retire(worker)

    def _job_limits(self, limits: SandboxLimits, launcher: Launcher) -> dict[str, Any]:
        values = {f.name: getattr(limits, f.name) for f in fields(limits)}
        if launcher.nproc_above_user is not None:
            values["max_processes"] = None  # set by the runner at its start (see Launcher)
        return values

    def warm(self) -> None:
        """Start the pool now rather than at the first call (e.g. in a DoFn's setup)."""
        self._launch()
        with self._cond:
            self._ensure_thread()
            self._cond.notify_all()

    def wait_warm(self, timeout_s: float = 60.0) -> bool:
        """Start the pool and wait until it holds ``pool_size`` ready sandboxes and every used
        one is cleaned up; False if that did not happen within ``timeout_s``."""
        self.warm()
        deadline = time.monotonic() + timeout_s
        while True:
            with self._cond:
                idle = list(self._idle)
                settled = not self._retired and not self._destroying
            if settled and len(idle) >= self.config.pool_size and all(w.ready() for w in idle):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def _take(self, launcher: Launcher) -> SandboxProcess:
        with self._cond:
            if self._closed:
                raise ToolUnavailableError("the sandbox has been closed")
            self._ensure_thread()
            while self._idle:
                worker = self._idle.popleft()
                if worker.alive():
                    # No notify: the replacement starts when this call ends (``_retire``), so
                    # that its start-up does not compete with the call for the CPU.
                    return worker
                self._retired.append(worker)
            self._cond.notify_all()
        # Nothing waiting: start one in the calling thread. (Its parent-death signal is tied
        # to this thread, which lives until the call ends, when the worker is destroyed.)
        return SandboxProcess(launcher, self._leases)

    def _retire(self, worker: SandboxProcess) -> None:
        with self._cond:
            self._retired.append(worker)
            self._ensure_thread()
            self._cond.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._maintain, name="sandbox-pool", daemon=True)
            self._thread.start()

    def _maintain(self) -> None:
        """Pool thread: destroy used sandboxes, keep ``pool_size`` fresh ones waiting.

        Pooled sandboxes are started here, and this thread lives as long as the pool: a
        sandbox's parent-death signal fires when the *thread* that started it exits.
        """
        failures = 0
        while True:
            with self._cond:
                while (
                    not self._closed
                    and not self._retired
                    and len(self._idle) >= self.config.pool_size
                ):
                    self._cond.wait()
                if self._closed:
                    retired, self._retired = self._retired + list(self._idle), []
                    self._idle.clear()
                else:
                    retired, self._retired = self._retired, []
                start = not self._closed and len(self._idle) < self.config.pool_size
                self._destroying = len(retired)
            for worker in retired:
                worker.destroy()
            with self._cond:
                self._destroying = 0
                self._cond.notify_all()
            if not start:
                if self._closed:
                    return
                continue
            try:
                assert self._launcher is not None
                worker = SandboxProcess(self._launcher, self._leases)
                failures = 0
            except Exception:  # keep the pool alive; calls start their own
                failures += 1
                log.exception("could not start a pooled sandbox")
                time.sleep(min(0.1 * 2**failures, 5.0))
                continue
            with self._cond:
                if self._closed:
                    self._retired.append(worker)
                else:
                    self._idle.append(worker)
                self._cond.notify_all()

    def close(self) -> None:
        """Stop the pool and destroy every waiting sandbox. Calls after this fail."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            idle, self._idle = list(self._idle), deque()
            retired, self._retired = self._retired, []
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout=30)
        for worker in idle + retired:
            worker.destroy()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        # The waiting sandboxes belong to the parent; the child starts its own when needed.
        self._init_state()
        if self._leases is not None:
            self._leases.forget()


def _close_all() -> None:
    for sandbox in list(_live):
        sandbox.close()


def _reset_after_fork() -> None:
    for sandbox in list(_live):
        sandbox._after_fork_in_child()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_reset_after_fork)


# --------------------------------------------------------------------------------------------
# Turning what happened into an outcome


def _interpret(
    raw: RunRecord, limits: SandboxLimits, protection: str, elapsed: float
) -> SandboxOutcome:
    stdout, stderr = raw.stdout.text("output"), raw.stderr.text("error output")

    timings: dict[str, float] = {}
    if raw.result is not None and isinstance(raw.result.get("timings"), dict):
        timings = {
            str(k): float(v)
            for k, v in raw.result["timings"].items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }

    def outcome(status: str, reason: str | None, images=(), notes=()) -> SandboxOutcome:
        return SandboxOutcome(
            status, stdout, stderr, tuple(images), tuple(notes), reason, protection, elapsed,
            timings,
        )  # fmt: skip

    if raw.invalid is not None:
        return outcome("error", f"The sandbox was stopped because {raw.invalid}.")
    if raw.timed_out:
        return outcome(
            "timeout",
            f"The code did not finish within the time limit of {limits.wall_s:g} s and was "
            "stopped. Do less work per call (e.g. process a smaller region), or avoid loops "
            "that never end.",
        )
    if raw.result is None:
        return outcome("killed", _death_reason(raw.returncode, limits, protection))
    result = raw.result
    notes = [str(n) for n in result.get("notes", [])][:16]
    if result.get("status") != "ok":
        reason = result.get("message")
        if not isinstance(reason, str) or not reason:
            exception = str(result.get("exception") or "an exception")
            reason = f"The code raised {exception}."
            if exception == "MemoryError":
                reason += f" The memory limit is {format_size(limits.memory_bytes)}."
        return outcome("error", reason[: limits.output_bytes], notes=notes)
    problem = _check_images(raw.blobs, limits)
    if problem is not None:
        return outcome("error", f"The sandbox was stopped because {problem}.")
    return outcome("ok", None, raw.blobs, notes)


def _check_images(blobs: list[bytes], limits: SandboxLimits) -> str | None:
    """The parent's own check of returned images: never trust the sandbox's word.

    Each must be one still PNG whose every chunk is sound and whose image data inflates to
    exactly the size its header declares (``png_problem``), within the pixel cap, which is
    checked before anything is inflated. The parent never decodes them here; where it does
    later (model views, filters) it goes through ``load_image``, as for job images.
    """
    if len(blobs) > limits.max_images:
        return f"it returned {len(blobs)} images, more than the limit of {limits.max_images}"
    if sum(len(b) for b in blobs) > limits.max_image_bytes:
        return "the returned images exceed the size limit"
    for blob in blobs:
        problem = png_problem(blob, limits.max_image_pixels)
        if problem is not None:
            return problem
    return None


#: PNG colour type -> channels (greyscale, RGB, palette, grey + alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_problem(data: bytes, max_pixels: int) -> str | None:
    """What is wrong with ``data`` as one still PNG within ``max_pixels``; None if nothing.

    Walks every chunk: the signature, one IHDR and only as the first chunk (a second one
    could declare another size to a decoder), a known colour type and depth, no interlacing,
    a correct CRC on each chunk, no animation chunks, IEND last; then inflates the image data
    in pieces that are counted and dropped, which must come to exactly the header's size.
    """
    if len(data) < 24 or not data.startswith(png.SIGNATURE) or data[12:16] != b"IHDR":
        return "it returned an image that is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    if width * height > max_pixels or 0 in (width, height):
        return f"it returned an image of {width}x{height} pixels, over the limit"
    if len(data) < 33:
        return "it returned a truncated PNG"
    depth, colour, _, _, interlace = data[24:29]
    if colour not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16) or interlace not in (0, 1):
        return "it returned a PNG with an invalid header"
    if interlace:
        return "it returned an interlaced PNG; save it without interlacing"
    pixels: list[memoryview] = []
    try:
        for offset, kind, body in png.chunks(data):
            if kind == b"IHDR" and offset != len(png.SIGNATURE):
                return "it returned a PNG with more than one header"
            if kind in (b"acTL", b"fcTL", b"fdAT"):
                return "it returned an animated PNG"
            if kind == b"IDAT":
                pixels.append(body)
    except png.PngStructureError as error:
        return f"it returned {error}"
    expected = height * (1 + (width * _PNG_CHANNELS[colour] * depth + 7) // 8)
    if _inflated_size(pixels, expected) != expected:
        return "it returned a PNG whose image data does not match its size"
    return None


def _inflated_size(pieces: list[memoryview], limit: int) -> int | None:
    """Bytes the zlib stream in ``pieces`` inflates to, counted 1 MiB at a time and never
    past ``limit + 1``; None when it is damaged or does not end."""
    decoder, total = zlib.decompressobj(), 0
    try:
        for piece in pieces:
            chunk = decoder.decompress(piece, 1 << 20)
            while True:
                total += len(chunk)
                if total > limit or not decoder.unconsumed_tail:
                    break
                chunk = decoder.decompress(decoder.unconsumed_tail, 1 << 20)
            if total > limit:
                return total
        total += len(decoder.flush())
    except zlib.error:
        return None
    return total if decoder.eof else None


def _death_reason(returncode: int | None, limits: SandboxLimits, protection: str) -> str:
    signum = None
    if returncode is not None and returncode < 0:
        signum = -returncode
    elif returncode is not None and returncode > 128 and protection == "bubblewrap":
        signum = returncode - 128  # bwrap reports a child killed by signal N as 128 + N
    if signum == signal.SIGXCPU:
        return (
            f"The code used more than {limits.cpu_s:g} s of CPU time and was stopped. Do less "
            "work per call."
        )
    if signum == signal.SIGKILL:
        return (
            "The code's process was killed, most likely for exceeding a limit (CPU time "
            f"{limits.cpu_s:g} s, memory {format_size(limits.memory_bytes)})."
        )
    if signum == signal.SIGXFSZ:
        largest = format_size(limits.scratch_bytes)
        return f"The code wrote a file larger than {largest} and was stopped."
    if signum is not None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        return f"The code's process crashed (signal {name})."
    if returncode is None:
        return "The code's process stopped responding and was killed."
    return (
        f"The code ended its process (exit status {returncode}) before the results were sent; "
        "do not call os._exit() or kill the process."
    )


def format_size(count: int) -> str:
    """A byte count for people: '1 GiB', '256 MiB'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} bytes"


__all__ = [
    "PROTECTIONS",
    "Sandbox",
    "SandboxConfig",
    "SandboxLimits",
    "SandboxOutcome",
    "format_size",
]
