"""The one registry of opsflow's custom search attributes.

The same list registers them on the dev server (`--search-attribute Name=Type`), on a
cluster (`temporal operator search-attribute create`) and in tests
(`start_local(search_attributes=...)`); workflows upsert them through these typed keys.
"""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey

OPS_KIND = SearchAttributeKey.for_keyword("OpsKind")
OPS_CASE_ID = SearchAttributeKey.for_keyword("OpsCaseId")
OPS_CUSTOMER_ID = SearchAttributeKey.for_keyword("OpsCustomerId")
OPS_STAGE = SearchAttributeKey.for_keyword("OpsStage")
OPS_PRIORITY = SearchAttributeKey.for_keyword("OpsPriority")
OPS_LEVEL = SearchAttributeKey.for_int("OpsLevel")
OPS_STATE = SearchAttributeKey.for_keyword("OpsState")
OPS_OWNER = SearchAttributeKey.for_keyword("OpsOwner")
OPS_DEFINITION = SearchAttributeKey.for_keyword("OpsDefinition")
OPS_QUEUE = SearchAttributeKey.for_keyword("OpsQueue")
# The run's next deadline (a breach, a gate's timeout, an offer's timeout): `OpsDueAt < "…"`
# in the UI finds what falls due within the hour. Once nothing is due it keeps the last
# deadline (see the workflows): combine it with OpsState.
OPS_DUE_AT = SearchAttributeKey.for_datetime("OpsDueAt")

STUCK = "stuck"
"""`OpsState` of a run that needs a person; its current details say why."""

ALL: tuple[SearchAttributeKey[Any], ...] = (
    OPS_KIND,
    OPS_CASE_ID,
    OPS_CUSTOMER_ID,
    OPS_STAGE,
    OPS_PRIORITY,
    OPS_LEVEL,
    OPS_STATE,
    OPS_OWNER,
    OPS_DEFINITION,
    OPS_QUEUE,
    OPS_DUE_AT,
)


def cli_type_name(key: SearchAttributeKey[Any]) -> str:
    """The type name the `temporal` CLI expects (`Keyword`, `Int`, ...)."""
    return key.indexed_value_type.name.title().replace("_", "")


def dev_server_args() -> list[str]:
    """`--search-attribute Name=Type` arguments for `temporal server start-dev`."""
    args: list[str] = []
    for key in ALL:
        args += ["--search-attribute", f"{key.name}={cli_type_name(key)}"]
    return args
