"""Model configs and their parameters: every config in `triton_repo` is a valid Triton
`ModelConfig` with the contract's tensors, and engine settings are validated."""

from __future__ import annotations

from pathlib import Path

import pytest
from engines import (
    ENGINES,
    ConfigError,
    Instance,
    ServingConfig,
    parse_bool,
    parse_int,
    resolve_path,
    take_parameters,
)
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from .support import MODEL_DIR

CONFIGS = sorted([MODEL_DIR / "config.pbtxt", *MODEL_DIR.glob("configs/*.pbtxt")])
STRING = model_config_pb2.DataType.Value("TYPE_STRING")


def _load(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_keeps_the_tensor_contract(path: Path) -> None:
    config = _load(path)
    assert config.name == "agent_vlm"
    assert config.backend == "python"
    assert config.max_batch_size >= 1
    assert config.HasField("dynamic_batching")
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("messages", STRING, [1]),
        ("sampling", STRING, [1]),
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("text", STRING, [1]),
        ("finish_reason", STRING, [1]),
        ("usage", STRING, [1]),
    ]
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    assert ServingConfig.from_parameters(parameters).engine in ENGINES


def test_the_default_config_is_the_tiny_model_on_cpu() -> None:
    config = _load(MODEL_DIR / "config.pbtxt")
    assert config.parameters["engine"].string_value == "tiny"
    assert config.parameters["checkpoint"].string_value == "tiny"
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]


def test_the_hf_config_is_bf16_on_gpu() -> None:
    config = _load(MODEL_DIR / "configs" / "hf.pbtxt")
    assert config.parameters["engine"].string_value == "hf"
    assert config.parameters["dtype"].string_value == "bfloat16"
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_engine_parameters_are_known_to_the_engine(path: Path) -> None:
    import importlib

    parameters = {k: v.string_value for k, v in _load(path).parameters.items()}
    config = ServingConfig.from_parameters(parameters)
    module = importlib.import_module(ENGINES[config.engine])
    take_parameters(config.engine_parameters, module.DEFAULTS, config.engine)


def test_serving_config_splits_limits_from_engine_parameters() -> None:
    config = ServingConfig.from_parameters(
        {"engine": "hf", "checkpoint": "x", "max_tokens_limit": "64", "max_image_pixels": "100"}
    )
    assert config.engine == "hf"
    assert config.limits.max_tokens == 64
    assert config.limits.max_image_pixels == 100
    assert dict(config.engine_parameters) == {"checkpoint": "x"}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({}, "parameter 'engine' must be one of"),
        ({"engine": "vllm"}, "got 'vllm'"),
        ({"engine": "hf", "max_tokens_limit": "many"}, "must be an integer"),
        ({"engine": "hf", "max_tokens_limit": "0"}, "must be >= 1"),
    ],
)
def test_serving_config_rejects(parameters: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServingConfig.from_parameters(parameters)


def test_unknown_engine_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"does not know parameters \['chekpoint'\]"):
        take_parameters({"chekpoint": "x"}, {"checkpoint": ""}, "hf")
    assert take_parameters({"checkpoint": "x"}, {"checkpoint": "", "device": "auto"}, "hf") == {
        "checkpoint": "x",
        "device": "auto",
    }


def test_checkpoint_paths_are_relative_to_the_model_directory(tmp_path: Path) -> None:
    assert resolve_path("tiny", tmp_path) == (tmp_path / "tiny").resolve()
    assert resolve_path("/abs/ckpt", tmp_path) == Path("/abs/ckpt")
    with pytest.raises(ConfigError, match="'checkpoint' is required"):
        resolve_path("", tmp_path)


def test_scalar_parameters() -> None:
    assert parse_int("3", "k", minimum=0) == 3
    assert parse_bool("True", "k") is True
    assert parse_bool("no", "k") is False
    with pytest.raises(ConfigError, match="true or false"):
        parse_bool("maybe", "k")


def test_instance_device() -> None:
    assert Instance().torch_device() == "cpu"
    assert Instance("GPU", 1).torch_device() == "cuda:1"
