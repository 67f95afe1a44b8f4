# A private regional GKE cluster with Workload Identity and Managed Service for Prometheus
# (Triton's metrics feed the HPA), a small system pool, and the GPU pool Triton runs on.
resource "google_container_cluster" "agent_vlm" {
  name     = "agent-vlm"
  location = var.region

  network    = google_compute_network.agent_vlm.id
  subnetwork = google_compute_subnetwork.gke.id
  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }
  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = "172.16.0.0/28"
  }

  workload_identity_config {
    workload_pool = "${var.project}.svc.id.goog"
  }
  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
    managed_prometheus {
      enabled = true
    }
  }

  # Node pools are managed below.
  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = true
}

resource "google_container_node_pool" "system" {
  name     = "system"
  cluster  = google_container_cluster.agent_vlm.id
  location = var.region
  autoscaling {
    min_node_count = 1
    max_node_count = 3
  }
  node_config {
    machine_type    = "e2-standard-4"
    service_account = google_service_account.gke_nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_container_node_pool" "gpu" {
  name     = "h100"
  cluster  = google_container_cluster.agent_vlm.id
  location = var.region
  # Scale to zero between runs; the HPA's replicas pull nodes in.
  autoscaling {
    total_min_node_count = 0
    total_max_node_count = var.gpu_max_nodes
  }
  management {
    auto_repair  = true
    auto_upgrade = true
  }
  node_config {
    machine_type    = var.gpu_machine_type
    spot            = var.gpu_spot
    service_account = google_service_account.gke_nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    tags            = ["agent-vlm-gpu"]
    labels = {
      "agent-vlm/role" = "triton"
    }
    guest_accelerator {
      type  = var.gpu_type
      count = var.gpus_per_node
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }
    # The checkpoint is fetched onto the local SSDs (the pod's emptyDir), not the boot disk.
    ephemeral_storage_local_ssd_config {
      local_ssd_count = 2 * var.gpus_per_node
    }
    disk_size_gb = 200
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    # GKE taints GPU nodes with nvidia.com/gpu=present:NoSchedule; the Deployment tolerates it.
  }
}
