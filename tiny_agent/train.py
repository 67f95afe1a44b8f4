"""Train the tiny MoE agent from a seed (`make train-tiny`).

Two stages, shaped by what was measured before this model (docs/tiny_model.md, "What a small
Qwen3-VL-MoE did on this task": a decoder never learned to route to raw visual tokens; a small
CNN learned each visual skill alone in a few hundred steps):

1. tower: the convolutional tower and its tag heads learn, per cell of a global view, the
   colour, shape and position of a marker centred there, and per cell of a crop the character
   it holds; held-out accuracy of each is logged, so a tower that cannot see is caught before
   the agent is trained on it;
2. agent: the tower is frozen (its features are computed once for every image) and the
   decoder learns the protocol, when to zoom, where to crop, when to search the codebook and
   what to answer, from the language loss on the assistant turns and the pointer losses.

Crops are tight (the glyph is a third of the sub-image) and jittered like the model's own
localisation errors.

Resumable: the dataset, the tokenizer and a checkpoint every `--save-every` steps live in
`--work`; rerunning the same command continues. A learning-curve log (JSONL) and the final
weights (safetensors, config, tokenizer) are written to `--out`. Progress is shown with rich.
"""

from __future__ import annotations

import argparse
import copy
import itertools
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

from beam_pipelines import synthetic
from beam_pipelines.agent.images import model_view
from beam_pipelines.agent.protocols import ParsedTurn, get_protocol
from beam_pipelines.agent.records import ImageRef, Observation, parse_choice
from tiny_agent.chat import SPECIAL_TOKENS, ChatProcessor, train_tokenizer
from tiny_agent.data import (
    CELL,
    CODE,
    CROP_HALF,
    CROP_VIEW,
    NO_TOOLS,
    SEARCH,
    VIEW_PIXELS,
    Dataset,
    Example,
    build_dataset,
    codebook_search,
    conversation,
    from_fraction,
)
from tiny_agent.model import TinyVLM, TinyVLMConfig, attention_mask, cosine_lr, parameter_count
from tiny_agent.runtime import SamplingSettings, TinyRuntime, save_checkpoint
from tools.base import ToolContext
from tools.registry import run_tool
from tools.search.corpus import CODEWORDS
from tools.search.search_tools import TextSearchTool

console = Console()
VOCAB_SIZE = 1024
#: How much more often than its share an example of a question kind is drawn: colour questions
#: (the rarest, 15 % of the examples) need the slowest lookup, a marker found by its shape.
KIND_WEIGHTS = {"colour": 2.0}


def _texts(conversations: list[list[dict]]):
    for messages in conversations:
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                yield content
            else:
                yield from (part["text"] for part in content if part.get("type") == "text")
    yield from (f"{role}\n" for role in ("system", "user", "assistant"))
    # Every word the model names is one token, spaced and not, however few examples there are.
    words = [*sorted(synthetic.COLOURS), *synthetic.SHAPES, *synthetic.CHARACTERS, *CODEWORDS]
    yield from (f"<answer>{word}</answer> {word}" for word in words)


def fit_processor(conversations: list[list[dict]]) -> ChatProcessor:
    """A processor whose tokenizer is trained on the conversations' texts."""
    tokenizer = train_tokenizer(_texts(conversations), VOCAB_SIZE)
    return ChatProcessor(tokenizer, grid=8, image_side=128)


def load_or_build(
    work: Path, images: int, seed: int, workers: int = 2
) -> tuple[Dataset, ChatProcessor, list]:
    data_path = work / "dataset.pkl"
    if data_path.exists():
        dataset = pickle.loads(data_path.read_bytes())
    else:
        started = time.time()
        with console.status(f"rendering {images} training scenes"):
            dataset = build_dataset(images, seed, work / "codebooks", workers)
        data_path.write_bytes(pickle.dumps(dataset))
        console.log(f"built {len(dataset.examples)} examples in {time.time() - started:.0f}s")
    conversations = [dataset.conversation(e) for e in dataset.examples]
    tokenizer_path = work / "tokenizer.json"
    if tokenizer_path.exists():
        processor = ChatProcessor.load(work, grid=8, image_side=128)
    else:
        processor = fit_processor(conversations)
        processor.tokenizer.save(str(tokenizer_path))
    encoded = [processor.render(m, add_generation_prompt=False) for m in conversations]
    return dataset, processor, encoded


def system_length(rendered) -> int:
    """Tokens of the system turn: the prefix every conversation of one tool mode shares."""
    return rendered.ids.index(rendered.ids[0], 1)


class PointerVocabulary:
    """The token ids that `pointer_sources` recognises in a rendered conversation."""

    def __init__(self, processor: ChatProcessor):
        def one(text: str) -> int:
            (token,) = processor.encode_text(text)
            return token

        words = {"colour": sorted(synthetic.COLOURS), "shape": list(synthetic.SHAPES)}
        self.attributes = {one(f" {w}") for group in words.values() for w in group}
        self.colours = {one(f" {w}") for w in words["colour"]}
        self.chars = {one(f" {c}") for c in synthetic.CHARACTERS}
        self.codewords = {one(f" {w}") for w in CODEWORDS}
        self.spaced = {
            one(w): one(f" {w}")
            for w in [*words["colour"], *words["shape"], *synthetic.CHARACTERS, *CODEWORDS]
        }
        self.digits = {one(str(d)) for d in range(10)}
        self.zero, self.dot, self.options = one("0"), one("."), one("Options")
        self.image = processor.image_id


def pointer_sources(
    ids: list[int], targets: list[bool], example: Example, dataset: Dataset, vocab
) -> list[tuple[int, int, int, int, int]]:
    """(query, key, head, layer, token): where each copied token is read from, and how.

    A token the assistant writes that names something is copied from exactly one place: a
    colour or shape the question names from the question; any other colour or shape, and the
    digits of a crop box, from the global view's cell where the target marker sits; the
    character from the crop's cell where the glyph sits; an answer from the word the thinking
    named, or a codeword from the search result (any later mention of the character, from the
    crop again). Training the pointer heads on these makes the routing a supervised skill
    instead of one the language loss must discover (and never did: docs/tiny_model.md).
    Text copies go through head 0 of layer 2, a codeword read off the search result through
    head 1 of layer 3; each of the four digits of a crop centre (x tenths, x
    hundredths, y tenths, y hundredths) through its own head 1–4 of layer 2, which reads that
    digit off the cell's location tokens; a shape read off the view (the marker found by its
    colour) through head 5, and a colour read off the view (found by its shape) through head 0
    of layer 3: sharing a head, the shape-keyed lookup never formed, its queries matching the
    colours of the question's options instead. To find the cell, the query must know which
    marker is meant, so a head of layer 1 first brings it what the thinking named: for a
    digit, head 0 the colour; for a colour or shape read off the view, head 1 the other
    attribute ("the square is" → red). A two-step lookup, each step supervised.
    """
    images = [i for i, token in enumerate(ids) if token == vocab.image]
    view, crop = images[0], (images[64] if len(images) > 64 else None)
    marker = example.question.target
    scale = 128 / synthetic.IMAGE_SIDE
    cell = int(marker.y * scale // CELL) * 8 + int(marker.x * scale // CELL)
    question_end = ids.index(vocab.options, view)
    question = {token: i for i, token in reversed(list(enumerate(ids[:question_end])))}
    decimal = [vocab.zero, vocab.dot]
    numbers = 0  # decimals begun so far: the first is x, the second y
    pairs = []
    for j in range(1, len(ids)):
        if not targets[j]:
            continue
        token, source, head, layer = ids[j], None, 0, 2
        turn = max(i for i in range(j) if not targets[i])
        if token in vocab.chars and crop is not None and j > crop:
            source = crop + int(dataset.crop_chars[example.crop][0])
        elif token in vocab.attributes and token in question:
            source = question[token]
        elif token in vocab.attributes:
            source = view + cell
            # By colour (a shape read off the view) or by shape (a colour): one head each.
            head, layer = (0, 3) if token in vocab.colours else (5, 2)
            named = [i for i in range(turn, j) if ids[i] in vocab.attributes]
            if named:
                pairs.append((j - 1, named[-1], 1, 1, ids[named[-1]]))
        elif token in vocab.digits and decimal in (ids[j - 2 : j], ids[j - 3 : j - 1]):
            tenths = ids[j - 2 : j] == decimal
            numbers += tenths
            source, head = view + cell, 2 * numbers - tenths
            colour = max(i for i in range(turn, j) if ids[i] in vocab.colours)
            pairs.append((j - 1, colour, 0, 1, ids[colour]))
        elif token in vocab.codewords and crop is not None:
            # The result's mention: the options (also before the crop) list it too.
            found = [i for i in range(crop, turn) if ids[i] == token]
            source, head, layer = (found[-1] if found else None), 1, 3
        elif token in vocab.spaced:
            named = [i for i in range(turn, j) if ids[i] == vocab.spaced[token]]
            source = named[-1] if named else None
        if source is not None:
            pairs.append((j - 1, source, head, layer, token))
    return pairs


def make_batch(
    indices: list[int],
    dataset: Dataset,
    encoded: list,
    processor: ChatProcessor,
    vocab: PointerVocabulary,
) -> dict[str, torch.Tensor]:
    """A batch of conversations sharing one system prompt, which is sent once as `prefix`.

    Every conversation of a tool mode starts with the same system turn, so the decoder runs it
    once per batch and the rest of each conversation attends to its cached keys and values:
    the same computation as running each row whole, at a fraction of the cost. Images are
    given as indices into the dataset's views and crops, in the order the rows mention them.
    """
    cut = system_length(encoded[indices[0]])
    prefix = encoded[indices[0]].ids[:cut]
    assert all(encoded[i].ids[:cut] == prefix for i in indices), "one system prompt per batch"
    width = max(len(encoded[i].ids) for i in indices) - cut
    ids = torch.full((len(indices), width), processor.pad_id, dtype=torch.long)
    targets = torch.zeros(len(indices), width, dtype=torch.bool)
    valid = torch.zeros(len(indices), width, dtype=torch.bool)
    images = []  # (is_crop, index)
    # (row, query, key, head, layer, copied token), keys counted from the prefix's start
    pointer = []
    for row, index in enumerate(indices):
        rendered, example = encoded[index], dataset.examples[index]
        n = len(rendered.ids) - cut
        ids[row, :n] = torch.tensor(rendered.ids[cut:])
        targets[row, :n] = torch.tensor(rendered.targets[cut:])
        valid[row, :n] = True
        sources = pointer_sources(
            rendered.ids[cut:], rendered.targets[cut:], example, dataset, vocab
        )
        pointer.extend(
            (row, query, cut + key, head, layer, token)
            for query, key, head, layer, token in sources
        )
        images.append((0, example.view))
        if example.crop >= 0:
            images.append((1, example.crop))
    return {
        "prefix": torch.tensor(prefix),
        "ids": ids,
        "targets": targets,
        "valid": valid,
        "images": torch.tensor(images, dtype=torch.long),
        "pointer": torch.tensor(pointer, dtype=torch.long).reshape(-1, 6),
    }


def pixels(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255.0


def tag_words(processor: ChatProcessor) -> dict[str, list[int]]:
    """Token ids of the words the tag heads name: colours, shapes, characters (in head order)."""

    def ids(words: list[str]) -> list[int]:
        encoded = [processor.encode_text(f" {word}") for word in words]
        assert all(len(e) == 1 for e in encoded), "tag words must be single tokens"
        return [e[0] for e in encoded]

    return {
        "colour": ids(sorted(synthetic.COLOURS)),
        "shape": ids(list(synthetic.SHAPES)),
        "char": ids(list(synthetic.CHARACTERS)),
    }


def tag_logits(model: TinyVLM, features: torch.Tensor) -> dict[str, torch.Tensor]:
    config = model.config
    grid = model.aux_global(features)
    return {
        "colour": grid[..., : config.aux_colours],
        "shape": grid[..., config.aux_colours : config.aux_colours + config.aux_shapes],
        "offset": grid[..., -2:].sigmoid(),
        "char": model.aux_crop(features),
    }


def tower_targets(dataset: Dataset, views: list[int], crops: list[int]) -> dict[str, torch.Tensor]:
    """Per-cell targets: colour, shape (views and crops), offset (views), character (crops)."""
    vt = torch.from_numpy(dataset.global_targets[views])
    glyphs = torch.from_numpy(dataset.crop_chars[crops])
    crop_tags = torch.zeros(len(crops), 64, 3, dtype=torch.long)
    crop_tags[torch.arange(len(crops)), glyphs[:, 0]] = glyphs[:, [2, 3, 1]]
    return {
        "views": pixels(dataset.views[views]),
        "view_tags": vt[..., :2].long(),
        "view_offsets": vt[..., 2:],
        "crops": pixels(dataset.crops[crops]),
        "crop_tags": crop_tags,
    }


def tower_losses(model: TinyVLM, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tag heads' losses: what the tower must name in a view and in a crop."""
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    view = tag_logits(model, model.vision(batch["views"]))
    crop = tag_logits(model, model.vision(batch["crops"]))
    vt, ct = batch["view_tags"], batch["crop_tags"]
    present = vt[..., 0] > 0
    return {
        "colour": F.cross_entropy(view["colour"].flatten(0, 1), vt[..., 0].flatten())
        + F.cross_entropy(crop["colour"].flatten(0, 1), ct[..., 0].flatten()),
        "shape": F.cross_entropy(view["shape"].flatten(0, 1), vt[..., 1].flatten())
        + F.cross_entropy(crop["shape"].flatten(0, 1), ct[..., 1].flatten()),
        # Offsets in cells; a cell is 16 view pixels, 256 full-resolution ones.
        "offset": 16 * F.mse_loss(view["offset"][present], batch["view_offsets"][present]),
        "char": F.cross_entropy(crop["char"].flatten(0, 1), ct[..., 2].flatten()),
    }


@torch.no_grad()
def tower_metrics(model: TinyVLM, dataset: Dataset) -> dict[str, float]:
    """Held-out tag accuracy where markers are, and the localisation error in image pixels."""
    model.eval()
    batch = tower_targets(dataset, list(range(len(dataset.views))), list(range(len(dataset.crops))))
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    view = tag_logits(model, model.vision(batch["views"]))
    crop = tag_logits(model, model.vision(batch["crops"]))
    present = batch["view_tags"][..., 0] > 0
    glyph = batch["crop_tags"][..., 2] > 0
    error = (view["offset"][present] - batch["view_offsets"][present]).abs() * 16 * 16
    return {
        "colour": (view["colour"].argmax(-1) == batch["view_tags"][..., 0])[present]
        .float()
        .mean()
        .item(),
        "shape": (view["shape"].argmax(-1) == batch["view_tags"][..., 1])[present]
        .float()
        .mean()
        .item(),
        "offset_px": error.mean().item(),
        "empty_cells_clear": (view["colour"].argmax(-1) == 0)[~present].float().mean().item(),
        "crop_char": (crop["char"].argmax(-1) == batch["crop_tags"][..., 2])[glyph]
        .float()
        .mean()
        .item(),
    }


@torch.no_grad()
def tower_features(model: TinyVLM, images: np.ndarray, device: str) -> torch.Tensor:
    """The frozen tower's grid features for every image of the dataset, computed once."""
    chunks = [
        model.vision(pixels(images[start : start + 256]).to(device))
        for start in range(0, len(images), 256)
    ]
    return torch.cat(chunks)


def language_loss(
    model: TinyVLM, batch: dict[str, torch.Tensor], views: torch.Tensor, crops: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Loss on the assistant turns; `views` and `crops` are the cached tower features."""
    device = next(model.parameters()).device
    features = torch.stack(
        [crops[i] if is_crop else views[i] for is_crop, i in batch.pop("images").tolist()]
    )
    batch = {key: value.to(device) for key, value in batch.items()}
    visual = model.encode_features(features.to(device))
    prefix = batch["prefix"][None]
    cut = prefix.shape[1]
    prefix_valid = torch.ones_like(prefix, dtype=torch.bool)
    _, prefix_balance, caches, *_ = model(
        model.embed(prefix),
        torch.arange(cut, device=device)[None],
        attention_mask(prefix_valid, cut),
    )
    rows = batch["ids"].shape[0]
    caches = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in caches]
    x = model.embed_inputs(batch["ids"], visual)
    valid = batch["valid"]
    positions = cut + torch.arange(valid.shape[1], device=device).expand_as(valid)
    keys = torch.cat([prefix_valid.expand(rows, -1), valid], dim=1)
    mask = attention_mask(keys, valid.shape[1])
    logits, balance, _, pointer_logp, copy_logits = model(
        x, positions, mask, caches, batch["pointer"][:, :5]
    )
    shift_targets = batch["targets"][:, 1:]
    language = F.cross_entropy(logits[:, :-1][shift_targets], batch["ids"][:, 1:][shift_targets])
    return {
        "language": language,
        "pointer": -pointer_logp.mean(),
        # What a pointer head brings must already name the word or digit it copies.
        "copy": F.cross_entropy(copy_logits, batch["pointer"][:, 5]),
        "balance": balance + prefix_balance,
    }


_COORDS = re.compile(r"x, y = (0\.\d\d) \* image\.width, (0\.\d\d) \* image\.height")
R1V4 = get_protocol("r1v4")


def _observation(turn: ParsedTurn, full, search: TextSearchTool, images: int) -> dict | None:
    """The observation message for the turn's tool call, or None when it made none.

    The crop is done here from the parsed coordinates, as the `code` tool would; the search
    goes to the real `text_search` tool.
    """
    if not turn.tool_calls:
        return None
    call = turn.tool_calls[0]
    if call.name == "code":
        code = call.arguments.get("code")
        match = _COORDS.search(code) if isinstance(code, str) else None
        if match is None:
            return None
        x, y = from_fraction(match[1]), from_fraction(match[2])
        box = (x - CROP_HALF, y - CROP_HALF, x + CROP_HALF, y + CROP_HALF)
        crop = ImageRef(uri="crop", sha256="", width=CROP_VIEW, height=CROP_VIEW)
        rendered = R1V4.render_observation([Observation("", (crop,), tool="code")], images + 1)
        part = {"type": "image", "image": model_view(full.crop(box), VIEW_PIXELS)}
        return {"role": "user", "content": [{"type": "text", "text": rendered}, part]}
    result = run_tool({search.name: search}, call.name, call.arguments, ToolContext(image=b""))
    observation = Observation(result.text, error=result.error, tool=call.name)
    rendered = R1V4.render_observation([observation], images + 1)
    return {"role": "user", "content": [{"type": "text", "text": rendered}]}


def evaluate(runtime: TinyRuntime, n: int, seed: int, search: TextSearchTool) -> dict[str, float]:
    """Agentic accuracy on held-out scenes, up to three turns, search questions included.

    A training-time diagnostic (the crop is done here); the real evaluation goes through Triton
    and the sandboxed tools. `search` holds a codebook no training example read.
    """
    rng = random.Random(seed)
    stop = SamplingSettings(max_tokens=160, stop=("</tool_call>", "</answer>"))
    chats = []
    for _ in range(n):
        scene = synthetic.make_scene(rng)
        full = synthetic.render(scene)
        question = synthetic.make_question(rng, scene, synthetic.question_kind(rng, 0.45, 0.25))
        if rng.random() < 0.25:
            tools = NO_TOOLS
        else:
            tools = SEARCH if question.kind == "search" or rng.random() < 0.5 else CODE
        messages = conversation(question, tools)[:2]
        messages[1]["content"][0] = {"type": "image", "image": model_view(full, VIEW_PIXELS)}
        chats.append({"messages": messages, "full": full, "tools": tools, "question": question})
    pending, calls, answers = list(range(n)), [0] * n, [None] * n
    for _ in range(3):
        outputs = runtime.generate([(chats[row]["messages"], stop) for row in pending])
        still = []
        for row, out in zip(pending, outputs, strict=True):
            chat = chats[row]
            chat["messages"].append({"role": "assistant", "content": out.text})
            turn = R1V4.parse(out.text, chat["tools"])
            answers[row] = turn.answer
            message = _observation(turn, chat["full"], search, calls[row])
            if message is not None:
                chat["messages"].append(message)
                calls[row] += 1
                still.append(row)
        pending = still
    stats: dict[str, list[int]] = {}
    for row, chat in enumerate(chats):
        question = chat["question"]
        choice = parse_choice(answers[row], question.options) if answers[row] else None
        kind = question.kind if question.kind in ("zoom", "search") else "global"
        key = kind if chat["tools"] else f"tools_off_{kind}"
        for name, value in ((key, choice == question.answer), (f"calls_{key}", calls[row])):
            stats.setdefault(name, [0, 0])
            stats[name][0] += value
            stats[name][1] += 1
    return {k: round(a / b, 3) for k, (a, b) in sorted(stats.items())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="train the tiny MoE agent")
    parser.add_argument("--out", type=Path, default=Path("triton_repo/agent_vlm/tiny"))
    parser.add_argument("--work", type=Path, default=Path("build/tiny_train"))
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--tower-steps", type=int, default=1500, help="stage 1: the tag heads")
    parser.add_argument("--steps", type=int, default=3000, help="stage 2: the agent")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tower-lr", type=float, default=2e-3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--eval-jobs", type=int, default=64, help="held-out jobs per evaluation")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="processes rendering the data")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is lent")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    dataset, processor, encoded = load_or_build(args.work, args.images, args.seed, args.workers)
    held_out = load_held_out(args.work, args.seed, args.workers)
    config = TinyVLMConfig(
        vocab_size=processor.tokenizer.get_vocab_size(),
        image_token_id=processor.image_id,
        aux_chars=1 + len(synthetic.CHARACTERS),
        aux_colours=1 + len(synthetic.COLOURS),
        aux_shapes=1 + len(synthetic.SHAPES),
        tag_words=tag_words(processor),
    )
    assert processor.tokenizer.token_to_id(SPECIAL_TOKENS[0]) == config.image_token_id
    model = TinyVLM(config).to(args.device)
    checkpoint = args.work / "checkpoint.pt"
    log_path = args.out / "training_log.jsonl"
    state = None
    step = 0
    rng = random.Random(args.seed)
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False, map_location=args.device)
        missing, _ = model.load_state_dict(state["model"], strict=False)
        if missing:  # a checkpoint from before parts were added: those start fresh
            console.log(f"not in the checkpoint, starting fresh: {', '.join(missing)}")
        step = state["step"]
        rng.setstate(state["random"])
        console.log(f"resumed at step {step}")
    elif log_path.exists():
        log_path.unlink()
    console.log(
        f"{parameter_count(model) / 1e6:.2f} M parameters, {len(dataset.examples)} examples, "
        f"vocabulary {config.vocab_size}"
    )
    total = args.tower_steps + args.steps
    with Progress(
        TextColumn("[bold]{task.description} {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("train", total=total, completed=step, status="")
        trainer = Trainer(args, model, dataset, encoded, processor, rng, progress, bar, log_path)
        if step < args.tower_steps:
            step = trainer.tower_stage(step, state, held_out)
            state = None
        trainer.agent_stage(step, state)
    save_checkpoint(model.cpu().eval(), processor, args.out)
    console.log(f"saved weights to {args.out}")


def load_held_out(work: Path, seed: int, workers: int) -> Dataset:
    """Scenes from a seed the training set never uses, for the tower's held-out accuracy."""
    path = work / "held_out.pkl"
    if not path.exists():
        path.write_bytes(
            pickle.dumps(build_dataset(100, seed + 7_919, work / "codebooks", workers))
        )
    return pickle.loads(path.read_bytes())


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    try:
        optimizer.load_state_dict(state)
    except ValueError:  # the parameters changed since the checkpoint: restart the moments
        console.log("optimizer state does not match; continuing with a fresh optimizer")


class Trainer:
    """The two stages: the tower and its tag heads, then the agent on the frozen tower."""

    def __init__(self, args, model, dataset, encoded, processor, rng, progress, bar, log_path):
        self.args, self.model, self.dataset = args, model, dataset
        self.encoded, self.processor, self.rng = encoded, processor, rng
        self.progress, self.bar, self.log_path = progress, bar, log_path
        self.checkpoint = args.work / "checkpoint.pt"
        self.vocab = PointerVocabulary(processor)
        # The evaluation's codebook: the offline search's default (seed 0), which no training
        # example read.
        self.search = codebook_search(args.work / "codebooks", 0)
        self.running: dict[str, float] = {}
        self.started = time.time()

    def _log(self, record: dict, parts: dict[str, torch.Tensor]) -> None:
        for key, value in parts.items():
            self.running[key] = 0.9 * self.running.get(key, value.item()) + 0.1 * value.item()
        self.progress.update(
            self.bar,
            completed=record["step"],
            description=record["stage"],
            status=" ".join(f"{k} {v:.3f}" for k, v in self.running.items()),
        )
        if record["step"] % 25 == 0:
            record |= {k: round(v, 4) for k, v in self.running.items()}
        if len(record) > 4:
            with self.log_path.open("a") as log:
                log.write(json.dumps(record) + "\n")

    def _save(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "random": self.rng.getstate(),
        }
        torch.save(state, self.checkpoint)
        save_checkpoint(copy.deepcopy(self.model).cpu().eval(), self.processor, self.args.out)

    def _step(self, optimizer, parameters, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()

    def tower_stage(self, step: int, state: dict | None, held_out: Dataset) -> int:
        """Stage 1: the tower learns to name colour, shape, position and character per cell."""
        args, model, dataset = self.args, self.model, self.dataset
        parameters = [
            *model.vision.parameters(),
            *model.aux_global.parameters(),
            *model.aux_crop.parameters(),
        ]
        optimizer = torch.optim.AdamW(parameters, lr=args.tower_lr, weight_decay=0.01)
        if state is not None:
            load_optimizer(optimizer, state["optimizer"])
        while step < args.tower_steps:
            model.train()
            lr = cosine_lr(step, args.tower_steps, warmup=50, peak=args.tower_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            views = [self.rng.randrange(len(dataset.views)) for _ in range(args.batch)]
            crops = [self.rng.randrange(len(dataset.crops)) for _ in range(args.batch)]
            parts = tower_losses(model, tower_targets(dataset, views, crops))
            self._step(optimizer, parameters, sum(parts.values()))
            step += 1
            record: dict = {"step": step, "stage": "tower", "lr": lr}
            record["elapsed_s"] = round(time.time() - self.started, 1)
            if step % args.eval_every == 0 or step == args.tower_steps:
                record["held_out"] = {
                    k: round(v, 4) for k, v in tower_metrics(model, held_out).items()
                }
                self.progress.console.log(f"tower step {step}: {record['held_out']}")
            self._log(record, parts)
            if step % args.save_every == 0 or step == args.tower_steps:
                self._save(step, optimizer)
        self.running.clear()
        return step

    def agent_stage(self, step: int, state: dict | None) -> None:
        """Stage 2: the decoder learns the protocol and to route to the tags, tower frozen."""
        args, model, dataset = self.args, self.model, self.dataset
        for module in (model.vision, model.aux_global, model.aux_crop):
            module.requires_grad_(False)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
        if state is not None:
            load_optimizer(optimizer, state["optimizer"])
        with console.status("caching the frozen tower's features"):
            views = tower_features(model.eval(), dataset.views, args.device)
            crops = tower_features(model, dataset.crops, args.device)
        # One tool set per batch (they share a system prompt), drawn as often as it occurs.
        by_mode = {}
        for tools in (NO_TOOLS, CODE, SEARCH):
            members = [i for i, e in enumerate(dataset.examples) if e.tools == tools]
            weights = (KIND_WEIGHTS.get(dataset.examples[i].question.kind, 1.0) for i in members)
            by_mode[tools] = (members, list(itertools.accumulate(weights)))
        modes = list(by_mode)
        shares = [len(by_mode[m][0]) for m in modes]
        first, total = args.tower_steps, args.tower_steps + args.steps
        while step < total:
            model.train()
            lr = cosine_lr(step - first, args.steps, warmup=100, peak=args.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            members, cumulative = by_mode[self.rng.choices(modes, weights=shares)[0]]
            indices = self.rng.choices(members, cum_weights=cumulative, k=args.batch)
            batch = make_batch(indices, dataset, self.encoded, self.processor, self.vocab)
            parts = language_loss(model, batch, views, crops)
            loss = (
                parts["language"]
                + 0.5 * (parts["pointer"] + parts["copy"])
                + 0.01 * parts["balance"]
            )
            self._step(optimizer, parameters, loss)
            step += 1
            record: dict = {"step": step, "stage": "agent", "lr": lr}
            record["elapsed_s"] = round(time.time() - self.started, 1)
            if (step - first) % args.eval_every == 0 or step == total:
                # The runtime serves on CPU; evaluate a CPU copy so training state is untouched.
                runtime = TinyRuntime(copy.deepcopy(model).cpu(), self.processor)
                record["eval"] = evaluate(
                    runtime, args.eval_jobs, seed=10_000 + args.seed, search=self.search
                )
                self.progress.console.log(f"agent step {step}: {record['eval']}")
            self._log(record, parts)
            if step % args.save_every == 0 or step == total:
                self._save(step, optimizer)


if __name__ == "__main__":
    main()
