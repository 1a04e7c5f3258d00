"""Pinning a definition document for a test, as the registry pins a deployed version."""

from __future__ import annotations

from typing import Any

from definitions.loader import LoadedDefinition, content_hash
from definitions.models import PinnedDefinition, definition_adapter


def pinned(document: dict[str, Any], version: int = 1) -> PinnedDefinition:
    """`document` (apiVersion, kind, metadata, spec) as the workflow input it would become."""
    return PinnedDefinition(
        name=document["metadata"]["name"],
        version=version,
        content_hash=content_hash(document),
        kind=document["kind"],
        definition=definition_adapter.validate_python(document),
    )


def pinned_loaded(loaded: LoadedDefinition, version: int = 1) -> PinnedDefinition:
    """A definition as loaded from a file, pinned as the registry pins a deployed version."""
    return PinnedDefinition(
        name=loaded.name,
        version=version,
        content_hash=loaded.content_hash,
        kind=loaded.definition.kind,
        definition=loaded.definition,
    )
