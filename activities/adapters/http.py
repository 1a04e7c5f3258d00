"""The one HTTP path every REST adapter uses: timeouts, error classes, JSON decoding."""

from __future__ import annotations

from typing import Any

import httpx

from activities.errors import protocol_error, raise_for_response, transport_error

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


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
            async with httpx.AsyncClient(
                headers=self._headers, auth=self._auth, timeout=self._timeout
            ) as client:
                response = await client.request(
                    method, url, json=json, content=content, params=params, headers=headers
                )
        except httpx.TransportError as exc:
            raise transport_error(self.system, operation, exc) from None
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
        try:
            body = response.json()
        except ValueError:
            raise protocol_error(self.system, operation, "response is not JSON") from None
        if not isinstance(body, dict):
            raise protocol_error(self.system, operation, "response is not a JSON object")
        return body
