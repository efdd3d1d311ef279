"""An exposed server: upload limits enforced while reading, constant-time
token checks on every path a token can take, the UI's security headers and
token help, and internal failures that never show a traceback or a path."""

from __future__ import annotations

import asyncio
import hmac
import io
import sqlite3
from pathlib import Path
from html.parser import HTMLParser

import pytest
from PIL import Image

from sightline.search.engine import SearchEngine
from sightline.search.errors import StoreCorruptError
from sightline.search.store import Store
from tests.helpers import FakeEncoder
from tests.web.support import TOKEN, make_settings, serve

CHUNK = 8192


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


# ------------------------------------------------------------- upload size
def run_guard(limit: int, headers: list, endless: bool = True) -> tuple[int, int, bool]:
    """Drive the request guard alone with a body that never ends.
    Returns (status, bytes it pulled, whether the app behind it ran)."""
    from sightline.web.security import RequestGuard

    reached, pulled, sent = [], [0], []

    async def app(scope, receive, send):
        reached.append(True)

    async def receive():
        pulled[0] += CHUNK
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": endless}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/search/image",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"multipart/form-data; boundary=x"), *headers]}
    asyncio.run(RequestGuard(app, make_settings(Path("unused"), Path("unused"), max_upload_bytes=limit))(scope, receive, send))
    return sent[0]["status"] if sent else 0, pulled[0], bool(reached)


def test_oversized_stream_is_cut_off_at_the_limit():
    from sightline.web.security import MULTIPART_SLACK

    limit = 100_000
    status, pulled, reached = run_guard(limit, [])
    assert status == 413 and not reached
    # It stopped pulling right after the limit: an endless body costs limit + one chunk.
    assert limit < pulled <= limit + MULTIPART_SLACK + CHUNK


def test_declared_oversize_is_refused_unread():
    status, pulled, reached = run_guard(100_000, [(b"content-length", str(10**10).encode())])
    assert (status, pulled, reached) == (413, 0, False)


def test_body_within_the_limit_reaches_the_app():
    status, pulled, reached = run_guard(100_000, [], endless=False)
    assert reached and pulled == CHUNK and status == 0


# ------------------------------------------------------------------ token
def token_requests(client):
    """Each way a token reaches the server, as a function of the token."""
    return {
        "bearer": lambda t: client.get("/api/status", headers={"Authorization": f"Bearer {t}"}),
        "header": lambda t: client.get("/api/status", headers={"X-Sightline-Token": t}),
        "cookie": lambda t: client.get("/api/status", headers={"Cookie": f"sightline_token={t}"}),
        "login": lambda t: client.post("/api/session", json={"token": t}),
    }


def test_every_token_path_compares_in_constant_time(exposed, monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    for kind, send in token_requests(exposed).items():
        for token, ok in [(TOKEN, True), (TOKEN[:-1] + "X", False), ("x" * 900, False)]:
            calls.clear()
            exposed.cookies.clear()
            status = send(token).status_code
            assert (status in (200, 204)) == ok, (kind, token, status)
            # Exactly one comparison, of fixed-size digests: no early exit on length or prefix.
            assert len(calls) == 1 and {len(a) for a in calls[0]} == {32}, (kind, calls)


def test_ui_says_how_to_pass_the_token(exposed):
    page = exposed.get("/").text
    assert "--token" in page and "SIGHTLINE_TOKEN" in page
    assert "Authorization: Bearer TOKEN" in page
    refused = exposed.get("/api/status")
    assert refused.status_code == 401 and "Authorization: Bearer" in refused.json()["error"]["message"]


# ---------------------------------------------------------- UI headers
UI_URLS = ["/", "/static/app.js", "/static/api.js", "/static/detail.js", "/static/style.css",
           "/static/favicon.svg", "/static/no-such-file.js", "/api/status"]


def csp(header: str) -> dict[str, list[str]]:
    directives = (d.split() for d in header.split(";") if d.strip())
    return {d[0]: d[1:] for d in directives}


@pytest.mark.parametrize("url", UI_URLS)
def test_security_headers(exposed, url):
    response = exposed.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    policy = csp(response.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"], policy  # no inline script, no eval
    assert policy["default-src"] == ["'self'"] and policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert "'unsafe-inline'" not in policy["style-src"]


class _InlineFinder(HTMLParser):
    """Everything the page's CSP would block: inline scripts, handlers, style attributes."""

    def __init__(self):
        super().__init__()
        self.problems, self._in_script = [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and not attrs.get("src"):
            self._in_script = True
        self.problems += [f"<{tag} {k}>" for k in attrs if k.startswith("on") or k == "style"]
        self.problems += [f"<{tag} {k}=javascript:>" for k, v in attrs.items()
                          if (v or "").strip().lower().startswith("javascript:")]

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append("inline <script>")

    def handle_endtag(self, tag):
        self._in_script = self._in_script and tag != "script"


def test_page_has_nothing_inline(exposed):
    finder = _InlineFinder()
    finder.feed(exposed.get("/").text)
    assert finder.problems == []


# ------------------------------------------------------ internal failures
class FailingStore:
    """A store whose every method raises ``error`` once armed (after startup)."""

    def __init__(self, store: Store, error: Exception):
        self._store, self._error, self.armed = store, error, False

    def __getattr__(self, name):
        value = getattr(self._store, name)
        if self.armed and callable(value) and name != "close":
            def fail(*args, **kwargs):
                raise self._error
            return fail
        return value


def operations(client):
    """One request per API operation that touches the index."""
    files = {"file": ("q.jpg", jpeg_bytes(), "image/jpeg")}
    for path, methods in client.app.openapi()["paths"].items():
        for method in methods:
            if path != "/api/session":
                url = path.replace("{image_id}", "1")
                kwargs = {"files": files} if method == "post" else {"params": {"q": "red"}}
                yield url, lambda m=method, u=url, kw=kwargs: client.request(m.upper(), u, **kw)


@pytest.mark.parametrize("make_error", [
    lambda d: RuntimeError(f"boom in {d}/sightline.db, see /srv/app/secret.py line 3"),
    lambda d: OSError(13, "Permission denied", f"{d}/images.faiss"),
    lambda d: sqlite3.OperationalError(f"unable to open database file {d}/sightline.db"),
    lambda d: StoreCorruptError(f"the index database {d}/sightline.db is damaged"),
    lambda d: MemoryError(),
], ids=["runtime", "os", "sqlite", "corrupt", "memory"])
def test_internal_failures_show_no_trace_or_path(fake_index, tmp_path, make_error):
    index_dir, photos = fake_index
    store = FailingStore(Store.open(index_dir), make_error(index_dir))
    settings = make_settings(index_dir, tmp_path, engine_factory=lambda: SearchEngine(store, FakeEncoder()))
    with serve(settings, raise_server_exceptions=False) as c:
        store.armed = True
        answered = 0
        for url, call in operations(c):
            response = call()
            assert response.status_code >= 500, (url, response.status_code, response.text)
            error = response.json()["error"]
            assert error["status"] == response.status_code and error["type"] and error["message"]
            for leak in ("Traceback", 'File "', str(index_dir), "/srv", str(photos[0].parent), "line 3"):
                assert leak not in response.text, (url, leak, response.text)
            answered += 1
    assert answered >= 10


# ------------------------------------------------- upload size, end to end
def stream_chunked(base: str, total: int, chunk: int = 64 * 1024) -> tuple[bytes, int]:
    """POST an endless-looking chunked upload over a raw socket until the server
    answers or stops reading; returns (status line, bytes that were sent)."""
    import select
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
        frame, sent = b"%x\r\n" % chunk + b"y" * chunk + b"\r\n", 0
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(frame)  # blocks, then times out, once the server stops reading
                sent += chunk
        except OSError:  # timed out, or the server closed the connection
            pass
        try:
            return sock.recv(4096).split(b"\r\n", 1)[0], sent
        except OSError as exc:
            return f"no answer: {exc}".encode(), sent


def test_streamed_upload_over_the_limit_on_a_real_server(tmp_path):
    from tests.web.server_process import rss_bytes, server_process

    Store.open(tmp_path / "index", create=True).close()
    mib = 1024 * 1024
    with server_process(tmp_path / "index", tmp_path / "server.log", "--max-upload-mb", "1") as server:
        before = rss_bytes(server.process.pid)
        status, sent = stream_chunked(server.base, total=256 * mib)
        grown = rss_bytes(server.process.pid) - before
    assert status.startswith(b"HTTP/1.1 413"), status
    # 1 MiB allowed; what else got sent sits in socket buffers (a few MiB on loopback).
    assert sent < 32 * mib, sent
    assert grown < 16 * mib, grown
