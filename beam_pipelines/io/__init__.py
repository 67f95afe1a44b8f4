"""Reading jobs and writing results through Beam's FileSystems (local, file://, gs://)."""
