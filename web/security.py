"""The request guard: one ASGI middleware in front of every route.

Putting the checks here (rather than in each route) means a new endpoint
cannot forget them, and a rejected request is answered before its body is
parsed.  In order:

1. Host check when bound to loopback: a web page on another site cannot
   reach a local server through DNS rebinding, because its requests carry
   that site's host name.
2. Token check on every ``/api/`` call when a token is configured (it must
   be when the server is exposed).  The token may come as
   ``Authorization: Bearer``, ``X-Sightline-Token`` or the HttpOnly cookie
   set by ``POST /api/session`` (how the browser UI authenticates, so that
   ``<img>`` requests carry it too).
3. Body size limit: the body is read up to the limit and 413 is answered
   as soon as it is exceeded, so an upload can never fill memory or disk.
4. Security headers on every response.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Optional

from starlette.datastructures import Headers
from starlette.requests import cookie_parser

from sightline.web.errors import error_body
from sightline.web.settings import ServerSettings, is_loopback

COOKIE_NAME = "sightline_token"
TOKEN_HEADER = "x-sightline-token"
#: Multipart framing around the uploaded file.
MULTIPART_SLACK = 64 * 1024
_NO_CSP_PATHS = ("/docs", "/redoc")  # FastAPI's doc pages load their assets from a CDN
_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def token_matches(settings: ServerSettings, given: Optional[str]) -> bool:
    """Constant-time check of a presented token (header, cookie or login body).

    Both sides are hashed first so that the comparison time depends neither on
    where a guess first differs nor on its length.
    """
    if not settings.token or not given:
        return False
    return hmac.compare_digest(_digest(given), _digest(settings.token))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def request_token(headers: Headers) -> Optional[str]:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if headers.get(TOKEN_HEADER):
        return headers[TOKEN_HEADER]
    return cookie_parser(headers.get("cookie", "")).get(COOKIE_NAME)


def host_allowed(host_header: Optional[str]) -> bool:
    if not host_header:
        return True  # HTTP/1.0 clients; browsers always send Host
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return is_loopback(host)


class RequestGuard:
    def __init__(self, app, settings: ServerSettings):
        self.app = app
        self.settings = settings
        self.body_limit = settings.max_upload_bytes + MULTIPART_SLACK

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        path, method = scope["path"], scope["method"]
        if not self.settings.exposed and not host_allowed(headers.get("host")):
            return await _reject(send, 421, "misdirected_request",
                                 "this server only answers requests addressed to localhost")
        is_api = path == "/api" or path.startswith("/api/")
        if is_api and self.settings.token and not _is_login(path, method):
            if not token_matches(self.settings, request_token(headers)):
                return await _reject(send, 401, "unauthorized",
                                     "an access token is required (Authorization: Bearer TOKEN)",
                                     [(b"www-authenticate", b'Bearer realm="sightline"')])
        send = _with_security_headers(send, csp=not path.startswith(_NO_CSP_PATHS))
        if method in ("POST", "PUT", "PATCH"):
            receive = await self._bounded_body(headers, receive, send)
            if receive is None:
                return
        await self.app(scope, receive, send)

    async def _bounded_body(self, headers: Headers, receive, send):
        """Read the whole body (up to the limit) and replay it; None if rejected."""
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.body_limit:
            await self._too_large(send)
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.body_limit:
                await self._too_large(send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _too_large(self, send) -> None:
        limit_mb = self.settings.max_upload_bytes / (1024 * 1024)
        await _reject(send, 413, "payload_too_large", f"the upload is larger than the limit of {limit_mb:g} MiB")


def _is_login(path: str, method: str) -> bool:
    return path == "/api/session" and method == "POST"


def _with_security_headers(send, csp: bool):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in _COMMON_HEADERS if k not in present]
            if csp and b"content-security-policy" not in present:
                extra.append((b"content-security-policy", _CSP.encode()))
            message = {**message, "headers": list(message.get("headers", [])) + extra}
        await send(message)

    return wrapped


async def _reject(send, status: int, type_: str, message: str, headers=()) -> None:
    body = json.dumps(error_body(status, type_, message)).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    *_COMMON_HEADERS, *headers],
    })
    await send({"type": "http.response.body", "body": body})
