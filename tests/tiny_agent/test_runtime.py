"""The tiny model's processor and runtime on a random-initialised model (no weights needed)."""

import pytest
import torch
from PIL import Image

from tiny_agent.chat import ChatProcessor, train_tokenizer
from tiny_agent.model import TinyVLM, TinyVLMConfig
from tiny_agent.runtime import SamplingSettings, TinyRuntime, save_checkpoint

TEXTS = [
    "<think>zoom in</think><tool_call>{}</tool_call>",
    "<think>done</think><answer>B</answer>",
    "What character is inside the red circle?",
    "system\n",
    "user\n",
    "assistant\n",
]


@pytest.fixture(scope="module")
def runtime() -> TinyRuntime:
    torch.manual_seed(0)
    processor = ChatProcessor(train_tokenizer(TEXTS * 20, 300), grid=8, image_side=128)
    config = TinyVLMConfig(
        vocab_size=processor.tokenizer.get_vocab_size(),
        image_token_id=processor.image_id,
        d_model=32,
        n_layers=2,
        n_heads=2,
        d_expert=32,
        vision_channels=(8, 8, 16, 16),
    )
    return TinyRuntime(TinyVLM(config), processor)


def chat(text: str = "What character is inside the red circle?") -> list[dict]:
    image = Image.new("RGB", (128, 128), (200, 30, 30))
    return [
        {"role": "system", "content": "system prompt"},
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": text}],
        },
    ]


def test_render_marks_only_assistant_turns_as_targets(runtime):
    messages = [*chat(), {"role": "assistant", "content": "<think>done</think><answer>B</answer>"}]
    rendered = runtime.processor.render(messages, add_generation_prompt=False)
    target_ids = [i for i, t in zip(rendered.ids, rendered.targets, strict=True) if t]
    assert runtime.processor.decode(target_ids) == "<think>done</think><answer>B</answer>"
    assert rendered.ids.count(runtime.processor.image_id) == 64
    assert len(rendered.image_parts) == 1


def test_seed_reproduces_a_sample_whatever_the_batch(runtime):
    sampling = SamplingSettings(max_tokens=12, temperature=1.0, seed=42)
    alone = runtime.generate([(chat(), sampling)])[0]
    other = SamplingSettings(max_tokens=5, temperature=1.0, seed=7)
    batched = runtime.generate([(chat("user"), other), (chat(), sampling)])[1]
    assert alone.text == batched.text
    assert alone.completion_tokens == 12 and alone.finish_reason == "length"


def test_stop_string_ends_generation_and_is_kept(runtime):
    greedy = runtime.generate([(chat(), SamplingSettings(max_tokens=40))])[0]
    assert len(greedy.text) > 2
    stop = greedy.text[1:3]
    stopped = runtime.generate([(chat(), SamplingSettings(max_tokens=40, stop=(stop,)))])[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text.endswith(stop) and stopped.text == greedy.text[: greedy.text.find(stop) + 2]


def test_usage_counts_real_tokens(runtime):
    out = runtime.generate([(chat(), SamplingSettings(max_tokens=3))])[0]
    rendered = runtime.processor.render(chat(), add_generation_prompt=True)
    assert out.prompt_tokens == len(rendered.ids)
    assert out.completion_tokens == 3


def test_checkpoint_round_trip(runtime, tmp_path):
    save_checkpoint(runtime.model, runtime.processor, tmp_path)
    loaded = TinyRuntime.load(tmp_path)
    assert loaded.model.config == runtime.model.config
    original = runtime.model.state_dict()
    for name, value in loaded.model.state_dict().items():
        # Weights are stored in half precision and computed in float32.
        assert value.dtype == original[name].dtype
        torch.testing.assert_close(value, original[name], atol=1e-3, rtol=1e-3)
    out = loaded.generate([(chat(), SamplingSettings(max_tokens=8))])[0]
    assert out.completion_tokens == 8
