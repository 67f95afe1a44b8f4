"""`runs/<run_id>/manifest.json`: what a run was asked to do, with what, and what it did.

Written twice: when the run starts (status `running`, so a killed run still says what it
was) and when it ends (status, counts, end time).
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from typing import Any

from beam_pipelines.io.files import write_bytes
from beam_pipelines.outputs.layout import OutputLayout

_PACKAGES = (
    "beam-agentic-vlm",
    "apache-beam",
    "tritonclient",
    "pyarrow",
    "pillow",
    "numpy",
    "nvidia-pytriton",
)


def versions() -> dict[str, str]:
    """Python, platform and the versions of the packages that shape the outputs."""
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_manifest(layout: OutputLayout, manifest: dict[str, Any]) -> str:
    """Write (or overwrite) the run's manifest; returns its path."""
    data = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode("utf-8")
    write_bytes(layout.manifest, data + b"\n")
    return layout.manifest
