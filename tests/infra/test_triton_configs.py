"""Deployment configs: the committed TensorRT-LLM config is exactly its template rendered with
the default values, every values variant renders to a valid Triton `ModelConfig` whose engine
settings the `trtllm` engine accepts, and the template cannot drift from the engine.

(`tests/serving/test_configs.py` checks the tensor contract of every config in `triton_repo`.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from budget import KEYS as BUDGET_KEYS
from engine_trtllm import DEFAULTS, llm_settings
from engines import ServingConfig
from google.protobuf import text_format
from render_config import load_values, placeholders, render
from tritonclient.grpc import model_config_pb2

from .conftest import REPO_ROOT

TEMPLATES = REPO_ROOT / "infra" / "triton" / "templates"
VALUES = REPO_ROOT / "infra" / "triton" / "values"
MODEL_DIR = REPO_ROOT / "triton_repo" / "agent_vlm"
DEFAULT_VARIANT = {"skywork_r1v4_trtllm": "h100x1-bf16"}
VARIANTS = sorted(VALUES.glob("*/*.json"))


def _parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _render(values_file: Path) -> str:
    template = TEMPLATES / f"{values_file.parent.name}.pbtxt"
    return render(template.read_text(), load_values([values_file]))


def test_every_template_has_values_and_a_default() -> None:
    names = {path.stem for path in TEMPLATES.glob("*.pbtxt")}
    assert names == set(DEFAULT_VARIANT)
    assert {path.parent.name for path in VARIANTS} == names


@pytest.mark.parametrize("name", sorted(DEFAULT_VARIANT))
def test_committed_config_is_the_rendered_default(name: str) -> None:
    values = VALUES / name / f"{DEFAULT_VARIANT[name]}.json"
    committed = (MODEL_DIR / "configs" / f"{name}.pbtxt").read_text()
    assert committed == _render(values), (
        f"configs/{name}.pbtxt is out of date: python infra/render_config.py "
        f"infra/triton/templates/{name}.pbtxt --values {values.relative_to(REPO_ROOT)} "
        f"-o triton_repo/agent_vlm/configs/{name}.pbtxt"
    )


@pytest.mark.parametrize("values_file", VARIANTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_variant_renders_a_valid_trtllm_config(values_file: Path) -> None:
    config = _parse(_render(values_file))
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    serving = ServingConfig.from_parameters(parameters)
    assert serving.engine == "trtllm"
    settings = llm_settings(serving.engine_parameters, MODEL_DIR)
    # Triton's batch is one LLM.generate call: it must not exceed the executor's batch.
    assert config.max_batch_size == settings.llm["max_batch_size"]
    assert settings.kv_cache["enable_block_reuse"] is True
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert json.loads(values_file.read_text())["variant"] == values_file.stem


def test_template_sets_only_engine_parameters_the_engine_knows() -> None:
    config = _parse(_render(VALUES / "skywork_r1v4_trtllm" / "h100x1-bf16.json"))
    common = {"engine", "max_tokens_limit", "max_image_pixels", *BUDGET_KEYS}
    assert set(config.parameters) - common <= set(DEFAULTS)
    assert set(BUDGET_KEYS) <= placeholders((TEMPLATES / "skywork_r1v4_trtllm.pbtxt").read_text())
    # Everything deployment-specific is a placeholder, not a constant of the template.
    template = (TEMPLATES / "skywork_r1v4_trtllm.pbtxt").read_text()
    assert {"checkpoint", "tensor_parallel_size", "moe_expert_parallel_size", "quantization"} <= (
        placeholders(template)
    )
