"""RFC 9457 problem details: every refusal the intake gives is one of these."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

PROBLEM_JSON = "application/problem+json"
_BASE = "https://opsflow.dev/problems/"


class Problem(Exception):
    """A refusal: `status`, a short `title`, a `detail` naming the field, and `errors`."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}

    def document(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": _BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        return body


def unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Not signed by a known sender", detail)


def bad_request(detail: str, field: str | None = None) -> Problem:
    errors = [{"field": field, "message": detail}] if field else None
    return Problem(400, "malformed", "Malformed request", detail, errors)


def invalid(detail: str, errors: list[dict[str, Any]]) -> Problem:
    return Problem(422, "invalid-event", "Invalid event", detail, errors)


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    return JSONResponse(
        problem.document(request.url.path if request is not None else None),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )
