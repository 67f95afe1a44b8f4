"""Write a random-initialised, very small Qwen3-VL-MoE checkpoint that the `hf` engine loads.

Tests and the serving benchmark need a real transformers checkpoint directory (config, weights,
tokenizer, image processor, chat template) without a model hub. This builds one from scratch:
a byte-level BPE tokenizer trained on a few lines of text with the Qwen-VL special tokens, the
PIL Qwen2-VL image processor, a ChatML chat template that understands image parts, and
`Qwen3VLMoeForConditionalGeneration` at toy size (two layers, hidden 64, four experts, top 2).
Its output is random text; it exists to exercise the serving path, not to answer anything.

    python triton_repo/agent_vlm/1/random_checkpoint.py /tmp/tiny-qwen3-vl-moe
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# ChatML, as the Qwen-VL family renders it: each image part becomes one image pad that the
# processor expands to the image's number of visual tokens. The newlines are expressions:
# `{%-` would strip a literal one before it.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or part['type'] == 'image_url' -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_CORPUS = [
    "<think>The marker is small; I should zoom in before answering.</think>",
    '<tool_call>{"name": "code", "arguments": {"code": "crop = image.crop((10, 20, 60, 70))'
    '\\nsave_image(crop.resize((128, 128)))"}}</tool_call>',
    "<observation>The sub-image shows the letter B inside a red circle.</observation>",
    "<answer>B</answer> What character is inside the blue square? Options: A. 7 B. K C. Q D. 2",
    "Answer the user's question based on the provided image. Here are some tools you can use.",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789",
    ".,;:!?'\"()[]{}<>/\\|-_=+*&^%$#@~`",
]


def build_tokenizer(vocab_size: int = 384) -> object:
    """A byte-level BPE tokenizer with the Qwen-VL special tokens, as a transformers tokenizer.

    Its alphabet is the printable ASCII of the corpus, so every token decodes to ASCII text;
    characters outside it are dropped at encoding (acceptable for a random test model).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )


def build_image_processor(max_pixels: int = 128 * 128) -> object:
    """Qwen2-VL image processor, PIL backend (patch 16, merge 2, at most `max_pixels`)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    return Qwen2VLImageProcessorPil(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        size={"shortest_edge": 32 * 32, "longest_edge": max_pixels},
    )


def build_model(tokenizer: object, seed: int = 0) -> object:
    """`Qwen3VLMoeForConditionalGeneration` at toy size, initialised from `seed`."""
    import torch
    from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    def token_id(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))  # type: ignore[attr-defined]

    head_dim = 16
    config = Qwen3VLMoeConfig(
        text_config={
            "vocab_size": len(tokenizer),  # type: ignore[arg-type]
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": head_dim,
            "moe_intermediate_size": 32,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "decoder_sparse_step": 1,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],  # sums to head_dim / 2
                "mrope_interleaved": True,
            },
            "pad_token_id": token_id("<|endoftext|>"),
            "eos_token_id": token_id("<|im_end|>"),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [1],
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen3VLMoeForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = token_id("<|endoftext|>")
    model.generation_config.eos_token_id = token_id("<|im_end|>")
    return model


def write_checkpoint(directory: Path | str, seed: int = 0) -> Path:
    """Write tokenizer, image processor, chat template and the random model; returns the dir.

    The files are those of a Qwen3-VL checkpoint (`processor_config.json` names
    `Qwen3VLProcessor`), so `AutoProcessor` loads it where torchvision is installed; without
    torchvision the `hf` engine assembles the same inputs from the tokenizer and image
    processor (see `engine_hf`).
    """
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE  # type: ignore[attr-defined]
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
    build_image_processor().save_pretrained(directory)  # type: ignore[attr-defined]
    Qwen3VLVideoProcessor().save_pretrained(directory)
    (directory / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    (directory / "processor_config.json").write_text(
        json.dumps({"processor_class": "Qwen3VLProcessor"}, indent=2) + "\n", encoding="utf-8"
    )
    build_model(tokenizer, seed=seed).save_pretrained(directory)  # type: ignore[attr-defined]
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_checkpoint(args.directory, seed=args.seed))


if __name__ == "__main__":
    main()
