#!/usr/bin/env bash
# Build the flex template image (launcher + workers) with Cloud Build and write the template
# spec to the templates bucket. Run from anywhere; needs gcloud authenticated on PROJECT.
#
#   PROJECT=my-proj REGION=us-central1 infra/dataflow/build.sh
#
# Environment: PROJECT, REGION (required); REPOSITORY (Artifact Registry repo, default
# agent-vlm), TAG (default: the git commit), TEMPLATE_BUCKET (default PROJECT-agent-vlm-templates).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}"
REPOSITORY="${REPOSITORY:-agent-vlm}"
TAG="${TAG:-$(git -C "$ROOT" rev-parse --short HEAD)}"
TEMPLATE_BUCKET="${TEMPLATE_BUCKET:-$PROJECT-agent-vlm-templates}"
IMAGE="$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/dataflow:$TAG"
SPEC="gs://$TEMPLATE_BUCKET/annotate/$TAG.json"

# Cloud Build with this repository as context and infra/dataflow/Dockerfile as the recipe.
config="$(mktemp)"
trap 'rm -f "$config"' EXIT
cat > "$config" <<YAML
steps:
  - name: gcr.io/cloud-builders/docker
    args: [build, -f, infra/dataflow/Dockerfile, -t, "$IMAGE", .]
images: ["$IMAGE"]
YAML
gcloud builds submit "$ROOT" --project "$PROJECT" --region "$REGION" --config "$config"

gcloud dataflow flex-template build "$SPEC" \
  --project "$PROJECT" \
  --image "$IMAGE" \
  --sdk-language PYTHON \
  --metadata-file "$ROOT/infra/dataflow/metadata.json"

# The spec the scheduler launches: a stable name pointing at this build.
gcloud storage cp "$SPEC" "gs://$TEMPLATE_BUCKET/annotate/latest.json"
echo "template: gs://$TEMPLATE_BUCKET/annotate/latest.json (image $IMAGE)"
