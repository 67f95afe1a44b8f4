"""The `--setup_file` packaging path, offline: the project's sdist built the way Beam's stager
builds it for `--setup_file ./setup.py` (`Stager._build_setup_package`: `python -m build
--sdist` where `build` is installed, else `python setup.py sdist`), installed with pip
(`--no-index --no-deps`) into a fresh venv, and a run of the installed package from outside
the checkout. The venv sees the locked dependencies through a `.pth` line to this
environment's site-packages (whose editable install of the project is not activated: that
line's own `.pth` files are not read)."""

from __future__ import annotations

import json
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from PIL import Image

from .conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_staged_sdist_installs_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    from apache_beam.runners.portability.stager import Stager

    sdist = Path(Stager._build_setup_package(str(REPO_ROOT / "setup.py"), str(tmp_path)))
    assert sdist.name == "beam_agentic_vlm-0.1.0.tar.gz"

    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    [target] = json.loads(
        subprocess.run(
            [python, "-c", "import json, site; print(json.dumps(site.getsitepackages()))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    (Path(target) / "locked_dependencies.pth").write_text(site.getsitepackages()[0] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q"]
    offline = ["--no-index", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, *offline, sdist], check=True, cwd=tmp_path)

    image = tmp_path / "image.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(image)
    (tmp_path / "jobs.jsonl").write_text(
        json.dumps({"id": "a", "image": str(image), "question": "What?"}) + "\n"
    )
    check = (
        "import beam_pipelines, tools, tiny_agent\n"
        "from importlib import resources\n"
        f"assert beam_pipelines.__file__.startswith({target!r}), beam_pipelines.__file__\n"
        "assert (resources.files('beam_pipelines.report') / 'templates' / 'index.html').is_file()\n"
        "from beam_pipelines.__main__ import main\n"
        "raise SystemExit(main(['annotate', '--input=jobs.jsonl', '--output=out', "
        "'--endpoint=scripted:call', '--max_pixels=16384', '--tools=', '--run_id=r', "
        "'--progress=off']))\n"
    )
    run = subprocess.run(
        [python, "-c", check], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    counts = json.loads((tmp_path / "out" / "runs" / "r" / "counts.json").read_text())
    assert counts["answered"] == 1
