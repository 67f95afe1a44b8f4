"""Flex template entry point: the template launcher runs this file with the launch's parameters
as `--name=value` pipeline options; it runs the annotate pipeline on Dataflow."""

from __future__ import annotations

import sys

from beam_pipelines import annotate

if __name__ == "__main__":
    sys.exit(annotate.main(sys.argv[1:]))
