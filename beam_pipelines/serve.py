"""Launcher for the local Triton server that serves `agent_vlm` (docs/formats.md has its contract).

Runs the real `tritonserver` binary shipped in the `nvidia-pytriton` wheel: it prepares a
Python-backend directory with the stub for the running interpreter, puts the wheel's bundled
libraries and this interpreter's `libpython` on `LD_LIBRARY_PATH` and this environment's `bin/`
first on `PATH` (the stub finds packages through the first `python3` there), binds 127.0.0.1 on
free ports, loads one model explicitly, logs to a file, and waits until the model is ready.

    with TritonServer() as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

Startup failures raise `TritonStartupError` with the tail of the server log. The server never
outlives the process that started it, however that process ends (see `TritonServer`).
`stage_model_repository` derives a one-model repository from a deployment config with some
parameters changed (another checkpoint, CPU instead of GPU) without editing the project's files.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "triton_repo"
DEFAULT_MODEL_NAME = "agent_vlm"
HOST = "127.0.0.1"
LOG_TAIL_LINES = 40
#: The watchdog that leads each server's process group (see `TritonServer`): it waits for
#: end-of-file on the pipe whose write end only the launching process holds, then kills its
#: own process group. The launcher never writes, so only the launcher's end closing wakes it.
WATCHDOG = "import os, signal, sys; os.read(int(sys.argv[1]), 1); os.kill(0, signal.SIGKILL)"


class TritonStartupError(RuntimeError):
    """The server exited or did not become ready; the message ends with the log tail."""


@dataclass(frozen=True)
class TritonInstallation:
    """Where the `nvidia-pytriton` wheel keeps the server, its libraries and backend."""

    server_dir: Path

    @classmethod
    def find(cls) -> TritonInstallation:
        """Locate the wheel without importing it (its import pulls in much more than needed)."""
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonStartupError(
                "nvidia-pytriton is not installed; install the [serve] extra: "
                "pip install -e '.[serve]'"
            )
        server_dir = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
        if not (server_dir / "bin" / "tritonserver").exists():
            raise TritonStartupError(f"no tritonserver binary under {server_dir}")
        return cls(server_dir=server_dir)

    @property
    def binary(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    @property
    def library_dir(self) -> Path:
        """The wheel's bundled shared libraries (`nvidia_pytriton.libs`, beside `pytriton/`)."""
        return self.server_dir.parent.parent / "nvidia_pytriton.libs"

    def stub(self, python_version: str) -> Path:
        return (
            self.server_dir / "python_backend_stubs" / python_version / "triton_python_backend_stub"
        )

    def backend_directory(self, cache_dir: Path | None = None) -> Path:
        """A backend folder whose `python/` holds the backend and the stub for this Python.

        Built once per wheel and Python version, atomically, under the cache directory.
        """
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.stub(version)
        if not stub.exists():
            raise TritonStartupError(f"the wheel has no Python backend stub for Python {version}")
        key = hashlib.sha256(f"{self.server_dir}:{version}".encode()).hexdigest()[:16]
        root = (cache_dir or _default_cache_dir()) / f"triton-backends-{key}"
        if (root / "python" / "triton_python_backend_stub").exists():
            return root
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root.parent))
        try:
            shutil.copytree(self.server_dir / "backends" / "python", staging / "python")
            shutil.copy2(stub, staging / "python" / "triton_python_backend_stub")
            try:
                staging.rename(root)
            except OSError:  # another process built it first
                if not (root / "python" / "triton_python_backend_stub").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return root


class TritonServer:
    """A `tritonserver` process serving one model on 127.0.0.1; a context manager.

    The server runs in a process group led by a small watchdog process that holds the read
    end of a pipe; this process holds the write end. However this process ends (SIGKILL
    included), the kernel closes that end, and the watchdog kills the whole group: the server
    and its backend stubs. `stop` is the orderly path and kills the watchdog with the group.
    A child forked without exec holds the write end too, so the server then lives until that
    child has also exited.

    Args:
        model_repository: the Triton model repository (default: this project's `triton_repo`).
        model_name: the model loaded explicitly at startup.
        model_config_name: a deployment under `<model>/configs/<name>.pbtxt`; None uses
            `<model>/config.pbtxt`.
        log_file: where server output goes (default: a file in a temporary directory).
        startup_timeout_s: how long to wait for the model to become ready.
        metrics: serve Prometheus metrics on a free loopback port (`metrics_url`).
        env: extra environment variables for the server (e.g. `OMP_NUM_THREADS`).
        cache_dir: where the backend folder is prepared (default `~/.cache/beam-agentic-vlm`).
        extra_args: further `tritonserver` flags, appended as given.
    """

    def __init__(
        self,
        model_repository: Path | str = DEFAULT_MODEL_REPOSITORY,
        *,
        model_name: str = DEFAULT_MODEL_NAME,
        model_config_name: str | None = None,
        log_file: Path | str | None = None,
        startup_timeout_s: float = 300.0,
        metrics: bool = False,
        env: Mapping[str, str] | None = None,
        cache_dir: Path | str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.model_name = model_name
        self.model_config_name = model_config_name
        self.log_file = Path(log_file).resolve() if log_file else None
        self.startup_timeout_s = startup_timeout_s
        self.metrics = metrics
        self.env = dict(env or {})
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_fd: int | None = None
        self._ports: dict[str, int] = {}

    # -- addresses -------------------------------------------------------------------------

    @property
    def grpc_url(self) -> str:
        """`host:port` of the gRPC endpoint, as `tritonclient.grpc` expects it."""
        return f"{HOST}:{self._port('grpc')}"

    @property
    def http_url(self) -> str:
        """`host:port` of the HTTP endpoint, as `tritonclient.http` expects it."""
        return f"{HOST}:{self._port('http')}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics endpoint (only with `metrics=True`)."""
        return f"http://{HOST}:{self._port('metrics')}/metrics"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> TritonServer:
        """Start the server and wait for the model; raise `TritonStartupError` on failure."""
        if self.running:
            return self
        self._check_repository()
        if self.log_file is None:
            self.log_file = Path(tempfile.mkdtemp(prefix="tritonserver-")) / "tritonserver.log"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        installation = TritonInstallation.find()
        backend_dir = installation.backend_directory(self.cache_dir)
        # A free port can be taken by someone else before the server binds it; try again.
        for attempt in range(3):
            self._ports = _free_ports(3 if self.metrics else 2, ("http", "grpc", "metrics"))
            self._launch(installation, backend_dir)
            try:
                self._wait_ready()
                return self
            except TritonStartupError as exc:
                self.stop()
                if attempt == 2 or "already in use" not in str(exc):
                    raise
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL (the whole process group, stubs and watchdog included) after
        `timeout_s`."""
        process, self._process = self._process, None
        watchdog, self._watchdog = self._watchdog, None
        if process is None or watchdog is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout_s)
        # The watchdog leads the server's group: this also reaps orphaned backend stubs.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(watchdog.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            watchdog.wait(timeout=10)
        self._close_watchdog_fd()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the server log."""
        if self.log_file is None or not self.log_file.exists():
            return ""
        text = self.log_file.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def command(self, installation: TritonInstallation, backend_dir: Path) -> list[str]:
        """The `tritonserver` command line for the current ports."""
        args = [
            str(installation.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            "--model-control-mode=explicit",
            f"--load-model={self.model_name}",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--http-address={HOST}",
            f"--http-port={self._ports['http']}",
            f"--grpc-address={HOST}",
            f"--grpc-port={self._ports['grpc']}",
        ]
        if self.model_config_name:
            args.append(f"--model-config-name={self.model_config_name}")
        if self.metrics:
            args += [
                "--allow-metrics=true",
                "--allow-gpu-metrics=false",
                f"--metrics-address={HOST}",
                f"--metrics-port={self._ports['metrics']}",
            ]
        else:
            args.append("--allow-metrics=false")
        return args + list(self.extra_args)

    # -- internals -------------------------------------------------------------------------

    def _check_repository(self) -> None:
        model_dir = self.model_repository / self.model_name
        config = (
            model_dir / "configs" / f"{self.model_config_name}.pbtxt"
            if self.model_config_name
            else model_dir / "config.pbtxt"
        )
        if not config.exists():
            raise TritonStartupError(f"model config not found: {config}")

    def _environment(self, installation: TritonInstallation) -> dict[str, str]:
        env = {**os.environ, **self.env}
        # The stub embeds libpython and finds site-packages via the first python3 on PATH.
        env_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join(p for p in (env_bin, env.get("PATH", "")) if p)
        # The stub links libpython3.11 dynamically; give it this interpreter's own, or it takes
        # the system's, whose older ABI breaks this interpreter's extension modules (_ssl).
        libraries = [str(installation.library_dir)]
        if sysconfig.get_config_var("Py_ENABLE_SHARED"):
            libraries.insert(0, str(sysconfig.get_config_var("LIBDIR")))
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (*libraries, env.get("LD_LIBRARY_PATH", "")) if p
        )
        return env

    def _launch(self, installation: TritonInstallation, backend_dir: Path) -> None:
        assert self.log_file is not None
        # The watchdog first, so that no moment exists where the server runs unguarded.
        read_fd, self._watchdog_fd = os.pipe()
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", WATCHDOG, str(read_fd)],
                stdin=subprocess.DEVNULL,
                pass_fds=(read_fd,),
                process_group=0,  # its own group, out of reach of signals to ours
            )
        except OSError:
            self._close_watchdog_fd()
            raise
        finally:
            os.close(read_fd)
        try:
            with self.log_file.open("ab") as log:
                self._process = subprocess.Popen(
                    self.command(installation, backend_dir),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._environment(installation),
                    process_group=self._watchdog.pid,
                )
        except OSError:
            self._close_watchdog_fd()  # end-of-file: the watchdog ends its group, itself alone
            self._watchdog.wait()
            self._watchdog = None
            raise

    def _close_watchdog_fd(self) -> None:
        fd, self._watchdog_fd = self._watchdog_fd, None
        if fd is not None:
            os.close(fd)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        base = f"http://{self.http_url}/v2"
        while time.monotonic() < deadline:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise TritonStartupError(self._failure(f"tritonserver exited with code {code}"))
            if _http_ok(f"{base}/health/ready") and _http_ok(
                f"{base}/models/{self.model_name}/ready"
            ):
                return
            time.sleep(0.25)
        raise TritonStartupError(
            self._failure(
                f"model {self.model_name!r} not ready after {self.startup_timeout_s:.0f}s"
            )
        )

    def _failure(self, reason: str) -> str:
        return f"{reason} (log: {self.log_file})\n--- log tail ---\n{self.log_tail()}"

    def _port(self, name: str) -> int:
        if name not in self._ports:
            raise RuntimeError(f"the server has no {name} port (not started, or {name} disabled)")
        return self._ports[name]


def stage_model_repository(
    destination: Path | str,
    *,
    source: Path | str = DEFAULT_MODEL_REPOSITORY,
    model_name: str = DEFAULT_MODEL_NAME,
    model_config_name: str | None = None,
    parameters: Mapping[str, str] | None = None,
    instance_kind: str | None = None,
    max_batch_size: int | None = None,
) -> Path:
    """Write a repository holding `model_name` with a derived `config.pbtxt`; returns it.

    The config is the source model's `config.pbtxt` (or `configs/<model_config_name>.pbtxt`)
    with `parameters` set, and optionally every instance group moved to `instance_kind`
    (`KIND_CPU` or `KIND_GPU`) and `max_batch_size` changed. Every other entry of the source
    model directory (the code in `1/`, checkpoints) is symlinked, so relative checkpoint paths
    keep working and the served code is the project's own.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    source_dir = Path(source).resolve() / model_name
    config_path = (
        source_dir / "configs" / f"{model_config_name}.pbtxt"
        if model_config_name
        else source_dir / "config.pbtxt"
    )
    if not config_path.exists():
        raise FileNotFoundError(f"model config not found: {config_path}")
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    if instance_kind is not None:
        kind = model_config_pb2.ModelInstanceGroup.Kind.Value(instance_kind)
        for group in config.instance_group:
            group.kind = kind
            if kind != model_config_pb2.ModelInstanceGroup.KIND_GPU:
                del group.gpus[:]
    if max_batch_size is not None:
        config.max_batch_size = max_batch_size
    _state_image_budget(config, source_dir)

    model_dir = Path(destination) / model_name
    model_dir.mkdir(parents=True, exist_ok=False)
    for entry in source_dir.iterdir():
        if entry.name not in ("config.pbtxt", "configs", "__pycache__"):
            (model_dir / entry.name).symlink_to(entry)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    return Path(destination)


def _state_image_budget(config: Any, model_dir: Path) -> None:
    """Copy the checkpoint's image budget into `config` unless it states one (the model's own
    `1/budget.py` reads it; clients size their views by it, and the model refuses to load
    without it). A checkpoint not readable here (not fetched yet) is left to that refusal."""
    spec = importlib.util.spec_from_file_location("agent_vlm_budget", model_dir / "1" / "budget.py")
    if spec is None or spec.loader is None:
        return
    budget = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = budget  # its dataclass looks its module up while it is defined
    spec.loader.exec_module(budget)
    if any(key in config.parameters for key in budget.KEYS):
        return
    engine = config.parameters["engine"].string_value
    checkpoint = Path(config.parameters["checkpoint"].string_value).expanduser()
    try:
        stated = budget.checkpoint_budget(engine, model_dir / checkpoint)
    except budget.BudgetError as e:
        log.warning("the staged config states no image budget: %s", e)
        return
    for key, value in stated.parameters().items():
        config.parameters[key].string_value = value


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _free_ports(count: int, names: Sequence[str]) -> dict[str, int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return {name: sock.getsockname()[1] for name, sock in zip(names, sockets, strict=False)}
    finally:
        for sock in sockets:
            sock.close()


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "beam-agentic-vlm"
