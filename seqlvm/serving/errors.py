"""Every refusal as a 4xx whose body is `{"detail": "one line"}`: a body that is not the request's schema (422), a
request the model cannot answer as asked (400, `RequestError`). An unexpected failure is a 500 with one line too,
and is a bug."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from seqlvm.operations import RequestError

log = logging.getLogger(__name__)
MAX_DETAIL = 300


def one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_DETAIL else line[:MAX_DETAIL - 3] + "..."


def schema_detail(exc: RequestValidationError) -> str:
    """The first problem of a body, named by its field: `n: Input should be a valid integer (got '3')`."""
    errors = exc.errors()
    if not errors:
        return "the request body does not match the schema"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "body"
    detail = f"{where}: {first.get('msg', 'invalid')}"
    if first.get("type") not in ("missing", "extra_forbidden", "json_invalid") and "input" in first:
        detail += f" (got {first['input']!r:.60})"
    if first.get("type") == "json_invalid":
        detail = f"the body is not JSON ({first.get('ctx', {}).get('error', 'JSON decode error')})"
    more = len(errors) - 1
    return one_line(detail + (f"; and {more} more problem{'s' * (more > 1)}" if more else ""))


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def refuse_schema(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": schema_detail(exc)})

    @app.exception_handler(RequestError)
    async def refuse_request(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": one_line(exc)})

    @app.exception_handler(Exception)
    async def fail(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": one_line(f"{type(exc).__name__}: {exc}")})
