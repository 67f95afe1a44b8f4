"""Pure agent logic shared by the Beam pipeline and the serving evaluation (no Beam, no Triton).

``records`` (the record contract), ``images`` (safe decoding and the model's view),
``protocols`` (prompts, parser, observation rendering) and ``loop`` (the step function).
"""
