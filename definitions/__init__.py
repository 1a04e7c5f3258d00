"""The definition language: models, loading with file:line errors, lint, the catalog.

Pure data and validation: it imports no other part of opsflow. The registry of deployed
versions lives in `store.registry`, the `opsflow defs` commands in `worker.cli_defs`.
This package's `__init__` imports nothing, so importing a pure module stays light.
"""
