"""Reading and parsing request bodies safely: size first, then depth, then strict JSON.

Python's `json` raises RecursionError on deep nesting, UnicodeDecodeError on bad UTF-8 and
ValueError on huge integers; it accepts NaN/Infinity, duplicate keys (last wins), lone
surrogates and U+0000. Each of those is refused here with a 4xx problem, before anything
else sees the body.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from intake.problems import Problem, bad_request

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_INT_DIGITS = 18  # int64 is 19 digits; anything longer is not an id or a count we store

_STRUCTURE = re.compile(rb'[\[\]{}"\\]')


def too_large() -> Problem:
    return Problem(
        413,
        "too-large",
        "Request body too large",
        f"the body is larger than {MAX_BODY_BYTES} bytes (1 MiB)",
    )


async def read_body(request: Request) -> bytes:
    """The raw body, refused with 413 as soon as it passes 1 MiB (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise bad_request("Content-Length is not a number", "Content-Length")
        if int(declared) > MAX_BODY_BYTES:
            raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def check_depth(body: bytes, limit: int = MAX_DEPTH) -> None:
    """Refuse nesting deeper than `limit` by scanning bytes (strings skipped), no parsing."""
    depth = 0
    in_string = False
    escaped = False
    for match in _STRUCTURE.finditer(body):
        char = match.group()
        if in_string:
            if escaped:
                escaped = False
            elif char == b"\\":
                # Only the character right after a backslash is escaped; a run of them
                # is handled pairwise because each backslash is its own match.
                escaped = match.end() < len(body) and body[match.end() : match.end() + 1] in (
                    b'"',
                    b"\\",
                )
            elif char == b'"':
                in_string = False
            continue
        if char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise bad_request(f"JSON nested deeper than {limit} levels is refused", "body")
        elif char in (b"]", b"}"):
            depth -= 1


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise bad_request(f"duplicate key {key[:80]!r} in a JSON object", key[:80])
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise bad_request(f"{name} is not a JSON number", "body")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise bad_request(f"integer with {len(text)} digits is out of range", "body")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise bad_request(f"number {text[:40]} is out of range", "body")
    return value


def _check_text(value: Any, path: str) -> None:
    """Refuse U+0000 and lone surrogates anywhere (keys too): they cannot be stored."""
    if isinstance(value, str):
        if "\x00" in value:
            raise bad_request(f"{path or 'body'}: U+0000 is not allowed in text", path or "body")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request(
                f"{path or 'body'}: lone surrogate escape in text", path or "body"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, path)
            _check_text(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, f"{path}[{index}]")


def parse_json(body: bytes) -> Any:
    """Strict JSON from raw bytes: UTF-8 without BOM, bounded depth and numbers, unique keys."""
    if not body.strip():
        raise bad_request("the body is empty", "body")
    check_depth(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"the body is not valid UTF-8 (byte {exc.start})", "body") from None
    if text.startswith("\ufeff"):
        raise bad_request("the body starts with a byte-order mark; send plain UTF-8", "body")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", "body"
        ) from None
    except (RecursionError, ValueError) as exc:
        raise bad_request(f"malformed JSON: {str(exc)[:120]}", "body") from None
    _check_text(value, "")
    return value
