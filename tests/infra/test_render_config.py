"""The config renderer: placeholders filled, unknown keys and unfilled placeholders refused,
values that could break out of a pbtxt string refused, and the CLI's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from render_config import RenderError, load_values, main, placeholders, render

TEMPLATE = 'name: "${name}"\nmax_batch_size: ${batch}\nflag: "${flag}"\n'


def test_render_fills_every_placeholder() -> None:
    text = render(TEMPLATE, {"name": "agent_vlm", "batch": 8, "flag": True})
    assert text == 'name: "agent_vlm"\nmax_batch_size: 8\nflag: "true"\n'


def test_a_placeholder_used_twice_takes_one_value() -> None:
    assert render("${a}-${a}", {"a": 0.5}) == "0.5-0.5"


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(RenderError, match=r"unknown keys \['nmae'\]"):
        render(TEMPLATE, {"name": "x", "batch": 1, "flag": False, "nmae": "y"})


def test_unfilled_placeholders_are_refused() -> None:
    with pytest.raises(RenderError, match=r"placeholders without a value: \['batch', 'flag'\]"):
        render(TEMPLATE, {"name": "x"})


@pytest.mark.parametrize("value", ['a"b', "a\\b", "a\nb", "tab\there", None, [1], {"k": 1}])
def test_values_that_could_break_the_config_are_refused(value: object) -> None:
    with pytest.raises(RenderError, match="value of 'name'"):
        render('name: "${name}"', {"name": value})


@pytest.mark.parametrize("template", ["cost: $5", "x: ${not closed", "x: ${1bad}"])
def test_a_stray_dollar_is_refused(template: str) -> None:
    with pytest.raises(RenderError, match="start no"):
        placeholders(template)


def test_values_files_merge_in_order_then_assignments(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"name": "a", "batch": 1}))
    second.write_text(json.dumps({"batch": 2}))
    values = load_values([first, second], ["name=c"])
    assert values == {"name": "c", "batch": 2}


@pytest.mark.parametrize("assignment", ["no-equals", "=x", "bad key=1"])
def test_malformed_assignments_are_refused(assignment: str) -> None:
    with pytest.raises(RenderError, match="--set takes KEY=VALUE"):
        load_values([], [assignment])


def test_a_values_file_must_hold_an_object(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    path.write_text("[1, 2]")
    with pytest.raises(RenderError, match="must hold a JSON object"):
        load_values([path])


def test_cli_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = tmp_path / "t.pbtxt"
    template.write_text('name: "${name}"\nbackend: "python"\nmax_batch_size: ${batch}\n')
    out = tmp_path / "out" / "config.pbtxt"
    args = [str(template), "--set", "name=m", "--set", "batch=4"]
    assert main([*args, "-o", str(out), "--check"]) == 0
    assert out.read_text() == 'name: "m"\nbackend: "python"\nmax_batch_size: 4\n'

    assert main([*args, "--set", "x=1"]) == 2
    assert "unknown keys ['x']" in capsys.readouterr().err
    # A value that renders but is not a valid ModelConfig fails --check.
    assert main([str(template), "--set", "name=m", "--set", "batch=many", "--check"]) == 2
    assert "not a valid Triton ModelConfig" in capsys.readouterr().err
