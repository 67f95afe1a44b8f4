"""SFT export: a kept trajectory as one JSONL row that fine-tuning tools load.

```json
{"id": "tiny-7-00003#2",
 "messages": [
   {"role": "system", "content": [{"type": "text", "text": "Answer the user's question ..."}]},
   {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "<view uri>"}},
                                {"type": "text", "text": "What character ...?\\nOptions: ..."}]},
   {"role": "assistant", "content": [{"type": "text", "text": "<think>...</think><tool_call>..."}]},
   {"role": "user", "content": [{"type": "text", "text": "<observation>...</observation>"},
                                {"type": "image_url", "image_url": {"url": "<view uri>"}}]},
   {"role": "assistant", "content": [{"type": "text", "text": "<think>...</think><answer>X..."}]}],
 "images": ["<view uri>", "<view uri>"],
 "answer": "X", "source_id": "tiny-7-00003", "sample": 2}
```

- `messages` are OpenAI chat messages whose `content` is always a list of parts (text parts,
  and `image_url` parts for images): one shape for every message, so Arrow-based loaders
  (`pyarrow.json`, Hugging Face `datasets`) infer one schema for the whole file.
- `images` lists the image URIs in the order their parts appear (what LLaMA-Factory and TRL
  style loaders pair with image placeholders). They are the **model views** the trajectory
  was generated with (content-addressed PNGs under the output root's `images/`).
- Assistant turns are the raw model text, tags included: training on them teaches the
  protocol (`<think>`, `<tool_call>`, `<answer>`), the observations are the user turns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from beam_pipelines.agent.records import Trajectory


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts = []
    for part in content or ():
        if part.get("type") == "image_url":
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]["url"]}})
        elif part.get("type") == "text":
            parts.append({"type": "text", "text": part.get("text", "")})
        else:
            raise ValueError(f"cannot export a message part of type {part.get('type')!r}")
    return parts


def sft_messages(messages: Any) -> list[dict[str, Any]]:
    """Trace messages as SFT messages: every `content` a list of text / image_url parts."""
    return [{"role": m["role"], "content": _parts(m.get("content"))} for m in messages]


def sft_record(traj: Trajectory) -> dict[str, Any]:
    """The SFT row of one finished trajectory (see the module docstring)."""
    messages = sft_messages(traj.messages)
    images = [
        part["image_url"]["url"]
        for message in messages
        for part in message["content"]
        if part["type"] == "image_url"
    ]
    meta: Mapping[str, Any] = traj.job.meta
    return {
        "id": traj.id,
        "messages": messages,
        "images": images,
        "answer": traj.final.answer if traj.final else None,
        "source_id": str(meta.get("source_id", traj.id)),
        "sample": int(meta.get("sample", 0)),
    }
