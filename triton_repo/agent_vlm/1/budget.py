"""The image budget a served model states: its processor's pixel limits and patch geometry.

A client must send each view already downscaled to what the model's processor will keep
(larger is wasted bytes, or a blind model when it guesses too small), so the model says it, in
its config's `parameters`: `min_pixels`, `max_pixels`, `patch_size`, `merge_size`. The numbers
are the checkpoint's own: `checkpoint_budget` reads them from a Hugging Face checkpoint's
`preprocessor_config.json` (`size.shortest_edge/longest_edge` in transformers 5,
`min_pixels/max_pixels` in older files) or the tiny model's `config.json` (one fixed square
view). `beam_pipelines serve` copies them into the config it stages, and the model refuses to
load when its config states none, or numbers its checkpoint does not have.

Plain Python (json only), so the launcher can read it without torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

#: The config parameters that state the budget.
KEYS = ("min_pixels", "max_pixels", "patch_size", "merge_size")


class BudgetError(ValueError):
    """A checkpoint whose budget cannot be read, or a config that states a wrong one."""


@dataclass(frozen=True)
class ImageBudget:
    min_pixels: int
    max_pixels: int
    patch_size: int
    merge_size: int

    def parameters(self) -> dict[str, str]:
        """As model config parameters (strings)."""
        return {key: str(value) for key, value in asdict(self).items()}

    @classmethod
    def stated(cls, parameters: Mapping[str, str]) -> ImageBudget | None:
        """The budget a config states; None when it states none. Partial or non-integer
        statements are errors."""
        present = [key for key in KEYS if key in parameters]
        if not present:
            return None
        missing = [key for key in KEYS if key not in parameters]
        if missing:
            raise BudgetError(f"the image budget needs every one of {KEYS}; missing {missing}")
        try:
            values = {key: int(parameters[key]) for key in KEYS}
        except ValueError:
            raise BudgetError(f"image budget parameters {KEYS} must be integers") from None
        budget = cls(**values)
        if not 0 < budget.min_pixels <= budget.max_pixels or budget.patch_size < 1:
            raise BudgetError(f"not a pixel budget: {budget}")
        return budget


def checkpoint_budget(engine: str, checkpoint: Path) -> ImageBudget:
    """What `checkpoint`'s own processor keeps of an image (see the module docstring)."""
    if engine == "tiny":
        config = _read(checkpoint / "config.json")
        side, grid = int(config["image_side"]), int(config["grid"])
        return ImageBudget(side * side, side * side, side // grid, 1)
    processor = _read(checkpoint / "preprocessor_config.json")
    size = processor.get("size") or {}
    low = size.get("shortest_edge", processor.get("min_pixels"))
    high = size.get("longest_edge", processor.get("max_pixels"))
    if low is None or high is None or "patch_size" not in processor:
        raise BudgetError(
            f"{checkpoint / 'preprocessor_config.json'} states no pixel limits "
            "(size.shortest_edge/longest_edge or min_pixels/max_pixels) and patch_size"
        )
    return ImageBudget(
        int(low), int(high), int(processor["patch_size"]), int(processor.get("merge_size", 1))
    )


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BudgetError(f"cannot read the image budget from {path}: {e}") from e


def check_stated(parameters: Mapping[str, str], engine: str, checkpoint: Path) -> ImageBudget:
    """The budget the config states, which must be the checkpoint's; else a `BudgetError`
    naming the parameters to set."""
    actual = checkpoint_budget(engine, checkpoint)
    stated = ImageBudget.stated(parameters)
    fix = ", ".join(f"{k}={v}" for k, v in actual.parameters().items())
    if stated is None:
        raise BudgetError(
            f"the config states no image budget; {checkpoint}'s processor has {fix}: set "
            "these parameters (`beam_pipelines serve` does it when it stages the config)"
        )
    if stated != actual:
        raise BudgetError(f"the config states {stated}, but {checkpoint}'s processor has {fix}")
    return stated


if __name__ == "__main__":
    # `python3 budget.py ENGINE CHECKPOINT`: the checkpoint's budget as KEY=VALUE lines, for
    # `infra/render_config.py --set` (the Triton container's entrypoint).
    import sys

    engine_name, checkpoint_dir = sys.argv[1:3]
    for key, value in checkpoint_budget(engine_name, Path(checkpoint_dir)).parameters().items():
        print(f"{key}={value}")
