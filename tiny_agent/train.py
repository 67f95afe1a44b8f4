"""Train the tiny MoE agent from a seed (`make train-tiny`).

One joint stage, shaped by what TINY_MODEL.md measured:
- the tower is convolutional with batch norm and gets its own supervision from step one
  (auxiliary heads: per view cell, the colour, shape and offset of the marker centred there;
  per crop cell, the character centred there), so it never collapses to an image-independent
  offset while the decoder is still learning the answer prior;
- crops are tight (the glyph is a quarter of the sub-image) and jittered like the model's own
  localisation errors;
- the language loss covers only the assistant turns.

Resumable: the dataset, the tokenizer and a checkpoint every `--save-every` steps live in
`--work`; rerunning the same command continues. A learning-curve log (JSONL) and the final
weights (safetensors, config, tokenizer) are written to `--out`. Progress is shown with rich.
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from beam_pipelines.agent.images import model_view
from beam_pipelines.agent.records import parse_choice
from tiny_agent import task
from tiny_agent.chat import SPECIAL_TOKENS, ChatProcessor, train_tokenizer
from tiny_agent.data import (
    CROP_HALF,
    VIEW_PIXELS,
    Dataset,
    build_dataset,
    conversation,
    from_fraction,
)
from tiny_agent.model import TinyVLM, TinyVLMConfig, attention_mask, cosine_lr, parameter_count
from tiny_agent.runtime import SamplingSettings, TinyRuntime, save_checkpoint

console = Console()
VOCAB_SIZE = 1024


def _texts(conversations: list[list[dict]]):
    for messages in conversations:
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                yield content
            else:
                yield from (part["text"] for part in content if part.get("type") == "text")
    yield from (f"{role}\n" for role in ("system", "user", "assistant"))


def load_or_build(
    work: Path, images: int, seed: int, workers: int = 2
) -> tuple[Dataset, ChatProcessor, list]:
    data_path = work / "dataset.pkl"
    if data_path.exists():
        dataset = pickle.loads(data_path.read_bytes())
    else:
        started = time.time()
        with console.status(f"rendering {images} training scenes"):
            dataset = build_dataset(images, seed, workers)
        data_path.write_bytes(pickle.dumps(dataset))
        console.log(f"built {len(dataset.examples)} examples in {time.time() - started:.0f}s")
    conversations = [conversation(e.question, e.tools_on) for e in dataset.examples]
    tokenizer_path = work / "tokenizer.json"
    if tokenizer_path.exists():
        processor = ChatProcessor.load(work, grid=8, image_side=128)
    else:
        tokenizer = train_tokenizer(_texts(conversations), VOCAB_SIZE)
        processor = ChatProcessor(tokenizer, grid=8, image_side=128)
        processor.tokenizer.save(str(tokenizer_path))
    encoded = [processor.render(m, add_generation_prompt=False) for m in conversations]
    return dataset, processor, encoded


def system_length(rendered) -> int:
    """Tokens of the system turn: the prefix every conversation of one tool mode shares."""
    return rendered.ids.index(rendered.ids[0], 1)


def make_batch(
    indices: list[int], dataset: Dataset, encoded: list, processor: ChatProcessor
) -> dict[str, torch.Tensor]:
    """A batch of conversations sharing one system prompt, which is sent once as `prefix`.

    Every conversation of a tool mode starts with the same system turn, so the decoder runs it
    once per batch and the rest of each conversation attends to its cached keys and values:
    the same computation as running each row whole, at a fraction of the cost.
    """
    cut = system_length(encoded[indices[0]])
    prefix = encoded[indices[0]].ids[:cut]
    assert all(encoded[i].ids[:cut] == prefix for i in indices), "one system prompt per batch"
    width = max(len(encoded[i].ids) for i in indices) - cut
    ids = torch.full((len(indices), width), processor.pad_id, dtype=torch.long)
    targets = torch.zeros(len(indices), width, dtype=torch.bool)
    valid = torch.zeros(len(indices), width, dtype=torch.bool)
    views, crops, order = [], [], []
    for row, index in enumerate(indices):
        rendered, example = encoded[index], dataset.examples[index]
        n = len(rendered.ids) - cut
        ids[row, :n] = torch.tensor(rendered.ids[cut:])
        targets[row, :n] = torch.tensor(rendered.targets[cut:])
        valid[row, :n] = True
        order.append(("view", len(views)))
        views.append(example.view)
        if example.crop >= 0:
            order.append(("crop", len(crops)))
            crops.append(example.crop)

    def pixels(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255.0

    return {
        "prefix": torch.tensor(prefix),
        "ids": ids,
        "targets": targets,
        "valid": valid,
        "views": pixels(dataset.views[views]),
        "view_targets": torch.from_numpy(dataset.global_targets[views]),
        "crops": pixels(dataset.crops[crops]) if crops else torch.zeros(0, 3, 128, 128),
        "crop_chars": torch.from_numpy(dataset.crop_chars[crops]).reshape(-1, 4),
        "order": torch.tensor([0 if kind == "view" else 1 for kind, _ in order]),
    }


def tag_words(processor: ChatProcessor) -> dict[str, list[int]]:
    """Token ids of the words the tag heads name: colours, shapes, characters (in head order)."""

    def ids(words: list[str]) -> list[int]:
        encoded = [processor.encode_text(f" {word}") for word in words]
        assert all(len(e) == 1 for e in encoded), "tag words must be single tokens"
        return [e[0] for e in encoded]

    return {
        "colour": ids(sorted(task.COLOURS)),
        "shape": ids(list(task.SHAPES)),
        "char": ids(list(task.CHARACTERS)),
    }


def tag_loss(model: TinyVLM, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Tag-head loss; targets (N, 64, 3) hold colour, shape and character ids (0 = none)."""
    config = model.config
    grid = model.aux_global(features)
    colours = grid[..., : config.aux_colours]
    shapes = grid[..., config.aux_colours : config.aux_colours + config.aux_shapes]
    loss = F.cross_entropy(colours.flatten(0, 1), targets[..., 0].flatten())
    loss = loss + F.cross_entropy(shapes.flatten(0, 1), targets[..., 1].flatten())
    chars = model.aux_crop(features)
    return loss + F.cross_entropy(chars.flatten(0, 1), targets[..., 2].flatten())


def losses(model: TinyVLM, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    view_tokens, view_features = model.encode_images(batch["views"])
    if batch["crops"].shape[0]:
        crop_tokens, crop_features = model.encode_images(batch["crops"])
    else:
        crop_tokens = crop_features = None
    # Interleave the grids in the order the conversations mention them.
    visual, next_view, next_crop = [], 0, 0
    for kind in batch["order"].tolist():
        if kind == 0:
            visual.append(view_tokens[next_view])
            next_view += 1
        else:
            visual.append(crop_tokens[next_crop])
            next_crop += 1
    prefix = batch["prefix"][None]
    cut = prefix.shape[1]
    prefix_valid = torch.ones_like(prefix, dtype=torch.bool)
    _, prefix_balance, caches = model(
        model.embed(prefix),
        torch.arange(cut, device=device)[None],
        attention_mask(prefix_valid, cut),
    )
    rows = batch["ids"].shape[0]
    caches = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in caches]
    x = model.embed_inputs(batch["ids"], torch.stack(visual))
    valid = batch["valid"]
    positions = cut + torch.arange(valid.shape[1], device=device).expand_as(valid)
    keys = torch.cat([prefix_valid.expand(rows, -1), valid], dim=1)
    logits, balance, _ = model(x, positions, attention_mask(keys, valid.shape[1]), caches)
    balance = balance + prefix_balance
    shift_targets = batch["targets"][:, 1:]
    language = F.cross_entropy(logits[:, :-1][shift_targets], batch["ids"][:, 1:][shift_targets])

    # Views: colour, shape and offset of markers; no character is readable at that scale.
    vt = batch["view_targets"]
    view_tags = torch.zeros(*vt.shape[:2], 3, dtype=torch.long, device=device)
    view_tags[..., :2] = vt[..., :2].long()
    aux = tag_loss(model, view_features, view_tags)
    present = vt[..., 0] > 0
    offsets = model.aux_global(view_features)[..., -2:][present].sigmoid()
    aux = aux + 4 * F.mse_loss(offsets, vt[..., 2:][present])
    # Crops: the zoomed marker's character, colour and shape at the glyph's cell.
    if crop_features is not None:
        crop_tags = torch.zeros(*crop_features.shape[:2], 3, dtype=torch.long, device=device)
        glyphs = batch["crop_chars"]
        crop_tags[torch.arange(len(glyphs), device=device), glyphs[:, 0]] = glyphs[:, [2, 3, 1]]
        aux = aux + tag_loss(model, crop_features, crop_tags)
    return {"language": language, "aux": aux, "balance": balance}


_COORDS = re.compile(r"x, y = (0\.\d\d) \* image\.width, (0\.\d\d) \* image\.height")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def evaluate(runtime: TinyRuntime, n: int, seed: int) -> dict[str, float]:
    """Agentic accuracy on held-out scenes, with the crop done here from the parsed coordinates.

    A training-time diagnostic; the real evaluation goes through Triton and the sandboxed tool.
    """
    rng = random.Random(seed)
    stop = SamplingSettings(max_tokens=160, stop=("</tool_call>", "</answer>"))
    stats = {"zoom": [0, 0], "global": [0, 0], "tools_off_zoom": [0, 0], "tool_use_zoom": [0, 0]}
    chats, truths = [], []
    for _ in range(n):
        scene = task.make_scene(rng)
        full = task.render(scene)
        view = model_view(full, VIEW_PIXELS)
        kind = task.question_kind(rng, 0.6)
        question = task.make_question(rng, scene, kind)
        tools_on = rng.random() >= 0.25
        messages = conversation(question, tools_on)[:2]
        messages[1]["content"][0] = {"type": "image", "image": view}
        chats.append((messages, full, tools_on))
        truths.append(question)
    first = runtime.generate([(m, stop) for m, _, _ in chats])
    second_batch, second_rows = [], []
    for row, ((messages, full, tools_on), out) in enumerate(zip(chats, first, strict=True)):
        match = _COORDS.search(out.text)
        if tools_on and match and "<tool_call>" in out.text:
            x, y = from_fraction(match[1]), from_fraction(match[2])
            box = (x - CROP_HALF, y - CROP_HALF, x + CROP_HALF, y + CROP_HALF)
            crop = model_view(full.crop(box), VIEW_PIXELS)
            observation = conversation(truths[row], True)[3]
            observation["content"][1] = {"type": "image", "image": crop}
            second_batch.append(
                ([*messages, {"role": "assistant", "content": out.text}, observation], stop)
            )
            second_rows.append(row)
    finals = {
        row: out.text for row, out in zip(second_rows, runtime.generate(second_batch), strict=True)
    }
    for row, ((_, _, tools_on), out) in enumerate(zip(chats, first, strict=True)):
        question = truths[row]
        text = finals.get(row, out.text)
        answer = _ANSWER.search(text)
        choice = parse_choice(answer[1], question.options) if answer else None
        correct = choice == question.answer
        key = ("zoom" if tools_on else "tools_off_zoom") if question.kind == "zoom" else "global"
        stats[key][0] += correct
        stats[key][1] += 1
        if question.kind == "zoom" and tools_on:
            stats["tool_use_zoom"][0] += row in finals
            stats["tool_use_zoom"][1] += 1
    return {k: round(a / b, 3) if b else float("nan") for k, (a, b) in stats.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="train the tiny MoE agent")
    parser.add_argument("--out", type=Path, default=Path("triton_repo/agent_vlm/tiny"))
    parser.add_argument("--work", type=Path, default=Path("build/tiny_train"))
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--eval-jobs", type=int, default=64, help="held-out jobs per evaluation")
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="processes rendering the data")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is lent")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    dataset, processor, encoded = load_or_build(args.work, args.images, args.seed, args.workers)
    config = TinyVLMConfig(
        vocab_size=processor.tokenizer.get_vocab_size(),
        image_token_id=processor.image_id,
        aux_chars=1 + len(task.CHARACTERS),
        aux_colours=1 + len(task.COLOURS),
        aux_shapes=1 + len(task.SHAPES),
        tag_words=tag_words(processor),
    )
    assert processor.tokenizer.token_to_id(SPECIAL_TOKENS[0]) == config.image_token_id
    model = TinyVLM(config).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    checkpoint = args.work / "checkpoint.pt"
    log_path = args.out / "training_log.jsonl"
    step = 0
    rng = random.Random(args.seed)
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False, map_location=args.device)
        model.load_state_dict(state["model"])
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError:  # a checkpoint from an older optimizer layout: restart its moments
            console.log("optimizer state does not match; continuing with a fresh optimizer")
        step = state["step"]
        rng.setstate(state["random"])
        console.log(f"resumed at step {step}")
    elif log_path.exists():
        log_path.unlink()
    console.log(
        f"{parameter_count(model) / 1e6:.2f} M parameters, {len(dataset.examples)} examples, "
        f"vocabulary {config.vocab_size}"
    )
    by_mode = {
        tools_on: [i for i, e in enumerate(dataset.examples) if e.tools_on == tools_on]
        for tools_on in (False, True)
    }
    tools_on_share = len(by_mode[True]) / len(dataset.examples)
    running: dict[str, float] = {}
    started = time.time()
    with Progress(
        TextColumn("[bold]step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("train", total=args.steps, completed=step, status="")
        while step < args.steps:
            model.train()
            lr = cosine_lr(step, args.steps, warmup=150, peak=args.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            mode = by_mode[rng.random() < tools_on_share]
            indices = [rng.choice(mode) for _ in range(args.batch)]
            parts = losses(model, make_batch(indices, dataset, encoded, processor))
            total = parts["language"] + 0.5 * parts["aux"] + 0.01 * parts["balance"]
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            for key, value in parts.items():
                running[key] = 0.9 * running.get(key, value.item()) + 0.1 * value.item()
            status = " ".join(f"{k} {v:.3f}" for k, v in running.items())
            progress.update(bar, completed=step, status=status)
            record: dict = {"step": step, "lr": lr, "elapsed_s": round(time.time() - started, 1)}
            if step % 25 == 0:
                record |= {k: round(v, 4) for k, v in running.items()}
            if step % args.eval_every == 0 or step == args.steps:
                # The runtime serves on CPU; evaluate a CPU copy so training state is untouched.
                runtime = TinyRuntime(copy.deepcopy(model).cpu(), processor)
                record["eval"] = evaluate(runtime, args.eval_jobs, seed=10_000 + args.seed)
                progress.console.log(f"step {step}: {record['eval']}")
                model.train()
            if len(record) > 3:
                with log_path.open("a") as log:
                    log.write(json.dumps(record) + "\n")
            if step % args.save_every == 0 or step == args.steps:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "step": step,
                        "random": rng.getstate(),
                    },
                    checkpoint,
                )
                save_checkpoint(copy.deepcopy(model).cpu().eval(), processor, args.out)
    save_checkpoint(model.cpu().eval(), processor, args.out)
    console.log(f"saved weights to {args.out}")


if __name__ == "__main__":
    main()
