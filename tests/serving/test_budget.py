"""The image budget a served model states (`1/budget.py`): read from the checkpoint, checked
against the config, copied into staged configs, and read back by the client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from budget import BudgetError, ImageBudget, check_stated, checkpoint_budget
from engines import ConfigError, ServingConfig

from beam_pipelines.model_client.base import ImageBudget as ClientBudget
from beam_pipelines.serve import stage_model_repository

from .support import MODEL_DIR

TINY = ImageBudget(16384, 16384, 16, 1)


def test_the_tiny_checkpoint_states_its_one_view() -> None:
    assert checkpoint_budget("tiny", MODEL_DIR / "tiny") == TINY


@pytest.mark.parametrize(
    "processor",
    [
        {
            "size": {"shortest_edge": 65536, "longest_edge": 16777216},
            "patch_size": 16,
            "merge_size": 2,
        },
        {"min_pixels": 65536, "max_pixels": 16777216, "patch_size": 16, "merge_size": 2},
    ],
    ids=["transformers-5", "older"],
)
def test_a_hf_checkpoint_states_its_processors_limits(tmp_path: Path, processor: dict) -> None:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    assert checkpoint_budget("hf", tmp_path) == ImageBudget(65536, 16777216, 16, 2)


def test_a_processor_without_limits_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"patch_size": 14}))
    with pytest.raises(BudgetError, match="no pixel limits"):
        checkpoint_budget("trtllm", tmp_path)


def test_a_config_must_state_the_checkpoints_budget() -> None:
    assert check_stated(TINY.parameters(), "tiny", MODEL_DIR / "tiny") == TINY
    with pytest.raises(BudgetError, match="min_pixels=16384, max_pixels=16384"):
        check_stated({}, "tiny", MODEL_DIR / "tiny")
    with pytest.raises(BudgetError, match="but"):
        check_stated({**TINY.parameters(), "max_pixels": "65536"}, "tiny", MODEL_DIR / "tiny")
    with pytest.raises(BudgetError, match="missing"):
        ImageBudget.stated({"max_pixels": "16384"})


def test_the_model_refuses_to_load_a_config_without_its_budget() -> None:
    config = ServingConfig.from_parameters({"engine": "tiny", "checkpoint": "tiny"})
    assert dict(config.engine_parameters) == {"checkpoint": "tiny"}
    with pytest.raises(ConfigError, match="states no image budget"):
        config.image_budget(MODEL_DIR)
    stated = ServingConfig.from_parameters(
        {"engine": "tiny", "checkpoint": "tiny", **TINY.parameters()}
    )
    assert stated.image_budget(MODEL_DIR) == TINY


def test_staging_states_the_checkpoints_budget_and_the_client_reads_it(tmp_path: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    def parse(path: Path) -> model_config_pb2.ModelConfig:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())

    source = tmp_path / "source" / "agent_vlm"
    source.mkdir(parents=True)
    config = parse(MODEL_DIR / "config.pbtxt")
    for key in TINY.parameters():
        del config.parameters[key]  # a config that states no budget
    (source / "config.pbtxt").write_text(text_format.MessageToString(config))
    for entry in ("1", "tiny"):
        (source / entry).symlink_to(MODEL_DIR / entry)

    staged = stage_model_repository(tmp_path / "staged", source=tmp_path / "source")
    parameters = {
        k: v.string_value
        for k, v in parse(staged / "agent_vlm" / "config.pbtxt").parameters.items()
    }
    assert ClientBudget.from_parameters(parameters) == ClientBudget(16384, 16384, 16, 1)
