locals {
  output_root = "gs://${google_storage_bucket.output.name}/${var.output_prefix}"
}

# The checkpoint(s) Triton serves. Read-only for Triton; written by whoever publishes models.
resource "google_storage_bucket" "models" {
  name                        = "${var.project}-agent-vlm-models"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = true
  }
}

# Jobs to annotate (JSONL/Parquet and images). Read-only for Dataflow.
resource "google_storage_bucket" "inputs" {
  name                        = "${var.project}-agent-vlm-inputs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
}

# The output root: answers, traces, failures, images, manifests, and Dataflow's temp/staging.
# The only bucket Dataflow writes.
resource "google_storage_bucket" "output" {
  name                        = "${var.project}-agent-vlm-output"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Traces (runs/<run_id>/traces/part-*.jsonl.gz) are large and read rarely: cooler storage
  # as they age, then deletion. Answers, failures and manifests are kept.
  lifecycle_rule {
    condition {
      age            = var.trace_nearline_days
      matches_suffix = [".jsonl.gz"]
      matches_prefix = ["${var.output_prefix}/runs/"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "NEARLINE"
    }
  }
  lifecycle_rule {
    condition {
      age            = var.trace_coldline_days
      matches_suffix = [".jsonl.gz"]
      matches_prefix = ["${var.output_prefix}/runs/"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "COLDLINE"
    }
  }
  dynamic "lifecycle_rule" {
    for_each = var.trace_retention_days > 0 ? [var.trace_retention_days] : []
    content {
      condition {
        age            = lifecycle_rule.value
        matches_suffix = [".jsonl.gz"]
        matches_prefix = ["${var.output_prefix}/runs/"]
      }
      action {
        type = "Delete"
      }
    }
  }
  # Tool images are content-addressed and shared by every run's traces: colder, never deleted
  # by age (an old image can be referenced by a new trace).
  lifecycle_rule {
    condition {
      age            = var.trace_nearline_days
      matches_prefix = ["${var.output_prefix}/images/"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "NEARLINE"
    }
  }
  # Dataflow's temp and staging files.
  lifecycle_rule {
    condition {
      age            = 7
      matches_prefix = ["${var.output_prefix}/_dataflow/"]
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }
}

# Flex template specs (infra/dataflow/build.sh writes them).
resource "google_storage_bucket" "templates" {
  name                        = "${var.project}-agent-vlm-templates"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
}

resource "google_artifact_registry_repository" "images" {
  repository_id = "agent-vlm"
  location      = var.region
  format        = "DOCKER"
  description   = "Triton (agent_vlm) and Dataflow flex template images"
}
