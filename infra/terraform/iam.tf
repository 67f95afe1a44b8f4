# Least privilege: each workload has its own service account and only the bucket roles it
# needs. Dataflow writes only the output bucket; Triton reads only the model bucket.

resource "google_service_account" "dataflow" {
  account_id   = "agent-vlm-dataflow"
  display_name = "agent-vlm Dataflow workers and template launcher"
}

resource "google_service_account" "triton" {
  account_id   = "agent-vlm-triton"
  display_name = "agent-vlm Triton pods (Workload Identity)"
}

resource "google_service_account" "gke_nodes" {
  account_id   = "agent-vlm-gke-nodes"
  display_name = "agent-vlm GKE nodes"
}

resource "google_service_account" "scheduler" {
  account_id   = "agent-vlm-scheduler"
  display_name = "agent-vlm Cloud Scheduler (launches the flex template)"
}

# -- Dataflow workers ---------------------------------------------------------------------

resource "google_project_iam_member" "dataflow_worker" {
  project = var.project
  role    = "roles/dataflow.worker"
  member  = "serviceAccount:${google_service_account.dataflow.email}"
}

resource "google_storage_bucket_iam_member" "dataflow_reads_inputs" {
  bucket = google_storage_bucket.inputs.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.dataflow.email}"
}

# Create, read, list and delete (Beam writes temporary files and renames them): the output
# bucket only, which also holds the jobs' temp and staging locations.
resource "google_storage_bucket_iam_member" "dataflow_writes_output" {
  bucket = google_storage_bucket.output.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.dataflow.email}"
}

resource "google_storage_bucket_iam_member" "dataflow_reads_templates" {
  bucket = google_storage_bucket.templates.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.dataflow.email}"
}

resource "google_artifact_registry_repository_iam_member" "dataflow_pulls_images" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.repository_id
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.dataflow.email}"
}

# -- Triton pods --------------------------------------------------------------------------

resource "google_storage_bucket_iam_member" "triton_reads_models" {
  bucket = google_storage_bucket.models.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.triton.email}"
}

# The Kubernetes service account agent-vlm/triton (infra/k8s/serviceaccount.yaml) acts as it.
resource "google_service_account_iam_member" "triton_workload_identity" {
  service_account_id = google_service_account.triton.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project}.svc.id.goog[agent-vlm/triton]"
}

# -- GKE nodes: logs, metrics, image pulls ---------------------------------------------------

resource "google_project_iam_member" "gke_nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
  ])
  project = var.project
  role    = each.value
  member  = "serviceAccount:${google_service_account.gke_nodes.email}"
}

resource "google_artifact_registry_repository_iam_member" "gke_nodes_pull_images" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.repository_id
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.gke_nodes.email}"
}

# -- Scheduler: may launch jobs that run as the Dataflow service account, nothing else ------

resource "google_project_iam_member" "scheduler_launches_dataflow" {
  project = var.project
  role    = "roles/dataflow.developer"
  member  = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_service_account_iam_member" "scheduler_acts_as_dataflow" {
  service_account_id = google_service_account.dataflow.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_storage_bucket_iam_member" "scheduler_reads_templates" {
  bucket = google_storage_bucket.templates.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.scheduler.email}"
}
