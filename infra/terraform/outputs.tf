output "model_bucket" {
  value = google_storage_bucket.models.name
}

output "input_bucket" {
  value = google_storage_bucket.inputs.name
}

output "output_root" {
  description = "The pipeline's --output (keep it the same across runs: resume relies on it)."
  value       = local.output_root
}

output "template_bucket" {
  value = google_storage_bucket.templates.name
}

output "image_repository" {
  value = "${var.region}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.images.repository_id}"
}

output "dataflow_service_account" {
  value = google_service_account.dataflow.email
}

output "triton_service_account" {
  value = google_service_account.triton.email
}

output "dataflow_subnetwork" {
  value = google_compute_subnetwork.dataflow.self_link
}
