"""Flex template entry point: the template launcher runs this file with the launch's parameters
as `--name=value` pipeline options, plus its own (`--runner`, `--project`, `--region`,
`--staging_location`, `--temp_location` and `--template_location`, where the runner writes the job
that the launcher then submits). The run is always detached: a template launch must not wait
for the job nor query its metrics (it has no job to ask); the run's counts are taken from its
outputs afterwards by `python -m beam_pipelines status`."""

from __future__ import annotations

import sys

from beam_pipelines import annotate

if __name__ == "__main__":
    argv = sys.argv[1:]
    sys.exit(annotate.main(argv if "--detach" in argv else [*argv, "--detach"]))
