"""Options parsed once at the edge: defaults, validation, the default runner."""

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.model_client.base import ImageBudget
from beam_pipelines.options import (
    DEFAULT_RUNNER,
    config_from_options,
    is_local_runner,
    parse_tools,
    with_default_runner,
)

BASE = ["--input=in.jsonl", "--output=out/"]


TINY = ImageBudget(16384, 16384, 16, 1)
R1V4ISH = ImageBudget(65536, 16777216, 16, 2)


def config(*args: str, **kwargs: object):
    kwargs.setdefault("model_budget", TINY)
    return config_from_options(PipelineOptions([*BASE, *args]), **kwargs)


def test_defaults() -> None:
    c = config("--triton_url=127.0.0.1:8001")
    assert c.output == "out"  # no trailing slash in joined paths
    assert c.max_turns == 16 and c.endpoint.max_in_flight == 64
    assert c.protocol == "r1v4" and c.tools == ("code",)
    assert c.max_pixels == TINY.max_pixels  # the server's own budget
    assert c.sampling["temperature"] == 0.0
    assert c.endpoint.retry.retryable == ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def test_dashes_and_underscores_both_work() -> None:
    c = config("--triton-url", "h:1", "--max-turns", "3", "--max_in_flight=5", "--limit=7")
    assert (c.endpoint.url, c.max_turns, c.endpoint.max_in_flight, c.limit) == ("h:1", 3, 5, 7)


def test_zoom_protocol_defaults_to_its_own_tool() -> None:
    assert config("--protocol=zoom", endpoint="h:1").tools == ("image_zoom_in_tool",)


def test_tools_list_and_no_tools() -> None:
    assert parse_tools(" code, text_search ,") == ("code", "text_search")
    assert config("--tools=", endpoint="h:1").tools == ()


def test_server_values_and_overrides() -> None:
    c = config(endpoint="h:2", model_label="agent_vlm/hf:r1v4", model_budget=R1V4ISH)
    assert (c.endpoint.url, c.model_label, c.max_pixels) == ("h:2", "agent_vlm/hf:r1v4", 16777216)
    assert config("--max_pixels=1024", endpoint="h", model_budget=R1V4ISH).max_pixels == 1024


def test_max_pixels_can_only_lower_the_stated_budget() -> None:
    with pytest.raises(ValueError, match="can only lower it"):
        config("--max_pixels=20000", endpoint="h:1", model_budget=TINY)


def test_a_server_that_states_no_budget_needs_max_pixels() -> None:
    with pytest.raises(ValueError, match="states no image budget"):
        config(endpoint="openai:https://h/v1", model_budget=None)
    assert (
        config("--max_pixels=1000000", endpoint="openai:https://h/v1", model_budget=None).max_pixels
        == 1000000
    )


@pytest.mark.parametrize(
    "bad",
    ["--max_turns=0", "--max_in_flight=0", "--max_attempts=0", "--limit=-1", "--run_id=../x"],
)
def test_invalid_values_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        config(bad, endpoint="h:1")


def test_a_model_server_is_required() -> None:
    with pytest.raises(ValueError, match="no model server"):
        config()


@pytest.mark.parametrize(
    ("args", "kind", "url"),
    [
        (["--triton_url=h:8001"], "triton", "h:8001"),
        (["--endpoint=triton:h:8001"], "triton", "h:8001"),
        (["--endpoint=h:8001"], "triton", "h:8001"),
        (
            ["--endpoint=openai:https://api.example/v1", "--model=r1v4"],
            "openai",
            "https://api.example/v1",
        ),
        (["--endpoint=scripted:call"], "scripted", "call"),
    ],
)
def test_the_endpoint_names_its_kind(args: list[str], kind: str, url: str) -> None:
    endpoint = config(*args).endpoint
    assert (endpoint.kind, endpoint.url) == (kind, url)


def test_an_endpoint_with_a_scheme_but_no_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="openai:https://h/v1"):
        config("--endpoint=https://h/v1")
    with pytest.raises(ValueError, match="not both"):
        config("--endpoint=triton:h:1", "--triton_url=h:2")


def test_default_runner_is_the_in_process_one() -> None:
    assert with_default_runner(["--x=1"]) == ["--x=1", f"--runner={DEFAULT_RUNNER}"]
    assert with_default_runner(["--runner", "DataflowRunner"]) == ["--runner", "DataflowRunner"]
    assert is_local_runner(PipelineOptions(with_default_runner([])))
    assert not is_local_runner(PipelineOptions(["--runner=DataflowRunner"]))


def test_run_ids_are_unique_and_sortable() -> None:
    a, b = config(endpoint="h").run_id, config(endpoint="h").run_id
    assert a != b and a[:8].isdigit()
