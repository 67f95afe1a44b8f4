"""The flex template's entry point run the way the template launcher runs it, and
`annotate --detach` on the DataflowRunner: both submit, exit 0 and never wait for the job nor
query its metrics. Storage is an in-memory GCS emulator on loopback; the only thing replaced is
the Dataflow API's job creation request (`submit_job_description`), for the detached
submission; a template launch makes no API call at all (the runner writes the job file that
the launcher submits)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from beam_pipelines.__main__ import main as cli
from beam_pipelines.outputs.layout import OutputLayout

from .conftest import REPO_ROOT

MAIN = REPO_ROOT / "infra" / "dataflow" / "main.py"
BUCKET = "agent-vlm-test"

#: Every test starts the GCS emulator (the `launch` fixture) and runs a pipeline launch.
pytestmark = pytest.mark.integration


@pytest.fixture
def launch(gcs_emulator: Any, tmp_path: Path) -> dict[str, str]:
    """A bucket for staging, temp and outputs, a one-job input, and the launcher's options."""
    if not gcs_emulator.bucket(BUCKET).exists():
        gcs_emulator.create_bucket(BUCKET)
    image = tmp_path / "image.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(image)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "a", "image": str(image), "question": "What?"}) + "\n")
    return {
        "runner": "DataflowRunner",
        "project": "test-project",
        "region": "us-central1",
        "staging_location": f"gs://{BUCKET}/{tmp_path.name}/staging",
        "temp_location": f"gs://{BUCKET}/{tmp_path.name}/temp",
        "sdk_container_image": "us-docker.pkg.dev/test-project/agent-vlm/dataflow:test",
        "sdk_location": "container",
        "input": str(jobs),
        "output": f"gs://{BUCKET}/{tmp_path.name}/out",
        "endpoint": "scripted:call",
        "max_pixels": "16384",
        "tools": "",
        "run_id": "scheduled-1",
    }


def _argv(options: dict[str, str]) -> list[str]:
    return [f"--{name}={value}" for name, value in options.items()]


def _manifest(options: dict[str, str]) -> dict[str, Any]:
    from beam_pipelines.io.files import read_bytes

    return json.loads(read_bytes(OutputLayout(options["output"], options["run_id"]).manifest))


def test_the_template_launcher_runs_main_py_and_it_exits_0(
    launch: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from apache_beam.io.filesystems import FileSystems

    job_file = f"gs://{BUCKET}/launch/job_object"
    monkeypatch.setattr(sys, "argv", [str(MAIN), *_argv({**launch, "template_location": job_file})])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(MAIN), run_name="__main__")
    out = capsys.readouterr()
    assert exit_.value.code == 0, out.err[-3000:]
    assert "submitted run scheduled-1;" in out.out
    # The runner wrote the job for the launcher to submit, with our options and image, and
    # staged the annotate graph.
    with FileSystems.open(job_file) as handle:
        job = json.loads(handle.read())
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert options["run_id"] == "scheduled-1"
    assert launch["sdk_container_image"] in json.dumps(job)
    with FileSystems.open(options["pipelineUrl"]) as handle:
        assert b"AgentLoop" in handle.read()
    manifest = _manifest(launch)
    assert manifest["status"] == "submitted" and manifest["job_id"] is None
    assert manifest["counts_file"] == OutputLayout(launch["output"], "scheduled-1").counts
    assert "--detach" in manifest["argv"]

    # `status` fills the counts in from the outputs (none: nothing ran here).
    assert cli(["status", "--output", launch["output"], "scheduled-1"]) == 0
    assert "run scheduled-1: submitted" in capsys.readouterr().out
    with FileSystems.open(manifest["counts_file"]) as handle:
        counts = json.loads(handle.read())
    assert counts["run_id"] == "scheduled-1" and counts["finished"] == 0


def test_annotate_detach_submits_to_dataflow_and_returns_the_job_id(
    launch: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from apache_beam.runners.dataflow.internal import apiclient
    from google.cloud.dataflow_v1beta3 import Job

    submitted: list[Any] = []

    def create_job_request(self: Any, job: Any) -> Job:  # the Dataflow API's CreateJob call
        submitted.append(job)
        return Job(id="2026-12-07_01_02_03-42", name=job.proto.name)

    monkeypatch.setattr(
        apiclient.DataflowApplicationClient, "submit_job_description", create_job_request
    )
    launch = {**launch, "run_id": "detached-1"}
    assert cli(["annotate", *_argv(launch), "--detach"]) == 0, capsys.readouterr().err[-3000:]
    assert "as job 2026-12-07_01_02_03-42" in capsys.readouterr().out
    [job] = submitted
    assert "detached-1" in job.json()
    manifest = _manifest(launch)
    assert manifest["status"] == "submitted"
    assert manifest["job_id"] == "2026-12-07_01_02_03-42"


def test_a_run_that_waits_writes_counts_json_and_status_counts_the_same(
    launch: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = {k: v for k, v in launch.items() if k in ("input", "endpoint", "max_pixels", "tools")}
    local |= {"output": str(tmp_path / "out"), "run_id": "local-1", "progress": "off"}
    assert cli(["annotate", *_argv(local)]) == 0
    layout = OutputLayout(local["output"], "local-1")
    written = json.loads(Path(layout.counts).read_text())
    assert written["answered"] == 1 and written["finished"] == 1
    manifest = json.loads(Path(layout.manifest).read_text())
    assert manifest["status"] == "done" and manifest["counts_file"] == layout.counts
    Path(layout.counts).unlink()
    assert cli(["status", "--output", local["output"]]) == 0  # the newest run
    assert "run local-1: done" in capsys.readouterr().out
    recounted = json.loads(Path(layout.counts).read_text())
    assert {k: v for k, v in recounted.items() if k != "counted_at"} == {
        k: v for k, v in written.items() if k != "counted_at"
    }
