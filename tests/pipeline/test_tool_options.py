"""Tool selection and per-tool settings from the command line: `--tools`, `--tool_config`,
`--tool_option`; parsed and checked at launch, carried to the workers' tools."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import annotate
from beam_pipelines.agent import loop
from beam_pipelines.agent.records import ImageRef, Job
from beam_pipelines.options import config_from_options, tool_settings_from_options
from beam_pipelines.transforms.execute_tools import ToolRuntime
from tools.registry import tool_specs
from tools.search.corpus import CorpusSpec, build_corpus, codebook, codebook_url

from .helpers import png
from .runs import annotate_run, run_rows

BASE = ["--input=in.jsonl", "--output=out", "--triton_url=h:1", "--max_pixels=16384"]
SEARCH = "--tools=code,text_search,web_visit"


def settings(*args: str) -> dict:
    return tool_settings_from_options(PipelineOptions([*BASE, *args]))


def test_no_settings_by_default() -> None:
    assert settings() == {}
    assert config_from_options(PipelineOptions(BASE)).tool_settings == {}


def test_config_and_options_merge_options_win() -> None:
    config = {"text_search": {"provider": "brave", "max_results": 3}, "code": {"wall_s": 5}}
    got = settings(
        SEARCH,
        f"--tool_config={json.dumps(config)}",
        "--tool_option=text_search.provider=serper",  # not JSON: taken as text
        "--tool-option=text_search.base_url=http://127.0.0.1:9/",
        '--tool_option=web_visit.allow_hosts=["intranet.example"]',  # JSON
        "--tool_option=web_visit.max_chars=900",
        "--tool_option=web_visit.cache=null",
    )
    assert got == {
        "text_search": {"provider": "serper", "max_results": 3, "base_url": "http://127.0.0.1:9/"},
        "code": {"wall_s": 5},
        "web_visit": {"allow_hosts": ["intranet.example"], "max_chars": 900, "cache": None},
    }


def test_tool_config_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"web_visit": {"provider": "http", "max_urls": 2}}))
    config = config_from_options(PipelineOptions([*BASE, SEARCH, f"--tool-config={path}"]))
    assert config.tool_settings == {"web_visit": {"provider": "http", "max_urls": 2}}
    # The config goes to Dataflow workers pickled, settings and all.
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([SEARCH, "--tool_option=image_search.max_results=2"], "image_search.*not being built"),
        (["--tool_option=text_search.provider=serper"], "text_search.*not being built"),
        ([SEARCH, "--tool_option=text_search.providr=serper"], "tool 'text_search'.*providr"),
        ([SEARCH, "--tool_option=text_search.provider=bing"], "tool 'text_search'.*provider"),
        ([SEARCH, "--tool_option=web_visit.max_chars=10"], "tool 'web_visit'.*max_chars"),
        ([SEARCH, "--tool_option=code.wall_seconds=1"], "tool 'code'.*wall_seconds"),
        (["--tools=code,txt_search"], "unknown tool 'txt_search'"),
        ([SEARCH, "--tool_config=[1, 2]"], "JSON object"),
        ([SEARCH, '--tool_config={"text_search": 3}'], "JSON object"),
        ([SEARCH, "--tool_config={nope"], "not valid JSON"),
        ([SEARCH, "--tool_config=/no/such/tools.json"], "cannot read /no/such/tools.json"),
        ([SEARCH, "--tool_option=text_search=serper"], "TOOL.SETTING=VALUE.*'text_search'"),
    ],
)
def test_mistakes_are_refused_at_launch(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(*args)


@pytest.mark.parametrize(
    "option",
    [
        "text_search.api_key=sk-SECRET-123",
        "text_search.serper_key=sk-SECRET-123",
        "web_visit.token=sk-SECRET-123",
        "text_search.sk-SECRET-123",  # a key pasted without its setting name
    ],
)
def test_secrets_are_refused_and_never_echoed(option: str) -> None:
    with pytest.raises(ValueError) as refused:
        settings(SEARCH, f"--tool_option={option}")
    assert "SECRET" not in str(refused.value)
    assert "api_key_env" in str(refused.value) or "TOOL.SETTING=VALUE" in str(refused.value)


def test_the_key_variable_is_a_setting() -> None:
    got = settings(SEARCH, "--tool_option=text_search.api_key_env=MY_SERPER_KEY")
    assert got == {"text_search": {"api_key_env": "MY_SERPER_KEY"}}


def test_settings_shape_the_prompt_headers() -> None:
    [spec] = tool_specs(["text_search"], text_search={"max_queries": 2})
    assert spec.parameters["properties"]["queries"]["maxItems"] == 2


def test_zoom_coordinates_setting_reaches_the_prompt_and_the_tool() -> None:
    """`--tool_option image_zoom_in_tool.coordinates=absolute`: the model is told absolute
    pixel coordinates, and the tool reads pixels of the view the model saw."""
    config = config_from_options(
        PipelineOptions(
            [*BASE, "--protocol=zoom", "--tool_option=image_zoom_in_tool.coordinates=absolute"]
        )
    )
    specs = tool_specs(config.tools, **config.tool_settings)
    original, view = ImageRef("o.png", "o", 400, 200), ImageRef("v.png", "v", 200, 100)
    job = Job(id="1", image="o.png", question="What is written?")
    traj = loop.start(job, config.protocol, specs, original, view, model="m", sampling={})
    prompt = traj.messages[0]["content"]
    assert "absolute pixel coordinates" in prompt and "0 to 1000" not in prompt
    runtime = ToolRuntime(config.tools, workers=1, settings=config.tool_settings)
    zoom = runtime.tools["image_zoom_in_tool"]
    assert zoom.crop_box([10, 20, 110, 70], (400, 200), (200, 100)) == (20, 40, 220, 140)  # type: ignore[attr-defined]


def test_the_workers_tools_get_the_settings() -> None:
    runtime = ToolRuntime(
        ["code", "text_search"],
        workers=2,
        settings={"code": {"wall_s": 3}, "text_search": {"max_results": 2}},
    )
    assert runtime.tools["text_search"]._settings.max_results == 2  # type: ignore[attr-defined]
    code = runtime.tools["code"]._config  # type: ignore[attr-defined]
    assert (code.pool_size, code.limits.wall_s) == (2, 3)  # --tool_workers sizes the pool
    sized = ToolRuntime(["code"], workers=2, settings={"code": {"pool_size": 1}})
    assert sized.tools["code"]._config.pool_size == 1  # type: ignore[attr-defined]


def test_the_command_refuses_bad_settings_before_starting_a_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_server(stack: object) -> str:
        raise AssertionError("a server was started before the tool settings were checked")

    monkeypatch.setattr(annotate, "_start_server", no_server)
    code = annotate.main(
        ["--input=in.jsonl", "--output=out", SEARCH, "--tool_option=text_search.provider=bing"]
    )
    assert code == 2
    assert "provider must be one of offline, serper, brave" in capsys.readouterr().err


def test_help_lists_the_tool_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert annotate.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--tool_config" in out and "--tool_option" in out


# -- through the pipeline ---------------------------------------------------------------------


def call_job(job_id: str, image: Path, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    call = json.dumps({"name": name, "arguments": arguments})
    return {"id": job_id, "image": str(image), "question": f"CALL {call}"}


def test_settings_reach_the_tools_of_a_run(tmp_path: Path) -> None:
    """An offline corpus of our own, named by --tool_config, is what the run's tools read;
    --tool_option changes another setting on top."""
    symbol, seed = "Q", 3
    corpus = build_corpus(
        tmp_path / "corpus", CorpusSpec(seed, symbols=symbol, plates=1, articles=2)
    )
    word = codebook(seed, symbol)[symbol]
    assert word != codebook()[symbol]  # the default corpus would say something else
    image = tmp_path / "image.png"
    image.write_bytes(png())
    jobs = [
        call_job("visit", image, "web_visit", {"urls": [codebook_url(symbol)]}),
        call_job("search", image, "text_search", {"queries": [f"codebook symbol {symbol}"]}),
    ]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(job) + "\n" for job in jobs))
    (tmp_path / "tools.json").write_text(
        json.dumps(
            {"web_visit": {"corpus": str(corpus.root)}, "text_search": {"corpus": str(corpus.root)}}
        )
    )

    result = annotate_run(
        tmp_path / "jobs.jsonl",
        tmp_path / "out",
        "scripted:call",  # makes the calls the jobs ask for, in-process
        "--tools=text_search,web_visit",
        f"--tool_config={tmp_path / 'tools.json'}",
        "--tool_option=text_search.max_results=1",
    )

    answers, failures = run_rows(result)
    assert not failures, failures
    observed = {row["id"]: json.loads(row["answer"]) for row in answers}
    assert observed["visit"]["type"] == "web_visit"
    assert f"the symbol {symbol} stands for the codeword {word}" in observed["visit"]["result"]
    hits = json.loads(observed["search"]["result"])
    assert len(hits) == 1 and hits[0]["url"] == codebook_url(symbol)
    manifest = json.loads((Path(result.layout.run_dir) / "manifest.json").read_text())
    assert manifest["config"]["tool_settings"]["text_search"]["max_results"] == 1
