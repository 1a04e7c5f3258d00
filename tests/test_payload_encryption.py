"""Encrypted payloads (OPSFLOW_PAYLOAD_KEYS) and the codec server (issue 18, item 4).

What Temporal stores holds no customer data in the clear; the Temporal UI and CLI read it
through `opsflow codec-server` (or the one `opsflow dev` runs) with its token; keys rotate;
histories recorded before encryption still replay.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, Payloads, SearchAttributes
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.customer_contracts import CustomerProfile
from activities.environment import SettingsError, read_environment
from activities.search_attributes import ALL as SEARCH_ATTRIBUTES
from client.cases import open_case
from client.codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    PayloadDecryptError,
    PayloadKeys,
    data_converter,
)
from client.settings import Settings
from client.temporal import connect
from tests.conftest import AppDb
from tests.definition_support import pinned
from tests.devstack_support import DevStack, free_port, start_dev
from tests.escalation_support import (
    add_ticket,
    case,
    escalation_worker,
    new_ticket_id,
    policy_document,
    settled,
)
from worker.assembly import WORKFLOWS
from worker.binaries import temporal_cli, temporal_test_server
from worker.codec_server import allowed_origins, codec_server, create_codec_app, serve_codec
from workflows.escalation import EscalationWorkflow, Resolve
from workflows.sandbox import WORKFLOW_RUNNER

OPSFLOW = str(Path(sys.executable).parent / "opsflow")
HISTORIES = Path(__file__).resolve().parent / "histories"
UI_ORIGIN = "http://127.0.0.1:8233"
TOKEN = "test-codec-token-0123456789"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


OLD_KEY, NEW_KEY = new_key(), new_key()
OLD_KEYS = PayloadKeys.parse(f"k1={OLD_KEY}")
ROTATED_KEYS = PayloadKeys.parse(f"k2={NEW_KEY},k1={OLD_KEY}")

PROFILE = CustomerProfile(
    id="C-0042",
    name="Ana Torres",
    tier="gold",
    segment="enterprise",
    lifetime_value=Decimal(12000),
    language="es",
    timezone="Europe/Madrid",
)


def plain_payload(value: Any) -> Payload:
    [payload] = pydantic_data_converter.payload_converter.to_payloads([value])
    return payload


def as_json(*payloads: Payload) -> dict[str, Any]:
    return json_format.MessageToDict(Payloads(payloads=payloads))


def from_json(body: dict[str, Any]) -> list[Payload]:
    return list(json_format.ParseDict(body, Payloads()).payloads)


@asynccontextmanager
async def running_codec_server(keys: PayloadKeys) -> AsyncIterator[str]:
    """The codec server on 127.0.0.1, a free port, in this event loop; stopped on exit."""
    origins = allowed_origins(UI_ORIGIN)
    port = free_port()
    server = codec_server(create_codec_app(keys, token=TOKEN, origins=origins), "127.0.0.1", port)
    stop = asyncio.Event()
    task = asyncio.create_task(serve_codec(server, stop))
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done() and time.monotonic() < deadline, "the codec server did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await task


# --- the codec server over HTTP -------------------------------------------------------------


async def test_codec_server_round_trip_over_http() -> None:
    original = plain_payload(PROFILE)
    async with running_codec_server(ROTATED_KEYS) as url, httpx.AsyncClient() as http:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        encoded = await http.post(f"{url}/encode", json=as_json(original), headers=bearer)
        assert encoded.status_code == 200, encoded.text
        [sealed] = from_json(encoded.json())
        assert sealed.metadata["encoding"] == ENCODING
        assert sealed.metadata[KEY_ID_METADATA] == b"k2"  # the first key encrypts
        assert b"Ana Torres" not in sealed.SerializeToString()

        # The CLI's way (bearer) and the UI's way (token as the first path segment).
        for path, headers in ((f"{url}/decode", bearer), (f"{url}/{TOKEN}/decode", {})):
            decoded = await http.post(path, json=encoded.json(), headers=headers)
            assert decoded.status_code == 200, decoded.text
            assert from_json(decoded.json()) == [original]

        # A payload that was never encrypted comes back as it is.
        unchanged = await http.post(f"{url}/decode", json=as_json(original), headers=bearer)
        assert from_json(unchanged.json()) == [original]

        # Not the protocol's JSON: refused with the reason, nothing else breaks.
        for body in (b"{not json", b'{"payloads": [{"data": 7}]}', b"[" * 100_000):
            bad = await http.post(
                f"{url}/decode", content=body, headers={**bearer, "Content-Type": "text/json"}
            )
            assert bad.status_code == 400, body[:20]
            assert "payloads" in bad.json()["error"]


async def test_codec_server_answers_the_ui_origin_only() -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    async with running_codec_server(OLD_KEYS) as url, httpx.AsyncClient() as http:
        allowed = await http.options(
            f"{url}/{TOKEN}/decode", headers={**preflight, "Origin": UI_ORIGIN}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == UI_ORIGIN
        assert "x-namespace" in allowed.headers["access-control-allow-headers"].lower()
        # The same UI opened as localhost is the same person's browser.
        twin = await http.options(
            f"{url}/decode", headers={**preflight, "Origin": "http://localhost:8233"}
        )
        assert twin.headers["access-control-allow-origin"] == "http://localhost:8233"
        elsewhere = await http.options(
            f"{url}/decode", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert elsewhere.status_code == 400
        assert "access-control-allow-origin" not in elsewhere.headers


async def test_codec_server_refuses_a_missing_or_wrong_token() -> None:
    sealed = await EncryptionCodec(OLD_KEYS).encode([plain_payload(PROFILE)])
    body = as_json(*sealed)
    async with running_codec_server(OLD_KEYS) as url, httpx.AsyncClient() as http:
        for endpoint in ("decode", "encode"):
            missing = await http.post(f"{url}/{endpoint}", json=body)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            not_bearer = await http.post(
                f"{url}/{endpoint}", json=body, headers={"Authorization": f"Basic {TOKEN}"}
            )
            assert not_bearer.status_code == 401
            wrong = await http.post(
                f"{url}/{endpoint}", json=body, headers={"Authorization": "Bearer not-the-token"}
            )
            assert wrong.status_code == 403
            wrong_path = await http.post(f"{url}/not-the-token/{endpoint}", json=body)
            assert wrong_path.status_code == 403
            for refused in (missing, not_bearer, wrong, wrong_path):
                assert "payloads" not in refused.json()
                assert "Ana Torres" not in refused.text


# --- the codec ------------------------------------------------------------------------------


async def test_a_payload_under_an_old_key_decrypts_after_a_new_key_is_added_first() -> None:
    before = data_converter(OLD_KEYS)
    [old_payload] = await before.encode([PROFILE])
    assert old_payload.metadata[KEY_ID_METADATA] == b"k1"

    after = data_converter(ROTATED_KEYS)  # k2 added in front of k1
    assert await after.decode([old_payload], [CustomerProfile]) == [PROFILE]
    [new_payload] = await after.encode([PROFILE])
    assert new_payload.metadata[KEY_ID_METADATA] == b"k2"
    assert await after.decode([new_payload], [CustomerProfile]) == [PROFILE]

    # A process that has not been given k2 yet says which key it lacks.
    with pytest.raises(PayloadDecryptError, match=r"key id 'k2'.*holds k1"):
        await before.decode([new_payload], [CustomerProfile])
    # Dropping k1 too early leaves its payloads unreadable, and says so.
    only_new = data_converter(PayloadKeys.parse(f"k2={NEW_KEY}"))
    with pytest.raises(PayloadDecryptError, match="key id 'k1'"):
        await only_new.decode([old_payload], [CustomerProfile])


async def test_a_wrong_key_under_a_known_id_or_an_altered_payload_does_not_decrypt() -> None:
    [sealed] = await EncryptionCodec(OLD_KEYS).encode([plain_payload(PROFILE)])
    impostor = EncryptionCodec(PayloadKeys.parse(f"k1={NEW_KEY}"))
    with pytest.raises(PayloadDecryptError, match="does not decrypt"):
        await impostor.decode([sealed])
    altered = Payload()
    altered.CopyFrom(sealed)
    altered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(PayloadDecryptError, match="does not decrypt"):
        await EncryptionCodec(OLD_KEYS).decode([altered])


# --- a workflow run with encryption on ------------------------------------------------------


@pytest.fixture(scope="module")
async def encrypted_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping server, its client encrypting as opsflow's does with keys set."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_test_server()),
        data_converter=data_converter(ROTATED_KEYS),
    )
    async with env:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(key.indexed_value_type)
                    for key in SEARCH_ATTRIBUTES
                },
            )
        )
        yield env


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every Payload inside a protobuf message, except search attributes (which the server
    indexes, so they are never encoded: their values are ids and states, no personal data)."""
    if message.DESCRIPTOR.full_name == Payload.DESCRIPTOR.full_name:
        assert isinstance(message, Payload)
        yield message
        return
    if message.DESCRIPTOR.full_name == SearchAttributes.DESCRIPTOR.full_name:
        return
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            items = list(value.values())
        elif field.is_repeated:
            items = list(value)
        else:
            items = [value]
        for item in items:
            if isinstance(item, Message):
                yield from payloads_in(item)


def is_patch_marker(event: HistoryEvent) -> bool:
    """`workflow.patched` markers: the SDK's core writes their details (the patch id) itself,
    never through the data converter."""
    if not event.HasField("marker_recorded_event_attributes"):
        return False
    return event.marker_recorded_event_attributes.marker_name == "core_patch"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_case_history_on_the_server_holds_no_plaintext_customer_name(
    encrypted_env: WorkflowEnvironment, app_db: AppDb
) -> None:
    ticket = new_ticket_id()
    await add_ticket(app_db, ticket, customer_id="C-0001")
    policy = pinned(policy_document())
    async with escalation_worker(encrypted_env, app_db) as queue:
        opened_at = await encrypted_env.get_current_time()
        opened = await open_case(encrypted_env.client, queue, case(ticket, opened_at), policy)
        state = await settled(opened.handle)
        assert state.customer is not None
        name = state.customer.name  # the sandbox CRM's customer, read by an activity
        await opened.handle.execute_update(EscalationWorkflow.resolve, Resolve(by="ana"))
        await opened.handle.result()

    # The history exactly as the server keeps it (no codec applied on the way out).
    plain_client = Client(encrypted_env.client.service_client, namespace="default")
    history = await plain_client.get_workflow_handle(opened.handle.id).fetch_history()
    stored = history.to_json().encode() + b"".join(
        event.SerializeToString() for event in history.events
    )
    assert name.encode() not in stored
    assert b"Invoice shows wrong VAT" not in stored  # the ticket subject, in input and summary

    payloads = [
        p for event in history.events if not is_patch_marker(event) for p in payloads_in(event)
    ]
    assert len(payloads) > 10  # input, summary, activity inputs and results, update, result
    assert {p.metadata["encoding"] for p in payloads} == {ENCODING}
    # The name was there, encrypted: decrypting with the keys brings it back.
    decrypted = await EncryptionCodec(ROTATED_KEYS).decode(payloads)
    assert any(name.encode() in p.data for p in decrypted)

    # The encrypted history replays with the keys.
    await Replayer(
        workflows=list(WORKFLOWS),
        data_converter=data_converter(ROTATED_KEYS),
        workflow_runner=WORKFLOW_RUNNER,
    ).replay_workflow(history)


async def test_the_client_every_opsflow_process_connects_encrypts_with_keys_set(
    encrypted_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The CLI, the worker and the intake all connect through client.temporal.connect."""
    monkeypatch.setenv(
        "OPSFLOW_TEMPORAL_ADDRESS", encrypted_env.client.service_client.config.target_host
    )
    monkeypatch.setenv("OPSFLOW_PAYLOAD_KEYS", f"k2={NEW_KEY},k1={OLD_KEY}")
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "no-temporal.toml"))
    client = await connect(read_environment(Settings))
    handle = await client.start_workflow(
        "OpsflowCodecProbe", PROFILE, id=f"probe-{new_ticket_id()}", task_queue="nobody-polls"
    )
    try:
        plain_client = Client(client.service_client, namespace=client.namespace)
        events = (await plain_client.get_workflow_handle(handle.id).fetch_history()).events
        [stored] = events[0].workflow_execution_started_event_attributes.input.payloads
        assert stored.metadata["encoding"] == ENCODING
        assert stored.metadata[KEY_ID_METADATA] == b"k2"
        assert b"Ana Torres" not in stored.data
    finally:
        await handle.terminate()


# One plain history per workflow kind, recorded before encryption existed.
PLAIN_HISTORIES = [
    "escalation-acknowledged",
    "handoff-accepted-resolved",
    "recovery-low-csat",
    "rollout-completed",
]


@pytest.mark.parametrize("name", PLAIN_HISTORIES)
async def test_a_plain_recorded_history_replays_with_encryption_on(name: str) -> None:
    text = (HISTORIES / f"{name}.json").read_text(encoding="utf-8")
    history = WorkflowHistory.from_json(name, text)
    payloads = [p for event in history.events for p in payloads_in(event)]
    assert payloads and all(p.metadata["encoding"] != ENCODING for p in payloads)
    await Replayer(
        workflows=list(WORKFLOWS),
        data_converter=data_converter(ROTATED_KEYS),
        workflow_runner=WORKFLOW_RUNNER,
    ).replay_workflow(history)


# --- settings -------------------------------------------------------------------------------

SHORT_KEY = base64.b64encode(os.urandom(16)).decode()

BAD_PAYLOAD_KEYS = {
    "": "must not be empty",
    "   ": "must not be empty",
    NEW_KEY: "entry 1",  # a key without its id
    "k1": "entry 1 is not key-id=base64-key",
    f"k1:{NEW_KEY}": "entry 1: the key id must be",  # the key's own padding is the only '='
    f"={NEW_KEY}": "entry 1: the key id must be",
    f"key one={NEW_KEY}": "entry 1: the key id must be",
    "k1=": "entry 1: the key is empty",
    "k1=not base64!": "entry 1: the key is not base64",
    f"k1={SHORT_KEY}": "entry 1: the key is 16 bytes; AES-256 needs 32",
    f"k2={NEW_KEY},k1={SHORT_KEY}": "entry 2: the key is 16 bytes",
    f"k2={NEW_KEY},": "entry 2 is empty",
    f"k1={NEW_KEY},k1={OLD_KEY}": "the key id 'k1' appears more than once",
    f"k1={NEW_KEY}\x1b": "control character U+001B",
}


@pytest.mark.parametrize(("value", "words"), list(BAD_PAYLOAD_KEYS.items()))
def test_a_bad_payload_keys_value_is_one_line_naming_the_variable(
    value: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSFLOW_PAYLOAD_KEYS", value)
    with pytest.raises(SettingsError) as raised:
        read_environment(Settings)
    message = str(raised.value)
    assert message.startswith("OPSFLOW_PAYLOAD_KEYS: "), message
    assert words in message
    assert len(message.splitlines()) == 1
    for key in (NEW_KEY, OLD_KEY, SHORT_KEY):  # never echoes a key
        assert key not in message and key[:12] not in message


def test_good_payload_keys_parse_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    urlsafe = NEW_KEY.replace("+", "-").replace("/", "_")
    monkeypatch.setenv("OPSFLOW_PAYLOAD_KEYS", f" k2={urlsafe} , k1={OLD_KEY}")
    settings = read_environment(Settings)
    keys = settings.payload_keyring
    assert keys is not None and keys.ids() == ["k2", "k1"] and keys.current_id == "k2"
    assert NEW_KEY not in repr(settings) and NEW_KEY not in repr(keys)


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("OPSFLOW_PAYLOAD_KEYS", f"k1={SHORT_KEY}", "the key is 16 bytes"),
        ("OPSFLOW_CODEC_TOKEN", "2short", "must be 16 to 256"),
        ("OPSFLOW_CODEC_CORS_ORIGIN", "http://127.0.0.1:8233/namespaces", "not an origin"),
    ],
)
def test_bad_codec_settings_stop_the_installed_script_in_one_line(
    tmp_path: Path, variable: str, value: str, words: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSFLOW_", "TEMPORAL_"))}
    env.update(NO_COLOR="1", COLUMNS="400", OPSFLOW_DATA_DIR=str(tmp_path), **{variable: value})
    run = subprocess.run(
        [OPSFLOW, "codec-server"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, run
    assert "Traceback" not in run.stderr
    [line] = run.stderr.strip().splitlines()
    assert variable in line and words in line
    assert SHORT_KEY not in line


def test_the_codec_server_without_keys_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSFLOW_", "TEMPORAL_"))}
    env.update(NO_COLOR="1", COLUMNS="400", OPSFLOW_DATA_DIR=str(tmp_path))
    run = subprocess.run(
        [OPSFLOW, "codec-server"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    [line] = run.stderr.strip().splitlines()
    assert "OPSFLOW_PAYLOAD_KEYS is not set" in line


# --- `opsflow dev` with keys ----------------------------------------------------------------


async def temporal(args: list[str]) -> str:
    """Run the `temporal` CLI (off the event loop); it must succeed; its stdout."""
    run = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def start_input(shown: str) -> Payload:
    """The start input of `temporal workflow show --output json`."""
    [first, *_] = json.loads(shown)["events"]
    [payload] = from_json(first["workflowExecutionStartedEventAttributes"]["input"])
    return payload


@pytest.mark.devserver
async def test_opsflow_dev_wires_its_ui_and_the_cli_to_its_codec_server(
    tmp_path: Path,
    ports: tuple[int, int],
    stacks: list[DevStack],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grpc_port, ui_port = ports
    codec_port = free_port()
    monkeypatch.setenv("OPSFLOW_PAYLOAD_KEYS", f"k2={NEW_KEY},k1={OLD_KEY}")
    monkeypatch.setenv("OPSFLOW_CODEC_PORT", str(codec_port))
    stack = start_dev(tmp_path, grpc_port, ui_port)
    stacks.append(stack)
    line = stack.wait_for("Codec server")
    codec = f"http://127.0.0.1:{codec_port}"
    assert codec in line and "key k2" in line
    token = (tmp_path / "codec-token").read_text().strip()
    assert token not in line
    assert (tmp_path / "codec-token").stat().st_mode & 0o077 == 0

    async with httpx.AsyncClient() as http:
        settings = (await http.get(f"{stack.ui}/api/v1/settings", timeout=10)).json()
        endpoint = settings["Codec"]["Endpoint"]
        assert endpoint == f"{codec}/{token}"

        # A start input written by an encrypting client, as opsflow's are with keys set.
        client = await Client.connect(stack.grpc, data_converter=data_converter(ROTATED_KEYS))
        await client.start_workflow(
            "OpsflowCodecProbe", PROFILE, id="codec-probe", task_queue="codec-probe-queue"
        )

        # What the UI does: POST <endpoint>/decode from its own origin.
        plain = await Client.connect(stack.grpc)
        events = (await plain.get_workflow_handle("codec-probe").fetch_history()).events
        sealed = events[0].workflow_execution_started_event_attributes.input.payloads[0]
        assert sealed.metadata["encoding"] == ENCODING
        decoded = await http.post(
            f"{endpoint}/decode",
            json=as_json(sealed),
            headers={"Origin": stack.ui, "X-Namespace": "default"},
        )
        assert decoded.status_code == 200
        assert decoded.headers["access-control-allow-origin"] == stack.ui
        assert from_json(decoded.json()) == [plain_payload(PROFILE)]

    # What a person does with the temporal CLI: --codec-endpoint and --codec-auth.
    show = [str(temporal_cli()), "workflow", "show", "-w", "codec-probe", "--output", "json"]
    show += ["--address", stack.grpc]
    as_stored = start_input(await temporal(show))
    assert as_stored.metadata["encoding"] == ENCODING and b"Ana Torres" not in as_stored.data
    decoded_by_cli = start_input(
        await temporal([*show, "--codec-endpoint", codec, "--codec-auth", f"Bearer {token}"])
    )
    assert decoded_by_cli == plain_payload(PROFILE)
    assert stack.stop() == 0
