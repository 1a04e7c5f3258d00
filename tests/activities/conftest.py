"""Fixtures for the integration activities: a seeded SQLite app database, local vendor
servers on 127.0.0.1 (started and stopped by each test), and a template folder."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.backends import Backends
from activities.deps import ActivityDeps
from store.db import create_engine, session_factory
from store.migrate import upgrade
from store.seed import seed_sandbox

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Sessions]:
    """A migrated, seeded SQLite app database in tmp_path."""
    url = make_url(f"sqlite:///{tmp_path / 'app.db'}")
    upgrade(url)
    engine = create_engine(url)
    factory = session_factory(engine)
    await seed_sandbox(factory)
    try:
        yield factory
    finally:
        await engine.dispose()


@pytest.fixture
def template_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "apology.en.j2").write_text(
        "Subject: Sorry about case {{ case.id }}\n\nHello {{ customer.name }},\n"
        "we are sorry about case {{ case.id }}.\n",
        encoding="utf-8",
    )
    (folder / "apology.de.j2").write_text(
        "Subject: Entschuldigung zu Fall {{ case.id }}\n\nHallo {{ customer.name }},\n"
        "es tut uns leid.\n",
        encoding="utf-8",
    )
    (folder / "page.en.j2").write_text(
        "Subject: SLA breach on {{ case.id }}\n\nCase {{ case.id }} breached its SLA.\n",
        encoding="utf-8",
    )
    (folder / "hostile.en.j2").write_text("{{ ''.__class__.__mro__ }}\n", encoding="utf-8")
    return folder


@pytest.fixture
def sandbox_deps(sessions: Sessions, template_folder: Path) -> ActivityDeps:
    return ActivityDeps(
        sessions=sessions, backends=Backends.sandbox(sessions), template_folder=template_folder
    )


# --- a small HTTP server that plays a vendor ---------------------------------------------------


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (a slow or hanging vendor; cut short at shutdown)."""
    reset: bool = False
    """Send the status line, the headers and half the body, then reset the connection (RST)."""
    drip: float = 0.0
    """Send the body one byte at a time, this many seconds apart (a vendor that trickles)."""

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Handler = Callable[[Seen], Reply]


class VendorServer:
    """http.server in a thread on 127.0.0.1; `handler` decides every answer."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    split.path,
                    parse_qs(split.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with outer._lock:
                    outer.seen.append(seen)
                    reply = outer.handler(seen)
                if reply.delay and outer._stopping.wait(reply.delay):
                    return  # the server is stopping: nobody waits for this answer any more
                payload = reply.encoded()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if "Content-Type" not in reply.headers and not isinstance(
                        reply.body, bytes | str
                    ):
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if reply.reset:
                        self.wfile.write(payload[: len(payload) // 2])
                        self._reset()
                    elif reply.drip:
                        for index in range(len(payload)):
                            if outer._stopping.wait(reply.drip):
                                return
                            self.wfile.write(payload[index : index + 1])
                    else:
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def _reset(self) -> None:
                # SO_LINGER 0: close() discards what is unsent and answers with RST, not FIN.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.rfile.close()  # the socket closes only once its file objects are closed
                self.connection.close()
                self.close_connection = True

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        # A short poll: shutdown() waits for the loop to look, 0.5 s by default per server.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> VendorServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def vendor() -> Iterator[Callable[[Handler], VendorServer]]:
    """Start vendor servers inside a test; every one is stopped when the test ends."""
    started: list[VendorServer] = []

    def start(handler: Handler) -> VendorServer:
        server = VendorServer(handler)
        server.__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__()
