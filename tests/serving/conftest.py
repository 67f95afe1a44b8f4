"""Serving test fixtures: the `agent_vlm` modules on `sys.path`, a random tiny Qwen3-VL-MoE
checkpoint, and one real Triton server for the whole session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

MODEL_CODE = Path(__file__).resolve().parents[2] / "triton_repo" / "agent_vlm" / "1"
sys.path.insert(0, str(MODEL_CODE))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-initialised tiny Qwen3-VL-MoE checkpoint written by the test session."""
    from random_checkpoint import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("tiny-qwen3-vl-moe"), seed=0)


@pytest.fixture(scope="session")
def hf_repository(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """A model repository serving the tiny checkpoint with the `hf` engine on CPU."""
    from beam_pipelines.serve import stage_model_repository

    return stage_model_repository(
        tmp_path_factory.mktemp("repo") / "models",
        model_config_name="hf",
        parameters={"checkpoint": str(tiny_checkpoint), "dtype": "float32", "device": "cpu"},
        instance_kind="KIND_CPU",
    )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, hf_repository: Path) -> Iterator[object]:
    """One real tritonserver serving `hf_repository`, started once per session."""
    from beam_pipelines.serve import TritonServer

    log_file = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    with TritonServer(hf_repository, log_file=log_file, startup_timeout_s=240) as running:
        yield running


@pytest.fixture(scope="session")
def client(server: object) -> Iterator[object]:
    """A gRPC client of the session's server."""
    import tritonclient.grpc as grpcclient

    connection = grpcclient.InferenceServerClient(server.grpc_url)  # type: ignore[attr-defined]
    yield connection
    connection.close()
