#!/usr/bin/env bash
# Launch one annotate run from the flex template. Rerunning with the same OUTPUT only processes
# jobs without an answer row (the pipeline's resume); with the parameter incremental=true it
# also reads only the input files no earlier run read, as the schedulers' runs do.
#
#   PROJECT=my-proj REGION=us-central1 INPUT='gs://b/inputs/*.jsonl' OUTPUT=gs://b-out/annotate \
#     ENDPOINT=triton:10.20.0.50:8001 IMAGE=us-central1-docker.pkg.dev/my-proj/agent-vlm/dataflow:abc \
#     infra/dataflow/launch.sh [extra parameters, e.g. max_turns=12 max_pixels=1003520]
#
# ENDPOINT is the model server (triton:HOST:PORT, or openai:https://HOST/v1 with model_name and
# max_pixels); TRITON_URL=HOST:PORT is the same as ENDPOINT=triton:HOST:PORT. Every parameter
# is one that infra/dataflow/metadata.json declares. The launch submits the job and returns;
# once it ends, `python -m beam_pipelines status --output "$OUTPUT" RUN_ID` counts its outputs.
#
# Sizing (see docs/deployment.md): MACHINE_TYPE n2-standard-8 with MAX_WORKERS such that
# workers x processes x max_in_flight stays near what the Triton replicas batch.
set -euo pipefail

: "${PROJECT:?}" "${REGION:?}" "${INPUT:?}" "${OUTPUT:?}" "${IMAGE:?}"
ENDPOINT="${ENDPOINT:-triton:${TRITON_URL:?set ENDPOINT (or TRITON_URL)}}"
TEMPLATE="${TEMPLATE:-gs://$PROJECT-agent-vlm-templates/annotate/latest.json}"
SERVICE_ACCOUNT="${SERVICE_ACCOUNT:-agent-vlm-dataflow@$PROJECT.iam.gserviceaccount.com}"
SUBNETWORK="${SUBNETWORK:-regions/$REGION/subnetworks/agent-vlm-dataflow}"
MACHINE_TYPE="${MACHINE_TYPE:-n2-standard-8}"
MAX_WORKERS="${MAX_WORKERS:-16}"
JOB_NAME="${JOB_NAME:-agent-vlm-annotate-$(date -u +%Y%m%d-%H%M%S)}"

# Parameters are joined with "~" (gcloud's alternative delimiter), so values may hold commas.
extra=""
for parameter in "$@"; do
  extra+="~$parameter"
done

# Temp and staging live under the output bucket: the workers' service account writes nowhere else.
gcloud dataflow flex-template run "$JOB_NAME" \
  --project "$PROJECT" \
  --region "$REGION" \
  --template-file-gcs-location "$TEMPLATE" \
  --service-account-email "$SERVICE_ACCOUNT" \
  --subnetwork "$SUBNETWORK" \
  --disable-public-ips \
  --worker-machine-type "$MACHINE_TYPE" \
  --max-workers "$MAX_WORKERS" \
  --temp-location "$OUTPUT/_dataflow/temp" \
  --staging-location "$OUTPUT/_dataflow/staging" \
  --parameters "^~^input=$INPUT~output=$OUTPUT~endpoint=$ENDPOINT~sdk_container_image=$IMAGE~sdk_location=container$extra"
