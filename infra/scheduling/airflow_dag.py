"""Airflow DAG for Cloud Composer: launch the annotate flex template on a schedule.

Every run is incremental and writes under the same output root: it reads only the input files
no earlier run read (new or changed ones) and skips ids by the root's index of answered ids, so
it costs its new inputs plus the index (docs/deployment.md, "The incremental model"). Runs never
overlap (`max_active_runs=1`), so two runs cannot both pick up the same new file.

Set the Airflow variables below (Admin > Variables), or edit the defaults.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.models import Variable
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

PROJECT = Variable.get("agent_vlm_project", default_var="PROJECT_ID")
REGION = Variable.get("agent_vlm_region", default_var="us-central1")
INPUT = Variable.get("agent_vlm_input", default_var=f"gs://{PROJECT}-agent-vlm-inputs/jobs/*.jsonl")
OUTPUT = Variable.get("agent_vlm_output", default_var=f"gs://{PROJECT}-agent-vlm-output/annotate")
# triton:HOST:PORT (the internal load balancer) or openai:https://HOST/v1 (then also set
# agent_vlm_max_pixels: such servers state no image budget).
ENDPOINT = Variable.get("agent_vlm_endpoint", default_var="triton:10.20.0.50:8001")
MAX_PIXELS = Variable.get("agent_vlm_max_pixels", default_var="")
IMAGE = Variable.get(
    "agent_vlm_image", default_var=f"{REGION}-docker.pkg.dev/{PROJECT}/agent-vlm/dataflow:latest"
)
TEMPLATE = f"gs://{PROJECT}-agent-vlm-templates/annotate/latest.json"

with DAG(
    dag_id="agent_vlm_annotate",
    description="Annotate new image-question jobs with the agentic VLM (resumable Dataflow run)",
    schedule="0 */6 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=15)},
    tags=["agent-vlm"],
) as dag:
    DataflowStartFlexTemplateOperator(
        task_id="annotate",
        project_id=PROJECT,
        location=REGION,
        wait_until_finished=True,
        body={
            "launchParameter": {
                "jobName": "agent-vlm-annotate-{{ ts_nodash | lower }}",
                "containerSpecGcsPath": TEMPLATE,
                "parameters": {
                    "input": INPUT,
                    "output": OUTPUT,
                    "endpoint": ENDPOINT,
                    "incremental": "true",
                    "run_id": "{{ ts_nodash }}",
                    "sdk_container_image": IMAGE,
                    "sdk_location": "container",
                    **({"max_pixels": MAX_PIXELS} if MAX_PIXELS else {}),
                },
                "environment": {
                    "serviceAccountEmail": f"agent-vlm-dataflow@{PROJECT}.iam.gserviceaccount.com",
                    "subnetwork": f"regions/{REGION}/subnetworks/agent-vlm-dataflow",
                    "ipConfiguration": "WORKER_IP_PRIVATE",
                    "machineType": "n2-standard-8",
                    "maxWorkers": 16,
                    "tempLocation": f"{OUTPUT}/_dataflow/temp",
                    "stagingLocation": f"{OUTPUT}/_dataflow/staging",
                },
            }
        },
    )
