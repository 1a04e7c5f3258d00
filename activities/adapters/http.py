"""The one HTTP path every REST adapter uses: timeouts, error classes, JSON decoding.

Whatever a vendor (or a proxy in front of it) answers, the caller gets either the response
or a classified `ApplicationError` (see activities/errors.py), never a raw exception:

- the timeout bounds the whole request, not each read: a server that trickles its answer
  a byte at a time times out like one that sends nothing;
- a body that cannot be decoded (a `Content-Encoding` it does not follow) leaves the status
  to decide: a 2xx is returned without a body (the callers that read one get a retryable
  protocol error), an error status is classified as usual;
- a 2xx whose body is not a JSON object, deeply nested JSON included, is a retryable
  protocol error for the callers that read JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from activities.errors import protocol_error, raise_for_response, transport_error, unavailable

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
UNDECODABLE = "opsflow_undecodable"
"""Response extension set when the body could not be decoded; its value says why."""


def total_seconds(timeout: httpx.Timeout | float) -> float | None:
    """The bound on a whole request: the longest of the timeout's phases."""
    if not isinstance(timeout, httpx.Timeout):
        return float(timeout)
    phases = [t for t in (timeout.connect, timeout.read, timeout.write, timeout.pool) if t]
    return max(phases) if phases else None


class VendorHttp:
    """Async JSON-over-HTTP to one vendor; each call is classified for Temporal's retries."""

    def __init__(
        self,
        system: str,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    ) -> None:
        self.system = system
        self._base_url = base_url.rstrip("/")
        self._headers = headers or {}
        self._auth = auth
        self._timeout = timeout
        self._total = total_seconds(timeout)

    async def send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; raise the classified ApplicationError unless it succeeded."""
        url = path if path.startswith(("http://", "https://")) else self._base_url + path
        try:
            async with (
                asyncio.timeout(self._total),
                httpx.AsyncClient(
                    headers=self._headers, auth=self._auth, timeout=self._timeout
                ) as client,
            ):
                request = client.build_request(
                    method, url, json=json, content=content, params=params, headers=headers
                )
                streamed = await client.send(request, stream=True)
                try:
                    await streamed.aread()
                    response = streamed
                except httpx.DecodingError as exc:
                    response = _without_body(streamed, exc)
                finally:
                    await streamed.aclose()
        except httpx.TransportError as exc:
            raise transport_error(self.system, operation, exc) from None
        except TimeoutError:
            within = f" within {self._total:g} s" if self._total is not None else ""
            raise unavailable(
                f"{self.system} {operation}: timed out (no complete answer{within})"
            ) from None
        raise_for_response(self.system, operation, response)
        return response

    async def json(
        self,
        operation: str,
        method: str,
        path: str,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Like `send`, and decode a JSON object body (a garbled body is retryable)."""
        response = await self.send(operation, method, path, **kwargs)
        if UNDECODABLE in response.extensions:
            problem = f"response body could not be decoded ({response.extensions[UNDECODABLE]})"
            raise protocol_error(self.system, operation, problem)
        try:
            body = response.json()
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than json allows
            raise protocol_error(self.system, operation, "response is not JSON") from None
        if not isinstance(body, dict):
            raise protocol_error(self.system, operation, "response is not a JSON object")
        return body


def _without_body(response: httpx.Response, exc: httpx.DecodingError) -> httpx.Response:
    """The same status and headers with an empty body, marked as undecodable."""
    encoding = response.headers.get("Content-Encoding", "")
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        response.status_code,
        headers=headers,
        request=response.request,
        extensions={UNDECODABLE: f"Content-Encoding {encoding[:40]!r}: {type(exc).__name__}"},
    )
