"""The agent's tools: pure Python, no Beam and no Triton import.

Public API:

- ``tools.base``: the ``Tool`` base class (a tool declares its header once), ``ToolSpec`` (a
  header as data), ``ToolContext``, ``ToolResult`` and the error classes;
- ``tools.registry``: ``build_tools(names, **per_tool_settings)``, ``tool_specs`` (the same,
  as headers), ``run_tool``, ``validate_arguments``, ``register_tool``;
- ``tools.code.CodeTool`` (``code``) over ``tools.sandbox.Sandbox`` (the warm pool and the
  public sandbox API; ``tools.sandbox_process`` launches one sandbox, and
  ``tools.sandbox_runner`` is the program that runs inside it);
- ``tools.zoom.ZoomTool`` (``image_zoom_in_tool``).

Submodules are imported on demand, so importing ``tools`` starts nothing.
"""
