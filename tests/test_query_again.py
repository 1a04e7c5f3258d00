"""The test client's query retry (tests/conftest.py): a query the time-skipping server gave
up on ("Timeout expired") is asked again; any other failure is not."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import OutboundInterceptor, QueryWorkflowInput
from temporalio.service import RPCError, RPCStatusCode

from tests.conftest import QueryAgainWhenTheServerGaveUp


class _Server(OutboundInterceptor):
    """Answers after failing with each of `failures` in turn."""

    def __init__(self, failures: list[RPCError]) -> None:
        self.failures = failures
        self.asked = 0

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        self.asked += 1
        if self.failures:
            raise self.failures.pop(0)
        return "answer"


def _gave_up() -> RPCError:
    return RPCError("Timeout expired", RPCStatusCode.CANCELLED, b"")


async def test_a_query_the_server_gave_up_on_is_asked_again() -> None:
    server = _Server([_gave_up(), _gave_up()])
    client = QueryAgainWhenTheServerGaveUp().intercept_client(server)
    assert await client.query_workflow(None) == "answer"  # type: ignore[arg-type]
    assert server.asked == 3


async def test_a_third_give_up_or_another_error_is_raised() -> None:
    server = _Server([_gave_up(), _gave_up(), _gave_up()])
    with pytest.raises(RPCError, match="Timeout expired"):
        await QueryAgainWhenTheServerGaveUp().intercept_client(server).query_workflow(None)  # type: ignore[arg-type]
    refused = _Server([RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")])
    with pytest.raises(RPCError, match="not found"):
        await QueryAgainWhenTheServerGaveUp().intercept_client(refused).query_workflow(None)  # type: ignore[arg-type]
    assert refused.asked == 1
