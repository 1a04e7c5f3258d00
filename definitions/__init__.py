"""The definition language: models, loading with file:line errors, lint, registry, catalog.

Workflow code imports only the pure modules (`definitions.models`, `definitions.common`,
`definitions.calendar`, `definitions.conditions`, `definitions.duration`); the registry
(`definitions.registry`) and the CLI (`definitions.cli`) use the database and the terminal.
This package's `__init__` imports nothing, so importing a pure module stays light.
"""
