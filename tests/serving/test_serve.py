"""The launcher without starting a server: installation discovery, the backend folder, the
command line and environment, repository staging, and the CLI's argument parsing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from beam_pipelines.__main__ import build_parser
from beam_pipelines.serve import (
    TritonInstallation,
    TritonServer,
    TritonStartupError,
    stage_model_repository,
)

from .support import MODEL_DIR


def test_installation_is_found_with_binary_libraries_and_stub() -> None:
    installation = TritonInstallation.find()
    assert installation.binary.is_file()
    assert installation.library_dir.is_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert installation.stub(version).is_file()


def test_backend_directory_holds_the_stub_beside_the_backend(tmp_path: Path) -> None:
    installation = TritonInstallation.find()
    backend = installation.backend_directory(tmp_path)
    python = backend / "python"
    assert (python / "libtriton_python.so").is_file()
    assert (python / "triton_python_backend_utils.py").is_file()
    assert (python / "triton_python_backend_stub").stat().st_mode & 0o111
    # Built once: a second call reuses it.
    assert installation.backend_directory(tmp_path) == backend
    assert [p.name for p in tmp_path.iterdir()] == [backend.name]


def test_command_line_binds_loopback_and_loads_one_model(tmp_path: Path) -> None:
    server = TritonServer(MODEL_DIR.parent, model_config_name="hf", metrics=True)
    server._ports = {"http": 1001, "grpc": 1002, "metrics": 1003}
    installation = TritonInstallation.find()
    command = server.command(installation, tmp_path)
    assert command[0] == str(installation.binary)
    for flag in (
        f"--model-repository={MODEL_DIR.parent}",
        f"--backend-directory={tmp_path}",
        "--model-control-mode=explicit",
        "--load-model=agent_vlm",
        "--model-config-name=hf",
        "--http-address=127.0.0.1",
        "--http-port=1001",
        "--grpc-address=127.0.0.1",
        "--grpc-port=1002",
        "--allow-metrics=true",
        "--metrics-address=127.0.0.1",
        "--metrics-port=1003",
    ):
        assert flag in command
    assert server.grpc_url == "127.0.0.1:1002"
    assert server.http_url == "127.0.0.1:1001"
    assert server.metrics_url == "http://127.0.0.1:1003/metrics"


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    server = TritonServer(MODEL_DIR.parent)
    server._ports = {"http": 1, "grpc": 2}
    assert "--allow-metrics=false" in server.command(TritonInstallation.find(), tmp_path)
    with pytest.raises(RuntimeError, match="no metrics port"):
        _ = server.metrics_url


def test_environment_puts_this_python_first(tmp_path: Path) -> None:
    installation = TritonInstallation.find()
    env = TritonServer(MODEL_DIR.parent, env={"OMP_NUM_THREADS": "1"})._environment(installation)
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert str(installation.library_dir) in env["LD_LIBRARY_PATH"].split(":")
    assert env["OMP_NUM_THREADS"] == "1"


def test_addresses_before_start_are_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = TritonServer().grpc_url


def test_missing_config_fails_before_launching(tmp_path: Path) -> None:
    with pytest.raises(TritonStartupError, match=r"configs/nope\.pbtxt"):
        TritonServer(MODEL_DIR.parent, model_config_name="nope").start()


def test_stage_model_repository_overrides_parameters_and_kind(tmp_path: Path) -> None:
    repository = stage_model_repository(
        tmp_path / "repo",
        model_config_name="hf",
        parameters={"checkpoint": "/ckpt", "extra": "1"},
        instance_kind="KIND_CPU",
        max_batch_size=4,
    )
    model = repository / "agent_vlm"
    config = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.parameters["checkpoint"].string_value == "/ckpt"
    assert config.parameters["extra"].string_value == "1"
    assert config.parameters["engine"].string_value == "hf"  # kept from configs/hf.pbtxt
    assert [(g.kind, list(g.gpus)) for g in config.instance_group] == [
        (model_config_pb2.ModelInstanceGroup.KIND_CPU, [])
    ]
    assert config.max_batch_size == 4
    assert (model / "1").resolve() == (MODEL_DIR / "1").resolve()
    assert not (model / "configs").exists()


def test_cli_serve_arguments() -> None:
    args = build_parser().parse_args(
        ["serve", "--model-config-name", "hf", "--param", "checkpoint=/c", "--metrics"]
    )
    assert args.command == "serve"
    assert args.model_config_name == "hf"
    assert args.param == ["checkpoint=/c"]
    assert args.metrics
    assert args.model_repository == MODEL_DIR.parent


def test_cli_requires_a_command() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_cli_rejects_a_malformed_param(capsys: pytest.CaptureFixture[str]) -> None:
    from beam_pipelines.__main__ import main

    assert main(["serve", "--param", "no-equals-sign"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
