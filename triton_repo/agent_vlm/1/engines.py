"""Serving settings from a model config's `parameters`, and the engine registry.

A deployment is chosen entirely by `config.pbtxt` parameters: `engine` names the backend and
the other keys are either common limits (below) or that engine's own settings, which each
engine's `from_parameters` validates (unknown keys are refused, so a typo in a config fails
the model load instead of being silently ignored).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from budget import KEYS as BUDGET_KEYS
from budget import BudgetError, ImageBudget, check_stated
from contract import (
    DEFAULT_MAX_IMAGE_PIXELS,
    BatchScheduler,
    InFlightEngine,
    Limits,
    png_bytes_bound,
)

# engine name -> module (beside this file) with `from_parameters(model_dir, params, instance)`.
ENGINES: dict[str, str] = {
    "tiny": "engine_tiny",
    "hf": "engine_hf",
    "trtllm": "engine_trtllm",
}
_LIMIT_KEYS = {
    "max_tokens_limit": "max_tokens",
    "max_image_pixels": "max_image_pixels",
    "max_image_bytes": "max_image_bytes",
}


class ConfigError(ValueError):
    """A model config whose parameters are invalid."""


@dataclass(frozen=True)
class Instance:
    """Where Triton placed this model instance (`KIND_CPU` or `KIND_GPU` and its device)."""

    kind: str = "CPU"
    device_id: int = 0

    def torch_device(self) -> str:
        """The torch device string for this instance."""
        return f"cuda:{self.device_id}" if self.kind == "GPU" else "cpu"


@dataclass(frozen=True)
class ServingConfig:
    """The parsed parameters: engine name, request limits, the image budget the config
    states (`budget.py`), the engine's own settings."""

    engine: str
    limits: Limits = field(default_factory=Limits)
    engine_parameters: Mapping[str, str] = field(default_factory=dict)
    budget_parameters: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> ServingConfig:
        """Split flat config parameters into common settings and engine settings."""
        params = dict(parameters)
        engine = params.pop("engine", "")
        if engine not in ENGINES:
            raise ConfigError(
                f"parameter 'engine' must be one of {sorted(ENGINES)}, got {engine!r}"
            )
        limit_values: dict[str, int] = {}
        for key, attribute in _LIMIT_KEYS.items():
            if key in params:
                limit_values[attribute] = parse_int(params.pop(key), key, minimum=1)
        if "max_image_bytes" not in limit_values:
            pixels = limit_values.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)
            limit_values["max_image_bytes"] = png_bytes_bound(pixels)
        budget = {key: params.pop(key) for key in BUDGET_KEYS if key in params}
        return cls(
            engine=engine,
            limits=Limits(**limit_values),
            engine_parameters=params,
            budget_parameters=budget,
        )

    def image_budget(self, model_dir: Path) -> ImageBudget:
        """The budget the config states, checked against the checkpoint's processor."""
        checkpoint = resolve_path(self.engine_parameters.get("checkpoint", ""), model_dir)
        try:
            return check_stated(self.budget_parameters, self.engine, checkpoint)
        except BudgetError as e:
            raise ConfigError(str(e)) from None


def build_engine(
    config: ServingConfig, model_dir: Path, instance: Instance = Instance(), max_batch: int = 16
) -> InFlightEngine:
    """Import the configured engine's module and build the engine from its parameters; an
    engine that generates whole batches is fed by a `BatchScheduler` of `max_batch`."""
    module = importlib.import_module(ENGINES[config.engine])
    engine = module.from_parameters(model_dir, config.engine_parameters, instance)
    if isinstance(engine, InFlightEngine):
        return engine
    return BatchScheduler(engine, max_batch)


def take_parameters(
    parameters: Mapping[str, str], defaults: Mapping[str, str], engine: str
) -> dict[str, str]:
    """Merge `parameters` over `defaults`, refusing keys the engine does not know."""
    unknown = sorted(set(parameters) - set(defaults))
    if unknown:
        raise ConfigError(
            f"engine {engine!r} does not know parameters {unknown}; known: {sorted(defaults)}"
        )
    return {**defaults, **parameters}


def resolve_path(value: str, model_dir: Path) -> Path:
    """A checkpoint path: absolute, or relative to the model's directory in the repository."""
    if not value:
        raise ConfigError("parameter 'checkpoint' is required")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (model_dir / path).resolve()


def parse_int(value: str, key: str, minimum: int | None = None) -> int:
    """An integer parameter, with a readable error."""
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"parameter {key!r} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"parameter {key!r} must be >= {minimum}, got {number}")
    return number


def parse_bool(value: str, key: str) -> bool:
    """A boolean parameter (`true`/`false`, `1`/`0`, `yes`/`no`)."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ConfigError(f"parameter {key!r} must be true or false, got {value!r}")
