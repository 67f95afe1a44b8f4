"""Loading the tiny model from a checkpoint folder and generating for a batch of chats.

A checkpoint folder holds `config.json`, `model.safetensors` and `tokenizer.json`. Requests
are prefilled as one left-padded batch and decoded together with a KV cache; each request has
its own sampling settings, random generator (so a seed reproduces a sample whatever else is in
the batch) and stop strings, and leaves the batch's active set when it stops.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tiny_agent.chat import ChatProcessor, image_from_part
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

    @torch.inference_mode()
    def generate(
        self, batch: Sequence[tuple[Sequence[dict], SamplingSettings]]
    ) -> list[Generation]:
        """Generate one assistant turn for each (messages, sampling) pair."""
        if not batch:
            return []
        rendered = [
            self.processor.render(messages, add_generation_prompt=True) for messages, _ in batch
        ]
        limit = self.model.config.max_positions
        prompt_lengths = [len(r.ids) for r in rendered]
        too_long = [n for n in prompt_lengths if n >= limit]
        if too_long:
            raise ValueError(f"prompt of {max(too_long)} tokens exceeds the context of {limit}")
        width = max(prompt_lengths)
        pad = self.processor.pad_id
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        valid = torch.zeros(len(batch), width, dtype=torch.bool)
        for row, r in enumerate(rendered):
            ids[row, width - len(r.ids) :] = torch.tensor(r.ids)
            valid[row, width - len(r.ids) :] = True
        images = [image_from_part(part) for r in rendered for part in r.image_parts]
        visual = None
        if images:
            visual = self.model.encode_images(self.processor.pixels(images))
        x = self.model.embed_inputs(ids, visual)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        logits, _, caches, *_ = self.model(x, positions, attention_mask(valid, width))

        settings = [s for _, s in batch]
        generators = []
        for s in settings:
            generator = torch.Generator()
            if s.seed is None:
                generator.seed()
            else:
                generator.manual_seed(s.seed)
            generators.append(generator)
        budgets = [
            min(s.max_tokens, limit - n) for s, n in zip(settings, prompt_lengths, strict=True)
        ]
        outputs: list[list[int]] = [[] for _ in batch]
        texts = [""] * len(batch)
        finished: list[str | None] = [None] * len(batch)
        next_logits = logits[:, -1, :]
        next_positions = positions[:, -1] + 1
        while True:
            tokens = torch.full((len(batch),), pad, dtype=torch.long)
            for row in range(len(batch)):
                if finished[row] is not None:
                    continue
                token = self._sample(next_logits[row], settings[row], generators[row])
                tokens[row] = token
                finished[row] = self._append(row, token, outputs, texts, settings, budgets)
            if all(f is not None for f in finished):
                break
            valid = torch.cat([valid, torch.ones(len(batch), 1, dtype=torch.bool)], dim=1)
            step_x = self.model.embed(tokens[:, None])
            logits, _, caches, *_ = self.model(
                step_x, next_positions[:, None], attention_mask(valid, 1), caches
            )
            next_logits = logits[:, -1, :]
            next_positions = next_positions + 1
        return [
            Generation(
                texts[row], finished[row] or "length", prompt_lengths[row], len(outputs[row])
            )
            for row in range(len(batch))
        ]

    def _append(
        self,
        row: int,
        token: int,
        outputs: list[list[int]],
        texts: list[str],
        settings: list[SamplingSettings],
        budgets: list[int],
    ) -> str | None:
        """Record a sampled token; return a finish reason once the row is done."""
        outputs[row].append(token)
        if token == self.processor.end_id:
            outputs[row].pop()
            texts[row] = self.processor.decode(outputs[row])
            return "stop"
        text = self.processor.decode(outputs[row])
        for stop in settings[row].stop:
            cut = text.find(stop)
            if cut >= 0:
                texts[row] = text[: cut + len(stop)]
                return "stop"
        texts[row] = text
        return "length" if len(outputs[row]) >= budgets[row] else None

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
