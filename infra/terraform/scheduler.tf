# The scheduled annotate run: Cloud Scheduler calls the Dataflow flexTemplates.launch API as the
# scheduler service account. Each run is incremental: it reads only the input files no earlier
# run read, and skips ids by the output root's index of answered ids (docs/deployment.md, "The
# incremental model"), so it costs its new inputs plus the index. The job name is fixed:
# Dataflow refuses a second active job of the same name, so a run still going when the next one
# is due is not doubled (and runs never overlap, which the incremental model needs).
locals {
  launch_url = "https://dataflow.googleapis.com/v1b3/projects/${var.project}/locations/${var.region}/flexTemplates:launch"
  launch_body = {
    launchParameter = {
      jobName              = "agent-vlm-annotate-scheduled"
      containerSpecGcsPath = "gs://${google_storage_bucket.templates.name}/annotate/latest.json"
      parameters = {
        input               = var.input_glob != "" ? var.input_glob : "gs://${google_storage_bucket.inputs.name}/jobs/*.jsonl"
        output              = local.output_root
        endpoint            = "triton:${var.triton_url}"
        incremental         = "true"
        sdk_container_image = "${var.region}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.images.repository_id}/dataflow:${var.dataflow_image_tag}"
        sdk_location        = "container"
      }
      environment = {
        serviceAccountEmail = google_service_account.dataflow.email
        subnetwork          = google_compute_subnetwork.dataflow.self_link
        ipConfiguration     = "WORKER_IP_PRIVATE"
        machineType         = var.dataflow_machine_type
        maxWorkers          = var.dataflow_max_workers
        tempLocation        = "${local.output_root}/_dataflow/temp"
        stagingLocation     = "${local.output_root}/_dataflow/staging"
        additionalUserLabels = {
          app = "agent-vlm"
        }
      }
    }
  }
}

resource "google_cloud_scheduler_job" "annotate" {
  name        = "agent-vlm-annotate"
  description = "Annotate new jobs with the agentic VLM (resumable Dataflow flex template run)"
  region      = var.region
  schedule    = var.schedule
  time_zone   = var.schedule_time_zone

  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = local.launch_url
    headers = {
      "Content-Type" = "application/json"
    }
    body = base64encode(jsonencode(local.launch_body))
    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  lifecycle {
    precondition {
      condition     = var.triton_url != ""
      error_message = "Set triton_url to the internal load balancer's host:8001."
    }
  }
}
