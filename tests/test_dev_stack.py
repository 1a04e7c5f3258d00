"""`opsflow dev` as a user runs it: a subprocess with its own ports and data folder."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx
import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus

from activities.search_attributes import ALL as SEARCH_ATTRIBUTES
from tests.devstack_support import DevStack, start_dev

pytestmark = pytest.mark.devserver
OPSFLOW = str(Path(sys.executable).parent / "opsflow")


async def test_dev_stack_serves_registers_and_survives_restart(
    tmp_path: Path, ports: tuple[int, int], stacks: list[DevStack]
) -> None:
    grpc_port, ui_port = ports
    stack = start_dev(tmp_path, grpc_port, ui_port)
    stacks.append(stack)
    banner = stack.wait_for("Temporal UI")
    assert f"http://127.0.0.1:{ui_port}" in banner

    client = await Client.connect(stack.grpc)
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )
    for key in SEARCH_ATTRIBUTES:
        assert key.name in listed.custom_attributes, key.name
        assert listed.custom_attributes[key.name] == int(key.indexed_value_type)

    async with httpx.AsyncClient() as http:
        page = await http.get(stack.ui, timeout=10)
    assert page.status_code == 200

    # A workflow started before a restart is still there after it (state in the data folder).
    await client.start_workflow(
        "OpsflowRestartProbe", id="restart-probe", task_queue="restart-probe-queue"
    )
    assert stack.stop() == 0
    assert (tmp_path / "temporal.db").exists()
    assert (tmp_path / "opsflow.db").exists()

    stack = start_dev(tmp_path, grpc_port, ui_port)
    stacks.append(stack)
    stack.wait_for("Temporal UI")
    client = await Client.connect(stack.grpc)
    described = await client.get_workflow_handle("restart-probe").describe()
    assert described.status == WorkflowExecutionStatus.RUNNING
    assert stack.stop() == 0


def test_port_in_use_is_one_line_naming_port_and_setting(
    tmp_path: Path, ports: tuple[int, int], stacks: list[DevStack]
) -> None:
    grpc_port, ui_port = ports
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", grpc_port))
        squatter.listen()
        stack = start_dev(tmp_path, grpc_port, ui_port)
        stacks.append(stack)
        assert stack.process.wait(timeout=60) == 1
    output = []
    while not stack.output.empty():
        output.append(stack.output.get())
    text = "".join(output).strip()
    assert len(text.splitlines()) == 1, text
    assert str(grpc_port) in text
    assert "OPSFLOW_DEV_PORT" in text
