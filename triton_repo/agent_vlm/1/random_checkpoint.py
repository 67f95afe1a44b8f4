"""Write random-initialised, very small Qwen3-VL-MoE checkpoints that the `hf` engine loads.

Tests and the serving benchmark need a real transformers checkpoint directory (config, weights,
tokenizer, image processor, chat template) without a model hub. Two shapes are built from
scratch; their weights are random and their layers tiny, so their output is random text: they
exist to exercise the serving path, not to answer anything.

- `write_checkpoint`, the toy: a byte-level BPE tokenizer trained on a few lines of text with
  the Qwen-VL special tokens at ids of its own, the PIL Qwen2-VL image processor at 128 x 128
  pixels, a ChatML chat template that understands image parts, and
  `Qwen3VLMoeForConditionalGeneration` at toy size (two layers, hidden 64, four experts, top 2).
- `write_real_shape_checkpoint`: everything the model receives is Qwen3-VL-30B-A3B-Instruct's
  own. Its `preprocessor_config.json` (16-px patches merged 2 x 2, 65,536 to 16,777,216
  pixels), `video_preprocessor_config.json` and `chat_template.json` are the checkpoint's
  published files, kept beside this module in `qwen3_vl_30b_a3b_instruct/` (sources below);
  its tokenizer is a `Qwen2Tokenizer` (Qwen's pre-tokenizer and byte-level BPE) whose 26 added
  tokens sit at their real ids 151643-151668 with their real `special` flags, the vocabulary
  before them being a few hundred BPE tokens trained here and padded with `<|reserved_N|>`
  placeholders; `config.json` has the real vocabulary size (151,936), special token ids,
  vision geometry (patch 16, spatial merge 2, temporal patch 2, 2,304 position embeddings) and
  interleaved M-RoPE, with tiny layers; `generation_config.json` has the real EOS list. It is
  the test checkpoint for what a Qwen3-VL-30B-A3B deployment (R1V4's architecture) sees:
  views at the real pixel budget, prompts rendered by the real template.

Sources of the real shape: the Hugging Face model repository `Qwen/Qwen3-VL-30B-A3B-Instruct`
(https://huggingface.co/Qwen/Qwen3-VL-30B-A3B-Instruct, branch `main`). No model hub is
reachable from here, so no revision hash could be read; each file was reproduced from
independent copies that agree, and checked against the sizes the Qwen3-VL repositories list:

- `chat_template.json` (`.../blob/main/chat_template.json`): the template text byte for byte
  (5,292 bytes, 120 lines, sha256
  3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4): identical in two copies
  that state they reproduce the Qwen3-VL Instruct template (NVIDIA's tao-vl-reason dataset
  code, "byte-identical to the chat templates shipped with ... Qwen/Qwen3-VL-8B-Instruct", and
  the `qwen3-vl-instruct` entry of a chat-template registry), opening as model pages quote the
  30B-A3B checkpoint's template, and of the sizes Qwen3-VL repositories list
  (`chat_template.json` 5.5 kB; `chat_template.jinja` 5.29 kB, 120 lines). Only the JSON
  wrapper's formatting is ours.
- `preprocessor_config.json` and `video_preprocessor_config.json`
  (`.../blob/main/preprocessor_config.json`): byte for byte (390 and 385 bytes, as listed).
- The added tokens: `tokenizer_config.json`'s `added_tokens_decoder`, the Qwen3 family's
  (ids 151643-151656 special; `<tool_call>`, `</tool_call>`, the FIM tokens,
  `<tool_response>`, `</tool_response>`, `<think>`, `</think>` not special).
- `config.json`: `image_token_id` 151655, `video_token_id` 151656, `vision_start_token_id`
  151652, `vision_end_token_id` 151653, `text_config.vocab_size` 151936, `tie_word_embeddings`
  false (transformers' `Qwen3VLMoeConfig` defaults are the same); `generation_config.json`:
  EOS [151645, 151643], pad and BOS 151643, sampling 0.7 / top_k 20 / top_p 0.8.

    python triton_repo/agent_vlm/1/random_checkpoint.py /tmp/tiny-qwen3-vl-moe
    python triton_repo/agent_vlm/1/random_checkpoint.py --real-shape /tmp/qwen3-vl-real-shape
"""

from __future__ import annotations

import argparse
import json
import shutil
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


# --------------------------------------------------------------------------------------------
# The real shape of Qwen3-VL-30B-A3B-Instruct (module docstring)

#: The checkpoint's published processor files and chat template, kept as data.
QWEN3_VL_FILES = Path(__file__).resolve().parent / "qwen3_vl_30b_a3b_instruct"
QWEN3_VL_COPIED = (
    "chat_template.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
)
#: Qwen3-VL's added tokens in id order from `QWEN3_VL_FIRST_ADDED_ID`: (content, special).
QWEN3_VL_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
QWEN3_VL_FIRST_ADDED_ID = 151643
#: `text_config.vocab_size`: embedding rows, more than the tokenizer's 151,669 tokens.
QWEN3_VL_VOCAB_SIZE = 151936


def qwen3_vl_token_id(content: str) -> int:
    """The real id of one of Qwen3-VL's added tokens."""
    names = [name for name, _ in QWEN3_VL_ADDED_TOKENS]
    return QWEN3_VL_FIRST_ADDED_ID + names.index(content)


def write_qwen3_vl_tokenizer(directory: Path, trained_vocab: int = 512) -> None:
    """`tokenizer.json` and `tokenizer_config.json` of a `Qwen2Tokenizer` with Qwen3-VL's added
    tokens at their real ids (module docstring). transformers loads it as it loads the real
    one: the vocabulary and merges from `tokenizer.json`, the added tokens from the config."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=trained_vocab,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text encodes
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    spec = json.loads(tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    vocab.update({f"<|reserved_{i}|>": i for i in range(len(vocab), QWEN3_VL_FIRST_ADDED_ID)})
    padded = Tokenizer.from_str(json.dumps(spec))
    padded.add_tokens(
        [
            AddedToken(content, special=special, normalized=False)
            for content, special in QWEN3_VL_ADDED_TOKENS
        ]
    )
    padded.save(str(directory / "tokenizer.json"))
    added = {
        str(qwen3_vl_token_id(content)): {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for content, special in QWEN3_VL_ADDED_TOKENS
    }
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [
            content for content, special in QWEN3_VL_ADDED_TOKENS[1:] if special
        ],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 262144,
        "pad_token": "<|endoftext|>",
        "processor_class": "Qwen3VLProcessor",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (directory / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2) + "\n", encoding="utf-8"
    )


def build_real_shape_model(seed: int = 0) -> object:
    """`Qwen3VLMoeForConditionalGeneration` with Qwen3-VL-30B-A3B's vocabulary, token ids,
    vision geometry and M-RoPE layout, tiny layers, initialised from `seed`."""
    import torch
    from transformers import GenerationConfig, Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

    head_dim = 16
    config = Qwen3VLMoeConfig(
        text_config={
            "vocab_size": QWEN3_VL_VOCAB_SIZE,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": head_dim,
            "moe_intermediate_size": 16,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "decoder_sparse_step": 1,
            "max_position_embeddings": 262144,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [2, 3, 3],  # sums to head_dim / 2, as [24, 20, 20] does to 64
                "mrope_interleaved": True,
            },
            "bos_token_id": qwen3_vl_token_id("<|endoftext|>"),
            "eos_token_id": qwen3_vl_token_id("<|im_end|>"),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 32,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [1],
        },
        image_token_id=qwen3_vl_token_id("<|image_pad|>"),
        video_token_id=qwen3_vl_token_id("<|video_pad|>"),
        vision_start_token_id=qwen3_vl_token_id("<|vision_start|>"),
        vision_end_token_id=qwen3_vl_token_id("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen3VLMoeForConditionalGeneration(config).eval().to(torch.bfloat16)
    end_of_text = qwen3_vl_token_id("<|endoftext|>")
    model.generation_config = GenerationConfig(
        bos_token_id=end_of_text,
        pad_token_id=end_of_text,
        eos_token_id=[qwen3_vl_token_id("<|im_end|>"), end_of_text],
        do_sample=True,
        temperature=0.7,
        top_k=20,
        top_p=0.8,
    )
    return model


def write_real_shape_checkpoint(directory: Path | str, seed: int = 0) -> Path:
    """Write the real-shape checkpoint (module docstring) into `directory`; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in QWEN3_VL_COPIED:
        shutil.copyfile(QWEN3_VL_FILES / name, directory / name)
    write_qwen3_vl_tokenizer(directory)
    build_real_shape_model(seed).save_pretrained(directory)  # type: ignore[attr-defined]
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--real-shape",
        action="store_true",
        help="Qwen3-VL-30B-A3B-Instruct's processor, tokens and chat template, tiny layers",
    )
    args = parser.parse_args()
    write = write_real_shape_checkpoint if args.real_shape else write_checkpoint
    print(write(args.directory, seed=args.seed))


if __name__ == "__main__":
    main()
