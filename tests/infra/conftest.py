"""Infra test fixtures: the `agent_vlm` model code on `sys.path`, infra scripts as modules.

`infra/` itself must not go on `sys.path`: its `triton/` folder would then import as a
namespace package named `triton`, shadowing the compiler that torch probes for, and every
later test that imports torch's optional Triton support would break.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_CODE = REPO_ROOT / "triton_repo" / "agent_vlm" / "1"
if str(MODEL_CODE) not in sys.path:
    sys.path.insert(0, str(MODEL_CODE))

for name, path in (
    ("render_config", REPO_ROOT / "infra" / "render_config.py"),
    ("fetch_model", REPO_ROOT / "infra" / "triton" / "fetch_model.py"),
):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
