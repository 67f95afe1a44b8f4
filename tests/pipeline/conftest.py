"""Pipeline test fixtures: a real Triton server with the embedded model, corpora, and runs.

Integration tests run the real pipeline on the in-process runner against a real
`tritonserver` (the launcher in `beam_pipelines.serve`) serving the project's model
repository, i.e. the embedded tiny model. `PIPELINE_TEST_MODEL_REPOSITORY` points them at
another repository (for example one staged with the `hf` engine) when needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from beam_pipelines.serve import DEFAULT_MODEL_REPOSITORY, TritonServer

TINY_WEIGHTS = DEFAULT_MODEL_REPOSITORY / "agent_vlm" / "tiny"


def model_repository() -> Path:
    override = os.environ.get("PIPELINE_TEST_MODEL_REPOSITORY")
    if override:
        return Path(override)
    if not any(TINY_WEIGHTS.glob("*.safetensors")):
        pytest.skip(f"needs the tiny model's weights in {TINY_WEIGHTS}: make train-tiny")
    return DEFAULT_MODEL_REPOSITORY


def start_server(log_dir: Path) -> TritonServer:
    """A fresh server on free loopback ports (its caller stops it)."""
    return TritonServer(
        model_repository(), log_file=log_dir / "tritonserver.log", startup_timeout_s=300
    ).start()


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """One server for the session's pipeline tests that do not kill it."""
    server = start_server(tmp_path_factory.mktemp("triton"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic corpus (`beam_pipelines.synthetic`): the JSONL path; images beside it."""
    from beam_pipelines.synthetic import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus"), 16, seed=7)
