# One VPC: GKE nodes in one subnetwork, Dataflow workers in another. Neither has public IPs;
# Private Google Access reaches Cloud Storage and the other Google APIs.
resource "google_compute_network" "agent_vlm" {
  name                    = "agent-vlm"
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "gke" {
  name                     = "agent-vlm-gke"
  region                   = var.region
  network                  = google_compute_network.agent_vlm.id
  ip_cidr_range            = var.gke_subnet_cidr
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = "10.64.0.0/14"
  }
  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = "10.68.0.0/20"
  }
}

resource "google_compute_subnetwork" "dataflow" {
  name                     = "agent-vlm-dataflow"
  region                   = var.region
  network                  = google_compute_network.agent_vlm.id
  ip_cidr_range            = var.dataflow_subnet_cidr
  private_ip_google_access = true
}

# The internal passthrough load balancer delivers to the nodes: allow only the Dataflow
# workers, only on Triton's gRPC and HTTP ports.
resource "google_compute_firewall" "dataflow_to_triton" {
  name          = "agent-vlm-dataflow-to-triton"
  network       = google_compute_network.agent_vlm.id
  direction     = "INGRESS"
  source_ranges = [var.dataflow_subnet_cidr]
  target_tags   = ["agent-vlm-gpu"]
  allow {
    protocol = "tcp"
    ports    = ["8000", "8001"]
  }
}

# Dataflow workers talk to each other (shuffle, SDK harness) on 12345-12346.
resource "google_compute_firewall" "dataflow_internal" {
  name        = "agent-vlm-dataflow-internal"
  network     = google_compute_network.agent_vlm.id
  direction   = "INGRESS"
  source_tags = ["dataflow"]
  target_tags = ["dataflow"]
  allow {
    protocol = "tcp"
    ports    = ["12345-12346"]
  }
}
