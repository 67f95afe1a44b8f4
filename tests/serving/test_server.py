"""`agent_vlm` on a real tritonserver (the session's, serving the random tiny Qwen3-VL-MoE with
the `hf` engine on CPU), through tritonclient gRPC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
from engine_hf import VisionChatProcessor

from beam_pipelines.serve import TritonServer, TritonStartupError, stage_model_repository

from .support import (
    MODEL_NAME,
    REPO_ROOT,
    Reply,
    image_message,
    infer,
    inputs,
    reply,
    sample_image,
    stream_infer,
)

pytestmark = pytest.mark.integration

GREEDY = {"max_tokens": 16, "temperature": 0}


def test_server_is_live_and_ready_over_http_and_grpc(server: TritonServer, client: Any) -> None:
    assert client.is_server_live() and client.is_model_ready(MODEL_NAME)
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=5) as ready:
        assert ready.status == 200


def test_model_metadata_is_the_contract(client: Any) -> None:
    metadata = client.get_model_metadata(MODEL_NAME, as_json=True)
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("messages", "BYTES", ["-1", "1"]),
        ("sampling", "BYTES", ["-1", "1"]),
    ]
    assert [t["name"] for t in metadata["outputs"]] == ["text", "finish_reason", "usage"]


def test_a_request_with_an_image(client: Any, tiny_checkpoint: Path) -> None:
    messages = image_message("What colour is the square?", sample_image())
    result = infer(client, messages, GREEDY)
    assert result.finish_reason in ("stop", "length")
    assert result.text
    assert set(result.usage) == {"prompt_tokens", "completion_tokens"}
    assert 0 < result.usage["completion_tokens"] <= 16
    # usage counts the real prompt tokens: rendered template plus the image's visual tokens.
    processor = VisionChatProcessor.load(tiny_checkpoint)
    parsed = [
        {
            **m,
            "content": [
                {"type": "image", "image": sample_image()} if p["type"] == "image_url" else p
                for p in m["content"]
            ],
        }
        if isinstance(m["content"], list)
        else m
        for m in messages
    ]
    batch = processor.batch([processor.render(parsed)], [sample_image()])
    assert result.usage["prompt_tokens"] == batch.prompt_tokens[0]


def test_greedy_is_deterministic(client: Any) -> None:
    messages = image_message("Describe it.", sample_image())
    assert infer(client, messages, GREEDY) == infer(client, messages, GREEDY)


def test_stop_string_is_included_and_ends_generation(client: Any) -> None:
    messages = image_message("Think, then answer.", sample_image((10, 200, 10)))
    full = infer(client, messages, {"max_tokens": 24})
    assert full.finish_reason == "length" and len(full.text) >= 12, full
    stop = full.text[5:8]
    stopped = infer(client, messages, {"max_tokens": 24, "stop": ["</answer>", stop]})
    assert stopped.text == full.text[: full.text.index(stop) + len(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.usage["completion_tokens"] < full.usage["completion_tokens"]


def test_seed_reproduces_sampling(client: Any) -> None:
    messages = image_message("Say something.", sample_image())
    sampling = {"max_tokens": 16, "temperature": 1.0, "top_p": 0.95, "seed": 1234}
    first, second = infer(client, messages, sampling), infer(client, messages, sampling)
    assert first == second
    assert infer(client, messages, {**sampling, "seed": 4321}).text != first.text


def _send_concurrently(client: Any, requests: list[tuple[Any, Any]]) -> list[Reply]:
    """Submit all requests at once on one stream (so that they are in flight together);
    replies in request order."""
    return [reply(r) for r in stream_infer(client, [inputs(m, s) for m, s in requests])]


def _inferences(client: Any) -> int:
    return client.get_inference_statistics(MODEL_NAME).model_stats[0].inference_count


def test_a_batch_mixing_valid_and_invalid_requests(client: Any) -> None:
    red = image_message("Which colour?", sample_image((220, 0, 0)))
    text_only = [{"role": "user", "content": "Just text, no image."}]
    bad_image = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ],
        }
    ]
    sampled = {"max_tokens": 12, "temperature": 0.8, "seed": 5}
    requests: list[tuple[Any, Any]] = [
        (red, GREEDY),
        ("{this is not json", GREEDY),
        (text_only, sampled),
        (bad_image, GREEDY),
        (red, {"max_tokens": 12, "top_p": 0}),
        (red, {"max_tokens": 5, "temperature": 0}),
        (text_only, {"max_tokens": 4, "surprise": 1}),
        (image_message("Another.", sample_image((0, 0, 220))), GREEDY),
    ]
    before = _inferences(client)
    replies = _send_concurrently(client, requests)
    # Triton updates its statistics after a response is sent; give them a moment to settle.
    deadline = time.monotonic() + 10
    after = _inferences(client)
    while after - before < len(requests) and time.monotonic() < deadline:
        time.sleep(0.05)
        after = _inferences(client)

    reasons = [r.finish_reason for r in replies]
    assert reasons[1] == reasons[3] == reasons[4] == reasons[6] == "error"
    assert "messages is not valid UTF-8 JSON" in replies[1].text
    assert "messages[0].content[0]: image could not be decoded" in replies[3].text
    assert "top_p" in replies[4].text
    assert "unknown keys ['surprise']" in replies[6].text
    assert all(
        replies[i].usage == {"prompt_tokens": 0, "completion_tokens": 0} for i in (1, 3, 4, 6)
    )
    # Valid requests are unaffected by their neighbours: each equals the same request alone.
    for index in (0, 2, 5, 7):
        assert replies[index].finish_reason in ("stop", "length")
        assert replies[index] == infer(client, *requests[index]), index
    # Every request was counted once. (How Triton grouped them into `execute` calls is no
    # longer observable batching: the decoupled model batches in the engine.)
    assert after - before == len(requests)


def test_a_client_batch_of_several_rows(client: Any) -> None:
    """A request may carry several rows (batch dimension > 1); each row gets its reply."""
    import numpy as np

    rows = [
        (json.dumps(image_message("one", sample_image())), json.dumps(GREEDY)),
        ("[]", json.dumps(GREEDY)),
    ]
    tensors = []
    for name, column in (("messages", 0), ("sampling", 1)):
        tensor = grpcclient.InferInput(name, [2, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[r[column].encode()] for r in rows], dtype=np.object_))
        tensors.append(tensor)
    [result] = stream_infer(client, [tensors])
    assert [x[0].decode() for x in result.as_numpy("finish_reason")] in (
        ["stop", "error"],
        ["length", "error"],
    )
    assert result.as_numpy("text")[0][0].decode() == infer(client, *rows[0]).text


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"engine": "nope"}, "parameter 'engine' must be one of"),
        ({"checkpoint": "/nonexistent/checkpoint"}, "checkpoint directory not found"),
        (
            {"min_pixels": "1024", "max_pixels": "999999", "patch_size": "16", "merge_size": "2"},
            "processor has min_pixels=1024, max_pixels=16384",
        ),
    ],
    ids=["unknown-engine", "missing-checkpoint", "another-image-budget"],
)
def test_a_broken_config_fails_to_start_with_a_readable_error(
    tmp_path: Path, tiny_checkpoint: Path, parameters: dict[str, str], expected: str
) -> None:
    repository = stage_model_repository(
        tmp_path / "repo",
        model_config_name="hf",
        parameters={"checkpoint": str(tiny_checkpoint), "device": "cpu", **parameters},
        instance_kind="KIND_CPU",
    )
    server = TritonServer(repository, log_file=tmp_path / "server.log", startup_timeout_s=120)
    with pytest.raises(TritonStartupError) as failure:
        server.start()
    message = str(failure.value)
    assert "tritonserver exited" in message
    assert "--- log tail ---" in message
    assert expected in message
    assert not server.running


@pytest.mark.slow
def test_cli_serves_until_interrupted(tmp_path: Path, tiny_checkpoint: Path) -> None:
    command = [
        sys.executable, "-m", "beam_pipelines", "serve",
        "--model-config-name", "hf",
        "--param", f"checkpoint={tiny_checkpoint}",
        "--param", "device=cpu",
        "--instance-kind", "KIND_CPU",
        "--log-file", str(tmp_path / "cli.log"),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("agent_vlm ready: grpc 127.0.0.1:"), line + process.stderr.read()
        grpc_url = line.split()[3]
        with grpcclient.InferenceServerClient(grpc_url) as cli_client:
            assert (
                infer(cli_client, image_message("hi"), {"max_tokens": 2}).usage["completion_tokens"]
                == 2
            )
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "successfully unloaded 'agent_vlm'" in (tmp_path / "cli.log").read_text()
