"""Every error leaves the server as typed JSON: ``{"error": {"type", "message", "status"}}``.

Library errors carry their own HTTP status; messages are scrubbed of the
server's file-system paths (they are written for a local user, and a remote
client has no business learning where the index lives).  Anything
unexpected is logged with its traceback and answered with a bare 500.
"""

from __future__ import annotations

import logging
import re
from typing import Iterable, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from sightline.search.errors import SightlineError

log = logging.getLogger(__name__)

# An absolute path: a slash at a word boundary followed by path characters.
_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"(),;:<>]+)")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_HTTP_TYPES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    413: "payload_too_large", 415: "unsupported_media_type", 421: "misdirected_request", 422: "invalid_request",
}


class ApiError(SightlineError):
    """An error raised by the web layer itself, with an explicit status and type."""

    def __init__(self, status: int, message: str, type_: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.http_status = status
        self.type = type_ or _HTTP_TYPES.get(status, "error")
        self.headers = headers or {}


def error_type(exc: SightlineError) -> str:
    """``NotFoundError`` -> ``not_found``."""
    if isinstance(exc, ApiError):
        return exc.type
    name = type(exc).__name__.removesuffix("Error") or "Sightline"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def scrub(message: str, secrets: Iterable[str] = ()) -> str:
    """Remove server paths (the index folder first, then any absolute path)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        message = message.replace(secret, "<index>")
    return _ABS_PATH.sub("<path>", message)


def error_body(status: int, type_: str, message: str, details: Optional[list] = None) -> dict:
    error = {"type": type_, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def json_error(status: int, type_: str, message: str, headers: Optional[dict] = None,
               details: Optional[list] = None) -> JSONResponse:
    return JSONResponse(error_body(status, type_, message, details), status_code=status, headers=headers)


def allowed_methods(request: Request) -> Optional[str]:
    """Every method some route serves at this path (None if only a mount does).

    Starlette's 405 lists only the first route matching the path, so
    ``OPTIONS /api/session`` answered ``Allow: POST`` although DELETE is
    served there too (found by schemathesis' Allow-header check).  Each
    method is tried against the routes rather than reading their method
    sets, which FastAPI keeps inside included routers.
    """
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    allowed = [method for method in _METHODS
               if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)]
    return ", ".join(allowed) or None


def install_handlers(app: FastAPI, secrets: Iterable[str]) -> None:
    secrets = tuple(secrets)

    async def sightline_error(_request: Request, exc: SightlineError) -> JSONResponse:
        status = int(getattr(exc, "http_status", 500))
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
        return json_error(status, error_type(exc), scrub(str(exc), secrets), getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        # A path segment that is not a valid id names nothing: 404, as for an
        # unknown id (this is also what path-traversal attempts get).
        if problems and all(p.get("loc", ("",))[0] == "path" for p in problems):
            return json_error(404, "not_found", "no such resource: the URL does not name a valid image id")
        details = [{"loc": [str(x) for x in p.get("loc", ())], "message": p.get("msg", "")} for p in problems]
        summary = "; ".join(f"{'.'.join(d['loc'][1:]) or d['loc'][0]}: {d['message']}" for d in details)
        return json_error(422, "invalid_request", summary or "invalid request", details=details)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else _HTTP_TYPES.get(status, "error")
        headers = dict(getattr(exc, "headers", None) or {})
        allow = allowed_methods(request) if status == 405 else None
        if allow:
            headers["Allow"] = allow
        return json_error(status, _HTTP_TYPES.get(status, "error"), scrub(message, secrets), headers or None)

    async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error while serving a request", exc_info=exc)
        return json_error(500, "internal_error", "internal server error (details are in the server log)")

    app.add_exception_handler(SightlineError, sightline_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
