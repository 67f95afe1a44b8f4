"""The project's environment is the committed lock: every package `requirements.lock` pins is
installed at exactly that version (`make setup` installs nothing else from the index)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.lock

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
WORKER_LOCK = ROOT / "infra" / "dataflow" / "requirements.lock"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)", re.MULTILINE)


def pins(lock: Path = LOCK) -> dict[str, str]:
    return {m["name"]: m["version"] for m in PIN.finditer(lock.read_text())}


def test_the_lock_pins_the_runtime_and_the_servers_stack() -> None:
    pinned = pins()
    for name in ("apache-beam", "numpy", "torch", "tritonclient", "nvidia-pytriton", "pytest"):
        assert name in pinned, name
    assert pinned["numpy"].startswith("1."), "the Triton Python backend needs numpy<2"


def test_every_pinned_package_is_installed_at_its_pinned_version() -> None:
    wrong = {}
    for name, version in pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"installed differs from requirements.lock (pinned, installed): {wrong}"


def test_the_worker_image_installs_the_same_versions_on_the_locked_beam_sdk() -> None:
    pinned, worker = pins(), pins(WORKER_LOCK)
    assert "apache-beam" in worker and "google-cloud-storage" in worker
    assert {n: v for n, v in worker.items() if pinned.get(n) != v} == {}
    dockerfile = (ROOT / "infra" / "dataflow" / "Dockerfile").read_text()
    assert f"ARG BEAM_VERSION={pinned['apache-beam']}\n" in dockerfile
