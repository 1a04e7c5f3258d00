"""How an activity says what went wrong, so Temporal retries exactly what is worth retrying.

- invalid input or a vendor's 4xx: non-retryable, the type names the class of problem;
- 429: retryable after the vendor's Retry-After (`next_retry_delay`);
- 5xx, connection errors, timeouts, garbled responses: retryable with the policy's backoff.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import httpx
from temporalio.exceptions import ApplicationError

# Error types a workflow may catch by name.
INVALID_REQUEST = "InvalidRequest"
NOT_FOUND = "NotFound"
VENDOR_REJECTED = "VendorRejected"
VENDOR_AUTH = "VendorAuthFailed"
RATE_LIMITED = "RateLimited"
VENDOR_UNAVAILABLE = "VendorUnavailable"
VENDOR_PROTOCOL = "VendorProtocolError"
TEMPLATE_PROBLEM = "TemplateProblem"
NOT_CONFIGURED = "NotConfigured"

MAX_RETRY_AFTER = timedelta(hours=1)


def invalid(message: str, *, type: str = INVALID_REQUEST) -> ApplicationError:
    """A request that will never succeed as it is: do not retry."""
    return ApplicationError(message, type=type, non_retryable=True)


def not_found(what: str) -> ApplicationError:
    return ApplicationError(f"{what} does not exist", type=NOT_FOUND, non_retryable=True)


def unavailable(message: str) -> ApplicationError:
    return ApplicationError(message, type=VENDOR_UNAVAILABLE)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> timedelta | None:
    """Retry-After as seconds or an HTTP date (RFC 9110 10.2.3); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(timedelta(seconds=int(value)), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delay = when - (now or datetime.now(UTC))
    return min(max(delay, timedelta(0)), MAX_RETRY_AFTER)


def _vendor_detail(response: httpx.Response) -> str:
    # Only the start of the body: vendor errors are short, and the body may echo our payload.
    text = response.text.strip().replace("\n", " ")
    return text[:200] if text else response.reason_phrase


def raise_for_response(system: str, operation: str, response: httpx.Response) -> None:
    """Turn an unsuccessful HTTP response into the right ApplicationError."""
    status = response.status_code
    if status < 400:
        return
    where = f"{system} {operation}: HTTP {status}"
    if status == 429:
        delay = parse_retry_after(response.headers.get("Retry-After"))
        raise ApplicationError(
            f"{where} rate limited"
            + (f", retry after {delay.total_seconds():.0f} s" if delay is not None else ""),
            type=RATE_LIMITED,
            next_retry_delay=delay,
        )
    # 409: the vendor is still working on the same idempotency key, or an edit conflicted.
    if status in (408, 409, 425) or status >= 500:
        raise ApplicationError(f"{where} {_vendor_detail(response)}", type=VENDOR_UNAVAILABLE)
    if status in (401, 403):
        raise ApplicationError(
            f"{where} credentials refused; check the {system} settings",
            type=VENDOR_AUTH,
            non_retryable=True,
        )
    if status == 404:
        raise ApplicationError(
            f"{where} not found: {_vendor_detail(response)}", type=NOT_FOUND, non_retryable=True
        )
    raise ApplicationError(
        f"{where} rejected: {_vendor_detail(response)}", type=VENDOR_REJECTED, non_retryable=True
    )


def transport_error(system: str, operation: str, exc: httpx.TransportError) -> ApplicationError:
    """Connection refused, reset or timed out: retry with backoff."""
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "could not connect"
    return ApplicationError(
        f"{system} {operation}: {kind} ({type(exc).__name__})", type=VENDOR_UNAVAILABLE
    )


def protocol_error(system: str, operation: str, problem: str) -> ApplicationError:
    """A 2xx whose body is not what the vendor documents (often a proxy's page): retry."""
    return ApplicationError(f"{system} {operation}: {problem}", type=VENDOR_PROTOCOL)
