"""The pipeline's client of the model server: one seam, three wire formats.

`base` holds the records (`ModelEndpoint`, `RetryPolicy`, `Completion`, `ModelReply`,
`ModelError`, `ModelInfo`) and the `ModelClient` protocol; `channel` the budget, retries,
deadlines and image inlining that every client shares; `triton`, `openai` and `scripted` the
clients. Nothing here imports the command-line options or the tools, and this file imports
nothing, so a Triton model can take the scripted replies without the pipeline's imports.
"""
