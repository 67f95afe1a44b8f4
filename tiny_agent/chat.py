"""The tiny model's processor: tokenizer, chat template and image preprocessing.

The template is Qwen's ChatML (`<|im_start|>role\\n … <|im_end|>\\n`); every image part becomes
`grid²` copies of the `<|image|>` token, which the model replaces with the image's visual
tokens. The tokenizer is a byte-level BPE trained on the task's own texts with the `tokenizers`
library, so any text still encodes (bytes are the fallback); words, punctuation and digits
are split before BPE.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

IMAGE_TOKEN = "<|image|>"
PAD_TOKEN = "<|pad|>"
START_TOKEN = "<|im_start|>"
END_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (IMAGE_TOKEN, PAD_TOKEN, START_TOKEN, END_TOKEN)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    # Words and punctuation stay apart (GPT-2's split) and numbers are read digit by digit, so
    # an option's word, a letter or a coordinate is always the same few tokens wherever it is.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


@dataclass(frozen=True)
class Rendered:
    """A conversation as token ids, its image parts in order, and which ids the loss covers."""

    ids: list[int]
    image_parts: list[dict]
    targets: list[bool]


def image_from_part(part: dict) -> Image.Image:
    """The PIL image of an OpenAI image part (a PIL image already, or a data: URL)."""
    value = part.get("image")
    if isinstance(value, Image.Image):
        return value
    url = part["image_url"]["url"] if "image_url" in part else value
    if isinstance(url, Image.Image):
        return url
    if not isinstance(url, str) or not url.startswith("data:"):
        raise ValueError("image parts must carry a data: URL")
    payload = url.split(",", 1)[1]
    with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
        return image.convert("RGB")


class ChatProcessor:
    """Turns OpenAI chat messages into model inputs, and pixels into tensors."""

    def __init__(self, tokenizer: Tokenizer, grid: int, image_side: int):
        self.tokenizer = tokenizer
        self.grid = grid
        self.image_side = image_side
        self.image_id = tokenizer.token_to_id(IMAGE_TOKEN)
        self.pad_id = tokenizer.token_to_id(PAD_TOKEN)
        self.start_id = tokenizer.token_to_id(START_TOKEN)
        self.end_id = tokenizer.token_to_id(END_TOKEN)

    @classmethod
    def load(cls, directory: Path, grid: int, image_side: int) -> ChatProcessor:
        return cls(Tokenizer.from_file(str(Path(directory) / "tokenizer.json")), grid, image_side)

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def render(self, messages: Sequence[dict], add_generation_prompt: bool) -> Rendered:
        ids: list[int] = []
        targets: list[bool] = []
        image_parts: list[dict] = []

        def add(new: list[int], target: bool) -> None:
            ids.extend(new)
            targets.extend([target] * len(new))

        for message in messages:
            role = message["role"]
            is_assistant = role == "assistant"
            add([self.start_id, *self.encode_text(f"{role}\n")], False)
            content = message.get("content") or ""
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for part in parts:
                if part.get("type") == "text":
                    add(self.encode_text(part["text"]), is_assistant)
                else:
                    image_parts.append(part)
                    add([self.image_id] * (self.grid * self.grid), False)
            add([self.end_id], is_assistant)
            add(self.encode_text("\n"), False)
        if add_generation_prompt:
            add([self.start_id, *self.encode_text("assistant\n")], False)
        return Rendered(ids, image_parts, targets)

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, 3, side, side) floats in [0, 1]; views of another size are resized to fit."""
        side = self.image_side
        arrays = []
        for image in images:
            rgb = image.convert("RGB")
            if rgb.size != (side, side):
                rgb = rgb.resize((side, side), Image.Resampling.BICUBIC)
            arrays.append(np.asarray(rgb, dtype=np.uint8))
        if not arrays:
            return torch.zeros(0, 3, side, side)
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
