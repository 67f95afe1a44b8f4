#!/usr/bin/env bash
# Container entrypoint: fetch the model from its bucket, render the deployment config for it,
# and exec tritonserver with agent_vlm. Readiness is Triton's own /v2/health/ready: it turns
# ready only once the model is loaded (strict readiness), so a pod serves nothing before that.
#
# Environment:
#   MODEL_URI        gs://bucket/prefix of the HF checkpoint (required)
#   MODEL_DIR        local directory for it (default /models/checkpoint)
#   CONFIG_NAME      template under templates/ (default skywork_r1v4_trtllm)
#   CONFIG_VARIANT   values file under values/<CONFIG_NAME>/ (default h100x1-bf16)
#   CONFIG_SET       extra KEY=VALUE overrides, space-separated (optional)
#   TRITON_ARGS      extra tritonserver flags (optional)
set -euo pipefail

APP=/opt/agent-vlm
MODEL_DIR="${MODEL_DIR:-/models/checkpoint}"
CONFIG_NAME="${CONFIG_NAME:-skywork_r1v4_trtllm}"
CONFIG_VARIANT="${CONFIG_VARIANT:-h100x1-bf16}"
: "${MODEL_URI:?set MODEL_URI to the gs:// prefix of the checkpoint}"

python3 "$APP/bin/fetch_model.py" "$MODEL_URI" "$MODEL_DIR"

sets=(--set "checkpoint=$MODEL_DIR")
# The image budget the config states is the fetched checkpoint's own (clients size views by it).
for assignment in $(python3 "$APP/triton_repo/agent_vlm/1/budget.py" trtllm "$MODEL_DIR"); do
  sets+=(--set "$assignment")
done
for assignment in ${CONFIG_SET:-}; do
  sets+=(--set "$assignment")
done
python3 "$APP/bin/render_config.py" "$APP/templates/$CONFIG_NAME.pbtxt" \
  --values "$APP/values/$CONFIG_NAME/$CONFIG_VARIANT.json" "${sets[@]}" \
  -o "$APP/triton_repo/agent_vlm/configs/$CONFIG_NAME.pbtxt"

# shellcheck disable=SC2086  # TRITON_ARGS is a list of flags
exec tritonserver \
  --model-repository="$APP/triton_repo" \
  --model-control-mode=explicit \
  --load-model=agent_vlm \
  --model-config-name="$CONFIG_NAME" \
  --strict-readiness=true \
  --exit-on-error=true \
  --http-port=8000 --grpc-port=8001 --metrics-port=8002 \
  --allow-metrics=true --allow-gpu-metrics=true \
  ${TRITON_ARGS:-}
