"""Loading the tiny model from a checkpoint folder and generating for a batch of chats.

A checkpoint folder holds `config.json`, `model.safetensors` and `tokenizer.json`. Requests
decode together in a `RunningBatch` with a KV cache, one token per step: requests that arrive
together are prefilled as one left-padded group and join the running rows between steps, and a
request leaves as soon as it stops (continuous batching). Each request has its own sampling
settings, random generator (so a seed reproduces a sample whatever else is in the batch) and
stop strings.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tiny_agent.chat import ChatProcessor, Rendered, image_from_part
from tiny_agent.model import TinyVLM, TinyVLMConfig, attention_mask


@dataclass(frozen=True)
class SamplingSettings:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


def save_checkpoint(model: TinyVLM, processor: ChatProcessor, directory: Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Half precision halves the committed file; the runtime computes in float32 after loading.
    state = {
        k: (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    processor.tokenizer.save(str(directory / "tokenizer.json"))


class TinyRuntime:
    """The tiny model ready to generate; `load` a checkpoint folder or wrap a training model."""

    def __init__(self, model: TinyVLM, processor: ChatProcessor):
        self.model = model.eval()
        self.processor = processor
        self.name = "tiny-moe-vlm"

    @classmethod
    def load(cls, directory: Path, threads: int | None = None) -> TinyRuntime:
        directory = Path(directory)
        if threads:
            torch.set_num_threads(threads)
        config = TinyVLMConfig.from_dict(json.loads((directory / "config.json").read_text()))
        model = TinyVLM(config)
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        processor = ChatProcessor.load(directory, config.grid, config.image_side)
        return cls(model, processor)

    def generate(
        self, batch: Sequence[tuple[Sequence[dict], SamplingSettings]]
    ) -> list[Generation]:
        """Generate one assistant turn for each (messages, sampling) pair."""
        running = RunningBatch(self)
        prompts = [running.prepare(messages) for messages, _ in batch]
        running.admit(
            [
                (row, prompt, s)
                for row, (prompt, (_, s)) in enumerate(zip(prompts, batch, strict=True))
            ]
        )
        done: dict[Hashable, Generation] = {}
        while running:
            done.update(running.step())
        return [done[row] for row in range(len(batch))]


@dataclass
class _Row:
    key: Hashable
    settings: SamplingSettings
    generator: torch.Generator
    prompt_tokens: int
    budget: int
    outputs: list[int] = field(default_factory=list)
    text: str = ""


class RunningBatch:
    """Requests decoding together, one token each per `step`.

    `admit` prefills a group of requests as one left-padded batch and merges their KV caches
    into the running rows (the shorter side is left-padded, padding masked out); `step` samples
    a token for every row, hands back the rows that stopped (they leave the batch) and runs
    one decode step for the rest. Not thread-safe: one scheduler thread drives it.
    """

    def __init__(self, runtime: TinyRuntime) -> None:
        self.model = runtime.model
        self.processor = runtime.processor
        self.rows: list[_Row] = []
        self._caches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._valid = torch.zeros(0, 0, dtype=torch.bool)  # (rows, keys): real tokens
        self._positions = torch.zeros(0, dtype=torch.long)  # each row's next position
        self._logits = torch.zeros(0, 0)  # each row's next-token logits

    def __len__(self) -> int:
        return len(self.rows)

    def prepare(self, messages: Sequence[dict]) -> Rendered:
        """The rendered prompt; raises ValueError when it does not fit the context."""
        rendered = self.processor.render(messages, add_generation_prompt=True)
        limit = self.model.config.max_positions
        if len(rendered.ids) >= limit:
            raise ValueError(f"prompt of {len(rendered.ids)} tokens exceeds the context of {limit}")
        return rendered

    @torch.inference_mode()
    def admit(self, group: Sequence[tuple[Hashable, Rendered, SamplingSettings]]) -> None:
        """Prefill `group` (key, prepared prompt, sampling) and add it to the running rows."""
        if not group:
            return
        width = max(len(r.ids) for _, r, _ in group)
        pad = self.processor.pad_id
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        valid = torch.zeros(len(group), width, dtype=torch.bool)
        for row, (_, r, _) in enumerate(group):
            ids[row, width - len(r.ids) :] = torch.tensor(r.ids)
            valid[row, width - len(r.ids) :] = True
        images = [image_from_part(part) for _, r, _ in group for part in r.image_parts]
        visual = None
        if images:
            visual = self.model.encode_images(self.processor.pixels(images))
        x = self.model.embed_inputs(ids, visual)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        logits, _, caches, *_ = self.model(x, positions, attention_mask(valid, width))

        limit = self.model.config.max_positions
        rows = []
        for key, r, settings in group:
            generator = torch.Generator()
            if settings.seed is None:
                generator.seed()
            else:
                generator.manual_seed(settings.seed)
            budget = min(settings.max_tokens, limit - len(r.ids))
            rows.append(_Row(key, settings, generator, len(r.ids), budget))
        if not self.rows:
            self._caches, self._valid = caches, valid
            self._positions, self._logits = positions[:, -1] + 1, logits[:, -1, :]
        else:
            keys = max(self._valid.shape[1], width)
            self._caches = [
                (
                    torch.cat([_left_pad(k0, keys, 2), _left_pad(k1, keys, 2)]),
                    torch.cat([_left_pad(v0, keys, 2), _left_pad(v1, keys, 2)]),
                )
                for (k0, v0), (k1, v1) in zip(self._caches, caches, strict=True)
            ]
            self._valid = torch.cat([_left_pad(self._valid, keys, 1), _left_pad(valid, keys, 1)])
            self._positions = torch.cat([self._positions, positions[:, -1] + 1])
            self._logits = torch.cat([self._logits, logits[:, -1, :]])
        self.rows.extend(rows)

    @torch.inference_mode()
    def step(self) -> list[tuple[Hashable, Generation]]:
        """Sample one token for every row; the rows that stop leave with their generation."""
        finished: list[tuple[Hashable, Generation]] = []
        keep: list[int] = []
        tokens: list[int] = []
        for index, row in enumerate(self.rows):
            token = self._sample(self._logits[index], row.settings, row.generator)
            reason = self._append(row, token)
            if reason is None:
                keep.append(index)
                tokens.append(token)
            else:
                generation = Generation(row.text, reason, row.prompt_tokens, len(row.outputs))
                finished.append((row.key, generation))
        if finished:
            self._keep(keep)
        if self.rows:
            self._valid = torch.cat(
                [self._valid, torch.ones(len(self.rows), 1, dtype=torch.bool)], dim=1
            )
            step_x = self.model.embed(torch.tensor(tokens, dtype=torch.long)[:, None])
            logits, _, self._caches, *_ = self.model(
                step_x, self._positions[:, None], attention_mask(self._valid, 1), self._caches
            )
            self._logits = logits[:, -1, :]
            self._positions = self._positions + 1
        return finished

    def clear(self) -> list[Hashable]:
        """Drop every row (after a failed step); returns their keys."""
        keys = [row.key for row in self.rows]
        self._keep([])
        return keys

    def _keep(self, indices: list[int]) -> None:
        """Keep only the rows at `indices`, and drop key columns no kept row uses."""
        self.rows = [self.rows[i] for i in indices]
        select = torch.tensor(indices, dtype=torch.long)
        valid = self._valid[select]
        used = valid.any(0).nonzero()
        start = int(used[0]) if len(used) else valid.shape[1]
        self._valid = valid[:, start:]
        self._caches = [(k[select, :, start:], v[select, :, start:]) for k, v in self._caches]
        self._positions = self._positions[select]
        self._logits = self._logits[select]

    def _append(self, row: _Row, token: int) -> str | None:
        """Record a sampled token; return a finish reason once the row is done."""
        row.outputs.append(token)
        if token == self.processor.end_id:
            row.outputs.pop()
            row.text = self.processor.decode(row.outputs)
            return "stop"
        text = self.processor.decode(row.outputs)
        for stop in row.settings.stop:
            cut = text.find(stop)
            if cut >= 0:
                row.text = text[: cut + len(stop)]
                return "stop"
        row.text = text
        return "length" if len(row.outputs) >= row.budget else None

    @staticmethod
    def _sample(
        logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator
    ) -> int:
        if settings.temperature <= 0:
            return int(logits.argmax())
        probs = (logits.float() / settings.temperature).softmax(-1)
        if settings.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < settings.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=generator))


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """`tensor` padded with zeros (False) at the start of `dim` to `length`."""
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
