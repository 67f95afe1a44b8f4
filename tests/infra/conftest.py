"""Infra test fixtures: the `agent_vlm` model code and `infra/` on `sys.path`."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
for path in (
    REPO_ROOT / "triton_repo" / "agent_vlm" / "1",
    REPO_ROOT / "infra",
    REPO_ROOT / "infra" / "triton",
):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
