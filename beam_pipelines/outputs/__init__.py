"""A run's outputs, in one place: where they live (`layout`), how the pipeline writes them
(`writers`, `manifest`), how everything else reads them back (`readers`) and counts them
(`counts`). The summary, the report, resume, regenerate and evaluate read outputs only
through these modules.
"""
