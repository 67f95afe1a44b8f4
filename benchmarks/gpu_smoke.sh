#!/usr/bin/env bash
# GPU smoke benchmark, for a machine with an NVIDIA GPU: serve agent_vlm with the hf engine on
# the GPU (a random tiny Qwen3-VL-MoE checkpoint made on the spot), drive synthetic agent jobs
# through it, and report output tokens/s and jobs/s; then the same with the trtllm engine when
# `tensorrt_llm` can be imported. Results: $OUT_DIR/gpu_smoke_<engine>.json (+ server logs).
#
#   benchmarks/gpu_smoke.sh                         # Python with the [serve] extra on PATH
#   SMOKE_WHEELS=.whl benchmarks/gpu_smoke.sh       # offline machine: see bootstrap below
#
# Environment: PYTHON (default python3), OUT_DIR (default benchmarks/results), JOBS (64),
# CONCURRENCY (32), MAX_TOKENS (128), MAX_TURNS (4), ENGINES ("hf trtllm"), CHECKPOINT (a
# checkpoint directory to serve instead of writing a random one).
#
# SMOKE_WHEELS=DIR bootstraps an offline machine whose system Python already has torch and
# transformers: a venv on top of that Python (its packages stay visible through a .pth file)
# gets the wheels in DIR (numpy<2, which the pytriton Python-backend stub needs, protobuf,
# grpcio, python-rapidjson, tritonclient) and, unpacked into its site-packages, the pytriton
# tritonserver tarball in DIR (pytriton-*.tar.xz: pytriton/tritonserver + nvidia_pytriton.libs).
# The stub's C++ side was built against NumPy 1 (with NumPy 2 it misreads every BYTES tensor),
# so the venv's numpy<2 shadows the system's NumPy 2; SciPy and scikit-learn builds that need
# NumPy 2 are then hidden (transformers imports them only when present; serving needs neither).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUT_DIR="${OUT_DIR:-$ROOT/benchmarks/results}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-smoke.XXXXXX")"
mkdir -p "$OUT_DIR"

bootstrap() {
  local wheels="$1" venv="$WORK/venv" base_site site
  base_site="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "$PYTHON" -m venv "$venv"
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$base_site" > "$site/base-python.pth"
  "$venv/bin/python" -m pip install -q --no-index --no-deps --no-compile "$wheels"/*.whl
  if compgen -G "$wheels/numpy-1.*.whl" >/dev/null; then
    echo 'import sys; [sys.modules.setdefault(m, None) for m in ("scipy", "sklearn")]' \
      > "$site/numpy1-hide-scipy.pth"
  fi
  for tarball in "$wheels"/pytriton-*.tar.xz; do
    tar -xJf "$tarball" -C "$site" --strip-components=1
  done
  PYTHON="$venv/bin/python"
}

if [[ -n "${SMOKE_WHEELS:-}" ]]; then
  bootstrap "$(cd "$SMOKE_WHEELS" && pwd)"
fi

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" - <<'EOF'
import importlib.util, platform
import numpy, torch, transformers
print(f"python {platform.python_version()}  torch {torch.__version__} (cuda {torch.version.cuda}, "
      f"available {torch.cuda.is_available()})  transformers {transformers.__version__}  "
      f"numpy {numpy.__version__}")
for name in ("pytriton", "tritonclient", "tensorrt_llm"):
    print(f"{name}: {'importable' if importlib.util.find_spec(name) else 'missing'}")
EOF

status=0
for engine in ${ENGINES:-hf trtllm}; do
  echo "== engine $engine"
  if [[ "$engine" == trtllm ]] && ! "$PYTHON" -c "import tensorrt_llm" >/dev/null 2>&1; then
    echo "gpu_smoke trtllm: skipped (tensorrt_llm cannot be imported here)"
    continue
  fi
  if ! PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" "$ROOT/benchmarks/gpu_smoke.py" \
      --engine "$engine" --work "$WORK/$engine" --out "$OUT_DIR/gpu_smoke_$engine.json" \
      --jobs "${JOBS:-64}" --concurrency "${CONCURRENCY:-32}" \
      --max-tokens "${MAX_TOKENS:-128}" --max-turns "${MAX_TURNS:-4}" \
      ${CHECKPOINT:+--checkpoint "$CHECKPOINT"}; then
    status=1
  fi
  cp "$WORK/$engine"/tritonserver-*.log "$OUT_DIR/" 2>/dev/null || true
done
exit "$status"
