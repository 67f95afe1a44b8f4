variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "region" {
  description = "Region of the cluster, the Dataflow jobs, the buckets and the scheduler."
  type        = string
  default     = "us-central1"
}

variable "gke_subnet_cidr" {
  description = "Primary range of the GKE nodes' subnetwork."
  type        = string
  default     = "10.10.0.0/20"
}

variable "dataflow_subnet_cidr" {
  description = "Range of the Dataflow workers' subnetwork: the only source allowed to reach Triton."
  type        = string
  default     = "10.20.0.0/20"
}

variable "gpu_machine_type" {
  description = "Machine type of the GPU node pool (a3-highgpu-1g: one H100 80GB)."
  type        = string
  default     = "a3-highgpu-1g"
}

variable "gpu_type" {
  description = "Accelerator type attached to each GPU node."
  type        = string
  default     = "nvidia-h100-80gb"
}

variable "gpus_per_node" {
  description = "GPUs per node: 1 for the h100x1 config variants, 2 for h100x2-tp2-ep2."
  type        = number
  default     = 1
}

variable "gpu_spot" {
  description = "Use Spot VMs for the GPU pool (a3-highgpu-1g/2g/4g are offered as Spot or Flex-start, or through reservations)."
  type        = bool
  default     = true
}

variable "gpu_max_nodes" {
  description = "Upper bound of the GPU node pool's autoscaler (match the HPA's maxReplicas)."
  type        = number
  default     = 8
}

variable "output_prefix" {
  description = "Output root inside the output bucket (the pipeline's --output is gs://<output bucket>/<prefix>)."
  type        = string
  default     = "annotate"
}

variable "trace_nearline_days" {
  description = "Age after which trace shards move to Nearline."
  type        = number
  default     = 30
}

variable "trace_coldline_days" {
  description = "Age after which trace shards move to Coldline."
  type        = number
  default     = 90
}

variable "trace_retention_days" {
  description = "Age after which trace shards are deleted (0 keeps them forever)."
  type        = number
  default     = 365
}

variable "schedule" {
  description = "Cron schedule of the annotate run (Cloud Scheduler syntax)."
  type        = string
  default     = "0 */6 * * *"
}

variable "schedule_time_zone" {
  description = "Time zone of the schedule."
  type        = string
  default     = "Etc/UTC"
}

variable "input_glob" {
  description = "Jobs every scheduled run reads (new ones are found by the pipeline's resume)."
  type        = string
  default     = ""
}

variable "triton_url" {
  description = "host:port of the internal load balancer's gRPC port (kubectl get service triton-agent-vlm)."
  type        = string
  default     = ""
}

variable "dataflow_image_tag" {
  description = "Tag of the flex template image the scheduled runs use on their workers."
  type        = string
  default     = "latest"
}

variable "dataflow_machine_type" {
  description = "Dataflow worker machine type."
  type        = string
  default     = "n2-standard-8"
}

variable "dataflow_max_workers" {
  description = "Upper bound of Dataflow's autoscaling."
  type        = number
  default     = 16
}
