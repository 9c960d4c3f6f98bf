"""Every error as `application/problem+json` (RFC 9457).

One shape for every failure a client can meet, whoever raised it: our routers
(`HTTPException`), FastAPI's validation, Starlette's 404/405, or the body-size
limit. The `detail` texts are the ones the weekly apps use, so a client written
against week 8 still understands the final project.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import Scope

from shared.auth import HashingBusy
from shared.observability import current_request_id

PROBLEM_JSON = "application/problem+json"
# A body with thousands of wrong fields must not buy a response thousands of times
# its size: the first errors tell a client what to fix.
MAX_FIELD_ERRORS = 20


class Problem(BaseModel):
    """An RFC 9457 problem: what went wrong, and the id to quote when asking about it."""

    type: str = Field(default="about:blank", examples=["about:blank"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["User not found"])
    request_id: str | None = Field(default=None, examples=["3f2b9c0e4d5a4b7c8e9f0a1b2c3d4e5f"])


class FieldError(BaseModel):
    loc: list[str | int] = Field(examples=[["body", "email"]])
    msg: str = Field(examples=["value is not a valid email address"])


class ValidationProblem(Problem):
    """A 422: which fields are wrong and why, never the values that were sent."""

    errors: list[FieldError]


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def problem_body(status: int, detail: str) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "request_id": current_request_id(),
    }


def render_problem(status: int, detail: str, scope: Scope) -> tuple[bytes, bytes]:
    """For middleware that answers on its own (the rate limit's 429)."""
    return PROBLEM_JSON.encode(), json.dumps(problem_body(status, detail)).encode()


def problem(
    status: int,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
) -> ProblemResponse:
    body = problem_body(status, detail)
    if errors is not None:
        body["errors"] = list(errors)
    return ProblemResponse(body, status_code=status, headers=headers)


def field_errors(raw: Sequence[Any]) -> list[dict[str, Any]]:
    """Keep where and why, for the first `MAX_FIELD_ERRORS`; drop `input` and `ctx`, which
    may hold a password (and `type`, whose words, e.g. "string_too_short", could happen
    to be the rejected value)."""
    return [
        {
            "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
        }
        for error in raw[:MAX_FIELD_ERRORS]
    ]


def validation_problem(errors: list[dict[str, Any]]) -> ProblemResponse:
    fields = sorted({".".join(str(p) for p in e["loc"]) or "request" for e in errors})
    return problem(422, "Invalid request: " + ", ".join(fields), errors=errors)


async def http_exception_handler(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # Only the parsers say 400 here: FastAPI for a body it could not parse
        # (JSON nested past the recursion limit, bytes that are not UTF-8),
        # Starlette for a broken form. For a client that is malformed input, which
        # the contract calls a 422.
        return validation_problem([{"loc": ["body"], "msg": "Malformed request body"}])
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    return problem(exc.status_code, str(exc.detail), headers=headers)


def allowed_methods(request: Request) -> str:
    """Every method served at this path: Starlette's 405 names only the first route's.

    A fixed path (/users/me) shadows a template (/users/{user_id}) that also matches it.
    No HEAD: FastAPI routes answer HEAD with 405, and `Allow` must not promise it.
    """
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    matching = [t for t in paths if compile_path(t)[0].match(request.url.path)]
    fixed = [t for t in matching if "{" not in t]
    methods = {m.upper() for t in fixed or matching for m in paths[t] if m.upper() in _METHODS}
    return ", ".join(sorted(methods))


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def validation_exception_handler(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(field_errors(exc.errors()))


async def hashing_busy_handler(request: Request, exc: Exception) -> ProblemResponse:
    # Refusing at once beats queueing: a client retrying in a second is better off
    # than one waiting behind every hash of a burst of sign-ups.
    return problem(
        503, "Too many password checks at once: try again shortly", headers={"Retry-After": "1"}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_exception_handler)
    app.add_exception_handler(HashingBusy, hashing_busy_handler)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status it can return, documented as a problem."""
    return {
        status: {
            "model": ValidationProblem if status == 422 else Problem,
            "description": HTTPStatus(status).phrase,
        }
        for status in statuses
    }


def use_problem_media_type(schema: dict[str, Any]) -> dict[str, Any]:
    """Say `application/problem+json` in the OpenAPI file for every error response."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
                if ref.endswith(("/Problem", "/ValidationProblem")):
                    content[PROBLEM_JSON] = content.pop("application/json")
    return schema
