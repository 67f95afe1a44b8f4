"""The training recipe's pure logic: where the pointer heads copy from, and a tower whose
output does not depend on train/eval mode."""

import dataclasses
import json

import pytest
import torch

from beam_pipelines import synthetic
from tiny_agent.chat import ChatProcessor
from tiny_agent.data import CELL, NO_TOOLS, build_dataset
from tiny_agent.model import TinyVLM, TinyVLMConfig
from tiny_agent.runtime import SamplingSettings, TinyRuntime
from tiny_agent.train import PointerVocabulary, fit_processor, main, pointer_sources
from tools.search.corpus import codebook


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_dataset(4, seed=5, corpora=tmp_path_factory.mktemp("codebooks"), workers=1)


@pytest.fixture(scope="module")
def processor(dataset) -> ChatProcessor:
    return fit_processor([dataset.conversation(e) for e in dataset.examples])


def _routes(processor, dataset, example):
    rendered = processor.render(dataset.conversation(example), False)
    ids = rendered.ids
    images = [i for i, token in enumerate(ids) if token == processor.image_id]
    vocab = PointerVocabulary(processor)
    routes = []
    for query, key, head, layer, token in pointer_sources(
        ids, rendered.targets, example, dataset, vocab
    ):
        copied = processor.decode([token])
        # The pointer layer's query is the position that predicts the copied token.
        assert layer == 1 or ids[query + 1] == token
        if key in images:
            index = images.index(key)
            source = ("view", index) if index < 64 else ("crop", index - 64)
        else:
            source = ("text", processor.decode([ids[key]]))
        routes.append((copied, source, head, layer))
    return routes


def test_zoom_trajectory_routes_each_copied_token(processor, dataset):
    example = next(e for e in dataset.examples if e.question.kind == "zoom" and e.tools)
    marker = example.question.target
    scale = 128 / synthetic.IMAGE_SIDE
    cell = int(marker.y * scale // CELL) * 8 + int(marker.x * scale // CELL)
    glyph = int(dataset.crop_chars[example.crop][0])
    x, y = (
        f"{marker.x / synthetic.IMAGE_SIDE:.2f}"[2:],
        f"{marker.y / synthetic.IMAGE_SIDE:.2f}"[2:],
    )
    colour = (f" {marker.colour}", ("text", f" {marker.colour}"), 0, 1)
    assert _routes(processor, dataset, example) == [
        (f" {marker.colour}", ("text", f" {marker.colour}"), 0, 2),
        (f" {marker.shape}", ("text", f" {marker.shape}"), 0, 2),
        # Each digit: first the colour the thinking named, then the digit from that cell.
        colour,
        (x[0], ("view", cell), 1, 2),
        colour,
        (x[1], ("view", cell), 2, 2),
        colour,
        (y[0], ("view", cell), 3, 2),
        colour,
        (y[1], ("view", cell), 4, 2),
        (f" {marker.colour}", ("text", f" {marker.colour}"), 0, 2),
        (f" {marker.shape}", ("text", f" {marker.shape}"), 0, 2),
        (f" {marker.char}", ("crop", glyph), 0, 2),
        (marker.char, ("text", f" {marker.char}"), 0, 2),
    ]


def test_global_answers_come_from_the_view_one_head_per_lookup_key(processor, dataset):
    colour = next(e for e in dataset.examples if e.question.kind == "colour")
    marker = colour.question.target
    shape = (f" {marker.shape}", ("text", f" {marker.shape}"))
    routes = _routes(processor, dataset, colour)
    # "The square is red": the shape comes from the question; layer 1 brings it to "is", and
    # head 0 of layer 3 reads the colour off the square's cell; the answer copies the thinking.
    assert routes[:2] == [(*shape, 0, 2), (*shape, 1, 1)]
    assert routes[2][0] == f" {marker.colour}" and routes[2][1][0] == "view"
    assert routes[2][2:] == (0, 3)
    assert routes[3] == (marker.colour, ("text", f" {marker.colour}"), 0, 2)
    # "The red marker is a square": found by its colour, read through head 5 of layer 2.
    shaped = next(e for e in dataset.examples if e.question.kind == "shape")
    marker = shaped.question.target
    routes = _routes(processor, dataset, shaped)
    assert routes[1] == (f" {marker.colour}", ("text", f" {marker.colour}"), 1, 1)
    assert routes[2][0] == f" {marker.shape}" and routes[2][1][0] == "view"
    assert routes[2][2:] == (5, 2)
    # Without tools the character cannot be read: the guess has no source, the answer copies it.
    zoom = next(e for e in dataset.examples if e.question.kind == "zoom")
    guess = dataclasses.replace(zoom, tools=NO_TOOLS, crop=-1)
    copied = [route[0] for route in _routes(processor, dataset, guess)]
    assert f" {guess.question.target.char}" not in copied
    assert guess.question.target.char in copied


def test_search_trajectory_reads_the_codeword_off_the_result(processor, dataset):
    example = next(e for e in dataset.examples if e.question.kind == "search" and e.tools)
    marker = example.question.target
    word = codebook(example.codebook_seed)[marker.char]
    assert example.question.options["ABCD".index(example.question.answer)] == word
    conversation = dataset.conversation(example)
    result = conversation[-2]["content"][0]["text"]
    assert f"the symbol {marker.char} stands for the codeword {word}." in result
    routes = _routes(processor, dataset, example)
    glyph = ("crop", int(dataset.crop_chars[example.crop][0]))
    # The character, wherever it is written after the zoom (twice in the thinking, the query,
    # the last thinking),
    # is read off the crop; the codeword off the result (head 1 of layer 3), not the options.
    assert [r for r in routes if r[0] == f" {marker.char}"] == [
        (f" {marker.char}", glyph, 0, 2)
    ] * 4
    assert routes[-2:] == [
        (f" {word}", ("text", f" {word}"), 1, 3),
        (word, ("text", f" {word}"), 0, 2),
    ]
    rendered = processor.render(conversation, False)
    sources = pointer_sources(
        rendered.ids, rendered.targets, example, dataset, PointerVocabulary(processor)
    )
    (key,) = [key for _, key, head, layer, _ in sources if (head, layer) == (1, 3)]
    assert processor.decode(rendered.ids[key - 2 : key]) == " the codeword"


def test_tower_features_do_not_depend_on_train_or_eval_mode():
    # Batch norm's running statistics, averaged over views and crops, once made the served
    # model see features it never trained on; a per-image norm cannot.
    torch.manual_seed(0)
    model = TinyVLM(TinyVLMConfig(vocab_size=64, d_model=32, n_heads=2, d_expert=32))
    views = torch.rand(3, 3, 128, 128)
    model.train()
    trained = model.encode_images(views)
    model.eval()
    torch.testing.assert_close(model.encode_images(views), trained)


@pytest.mark.slow
def test_make_train_tiny_runs_from_scratch_and_resumes(tmp_path):
    # The whole recipe in small: render, tokenizer, tower stage, cached features, agent stage,
    # held-out evaluations, weights the runtime serves; a rerun with more steps resumes.
    work, out = tmp_path / "work", tmp_path / "out"
    small = ["--images", "60", "--batch", "4", "--eval-jobs", "4", "--eval-every", "2"]
    common = ["--work", str(work), "--out", str(out), *small, "--save-every", "2"]
    main([*common, "--tower-steps", "2", "--steps", "2"])
    main([*common, "--tower-steps", "2", "--steps", "4"])  # resumes at step 4
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    evaluations = [(r["stage"], r["step"]) for r in log if "held_out" in r or "eval" in r]
    assert evaluations == [("tower", 2), ("agent", 4), ("agent", 6)]
    runtime = TinyRuntime.load(out)
    messages = [{"role": "user", "content": "What character is inside the red circle?"}]
    (generation,) = runtime.generate([(messages, SamplingSettings(max_tokens=4))])
    assert 1 <= generation.completion_tokens <= 4
