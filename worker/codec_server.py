"""`opsflow codec-server`: Temporal's remote codec protocol, so the Temporal UI and the
`temporal` CLI show encrypted payloads decrypted.

POST `/encode` and `/decode` take and return `{"payloads": [...]}` (the Payloads protobuf as
JSON, bytes in base64). Every request needs the token: `Authorization: Bearer <token>` (the
CLI's `--codec-auth`), or the token as the first path segment, `/<token>/decode`. The second
form exists for the Temporal UI, which appends `/decode` to its configured endpoint and can
send a bearer token only from its own OAuth login; `opsflow dev` hands its UI that endpoint.
Browsers may call it from the UI's origin only (CORS).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import structlog
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from client.codec import EncryptionCodec, PayloadDecryptError, PayloadKeys
from client.settings import Settings
from definitions.errors import OpsflowError

log = structlog.get_logger(__name__)

# The UI decodes a page of history events at a time; Temporal caps one payload at 2 MB by
# default, so this leaves room for several without letting a client exhaust memory.
MAX_BODY_BYTES = 16 * 1024 * 1024

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


def codec_token(settings: Settings) -> str:
    """OPSFLOW_CODEC_TOKEN, else a token made once per data folder and kept there (0600), so
    `opsflow dev` and `opsflow codec-server` on the same folder agree."""
    if settings.codec_token is not None:
        return settings.codec_token.get_secret_value()
    path = token_path(settings)
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


def token_path(settings: Settings) -> Path:
    return settings.data_dir / "codec-token"


def token_source(settings: Settings) -> str:
    """Where the token comes from, for banners (never the token itself)."""
    if settings.codec_token is not None:
        return "from OPSFLOW_CODEC_TOKEN"
    return f"in {token_path(settings)}"


def codec_url(settings: Settings) -> str:
    host = settings.codec_host
    with contextlib.suppress(ValueError):  # a name, not an address
        if ipaddress.ip_address(host).is_unspecified:  # listening everywhere: loopback too
            host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.codec_port}"


def ui_codec_endpoint(settings: Settings, token: str) -> str:
    """The endpoint to configure in a Temporal UI: it appends `/decode` itself."""
    return f"{codec_url(settings)}/{token}"


def allowed_origins(origin: str) -> list[str]:
    """The UI's origin; for a loopback UI also its twin name, since a browser sends whichever
    of 127.0.0.1 and localhost the person typed."""
    parts = urlsplit(origin)
    twins = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}
    origins = [origin]
    if parts.hostname in twins:
        port = f":{parts.port}" if parts.port else ""
        origins.append(f"{parts.scheme}://{twins[parts.hostname]}{port}")
    return origins


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_codec_app(keys: PayloadKeys, *, token: str, origins: Sequence[str]) -> FastAPI:
    """The codec server's ASGI app. No docs pages: every route but CORS preflight needs the
    token, and the token-in-path routes must not be listed anywhere."""
    codec = EncryptionCodec(keys)
    expected = token.encode()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["POST"],
        # The UI sends X-Namespace; Authorization for a UI that passes its access token.
        allow_headers=["Content-Type", "X-Namespace", "Authorization"],
        # A UI served from elsewhere (e.g. a hosted one) may call a codec server on loopback.
        allow_private_network=True,
    )

    def refusal(request: Request, path_token: str | None) -> JSONResponse | None:
        given = path_token
        if given is None:
            scheme, _, value = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                return _error(
                    401,
                    "the codec server needs its token: Authorization: Bearer <token>",
                    {"WWW-Authenticate": "Bearer"},
                )
            given = value.strip()
        if not hmac.compare_digest(given.encode(), expected):
            log.warning("codec request refused: wrong token")
            return _error(403, "the token is not this codec server's")
        return None

    async def apply(transform: Transform, request: Request, path_token: str | None) -> Response:
        refused = refusal(request, path_token)
        if refused is not None:
            return refused
        try:
            body = await _read_body(request)
        except _BodyTooLarge:
            return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        try:
            payloads = json_format.Parse(body, Payloads(), ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, RecursionError) as exc:
            reason = " ".join(str(exc).split())[:200]
            return _error(400, f'not {{"payloads": [...]}} as protobuf JSON: {reason}')
        try:
            result = Payloads(payloads=await transform(payloads.payloads))
        except PayloadDecryptError as exc:
            return _error(422, str(exc))
        return Response(
            json_format.MessageToJson(result, indent=None), media_type="application/json"
        )

    @app.post("/encode")
    async def encode(request: Request) -> Response:
        return await apply(codec.encode, request, None)

    @app.post("/decode")
    async def decode(request: Request) -> Response:
        return await apply(codec.decode, request, None)

    @app.post("/{path_token}/encode")
    async def encode_with_path_token(request: Request, path_token: str) -> Response:
        return await apply(codec.encode, request, path_token)

    @app.post("/{path_token}/decode")
    async def decode_with_path_token(request: Request, path_token: str) -> Response:
        return await apply(codec.decode, request, path_token)

    return app


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the caller's stop event rules."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def codec_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # request paths may hold the token
        lifespan="off",
        server_header=False,
    )
    return _QuietServer(config)


async def serve_codec(server: uvicorn.Server, stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then shut down."""
    task = asyncio.create_task(server.serve())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        stopper.cancel()


async def start_codec_server(
    settings: Settings, keys: PayloadKeys, token: str, stop: asyncio.Event
) -> asyncio.Task[None]:
    """The codec server, serving until `stop` is set: the task returns once it listens, so a
    banner printed after it is true."""
    app = create_codec_app(keys, token=token, origins=allowed_origins(settings.codec_origin))
    server = codec_server(app, settings.codec_host, settings.codec_port)
    task = asyncio.create_task(serve_codec(server, stop))
    while not server.started:
        if task.done():  # it could not listen: its error is the task's
            await task
            raise OpsflowError(
                f"the codec server could not listen on {codec_url(settings)}: "
                "set OPSFLOW_CODEC_PORT to a free port"
            )
        await asyncio.sleep(0.01)
    return task
