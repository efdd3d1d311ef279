"""Path traversal in every parameter that names a file: nothing outside the
index (and the UI's own assets) is ever opened.

The parameters that name files are the static asset path, the image id in
every /api/images route, the thumbnail size and the upload's file name.
Requests are handed to the app exactly as uvicorn would (the path
percent-decoded once, dot segments left alone: an HTTP client would
normalise them away), and a Python audit hook records every file the server
process opens meanwhile: none may be a traversal target.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from tests.web.server_process import REPO

SECRET = "sightline-traversal-canary"
# Ways of writing "../": plain, encoded, double-encoded, overlong UTF-8,
# backslashes, doubled dots, matrix parameters, NUL-truncation.
UPS = ["../", "..%2f", "%2e%2e/", "%2e%2e%2f", ".%2e/", "%2e./", "..%252f", "%252e%252e%252f", "..\\", "..%5c",
       "%c0%ae%c0%ae/", "%c0%af", "....//", "..;/", "..%00/", "%2e%2e%u2215"]
DEPTH = 12  # more than enough to climb to / from anywhere the tests run
ROUTES = ["/static/{}", "/api/images/{}", "/api/images/{}/file", "/api/images/{}/thumbnail",
          "/api/images/{}/similar", "/api/images/{}/captions", "/api/images/1/file/{}", "/{}"]
QUERY_ROUTES = ["/api/images/1/thumbnail?size={}", "/api/images/1/file?path={}"]


class OpenedFiles:
    """Paths the process opens while recording (sys.audit 'open' events).

    Audit hooks cannot be removed, so one hook is installed for the session
    and does nothing unless recording.
    """

    _installed = False
    _active: "OpenedFiles | None" = None

    def __init__(self):
        self.paths: list[str] = []
        self._lock = threading.Lock()

    @classmethod
    def _hook(cls, event, args):
        recorder = cls._active
        if recorder is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            with recorder._lock:
                recorder.paths.append(os.path.abspath(path))

    def __enter__(self) -> "OpenedFiles":
        if not OpenedFiles._installed:
            sys.addaudithook(OpenedFiles._hook)
            OpenedFiles._installed = True
        OpenedFiles._active = self
        return self

    def __exit__(self, *exc) -> None:
        OpenedFiles._active = None


def asgi_get(client, raw: str, headers=()) -> tuple[int, bytes]:
    """GET ``raw`` through the app as uvicorn passes it (no URL normalisation)."""
    path, _, query = raw.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": unquote(path), "raw_path": path.encode("latin-1", "replace"),
             "query_string": query.encode("latin-1", "replace"), "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), *headers], "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 8000)}
    answer = {"status": 0, "body": b""}
    delivered = []

    async def receive():
        if not delivered:
            delivered.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)  # the client stays connected; the app cancels this when done

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    client.portal.call(client.app, scope, receive, send)
    return answer["status"], answer["body"]


@pytest.fixture(scope="module")
def targets(tmp_path_factory) -> dict[str, Path]:
    """Files an attacker would like to read: a secret beside the test data,
    the server's configuration and source, the system's password file."""
    secret = tmp_path_factory.mktemp("outside") / "secret.txt"
    secret.write_text(SECRET)
    return {"secret": secret, "project": REPO / "pyproject.toml", "source": REPO / "web" / "settings.py",
            "passwd": Path("/etc/passwd")}


def payloads(targets: dict[str, Path]) -> list[str]:
    """Relative climbs to each target in every spelling, and absolute paths."""
    out = []
    for up in UPS:
        out.append(up * DEPTH + "etc/passwd")
        out.append(up * DEPTH + str(targets["secret"]).lstrip("/"))
        out.append(up + "settings.py")  # /static/../settings.py is the server's own web/settings.py
        out.append(up * 2 + "pyproject.toml")
    for target in targets.values():
        out += [quote(str(target), safe=""), str(target), "%252f" + quote(str(target).lstrip("/"), safe="")]
    return out


def test_no_parameter_reaches_outside_the_index(client, targets, built_index, photo_dir):
    attempts = payloads(targets)
    answers = []
    with OpenedFiles() as opened:
        for template in ROUTES + QUERY_ROUTES:
            for payload in attempts:
                answers.append((template.format(payload), *asgi_get(client, template.format(payload))))
        # The control: a legitimate read is seen (the hook hears the server's worker threads).
        assert asgi_get(client, "/static/app.js")[0] == 200
    assert str(REPO / "web" / "static" / "app.js") in opened.paths
    assert len(answers) == len(attempts) * (len(ROUTES) + len(QUERY_ROUTES)) > 500
    for url, status, body in answers:
        if "?path=" in url:
            assert status == 200, url  # an unknown parameter is ignored: image 1 as always
        else:
            assert status in (404, 422), (url, status, body[:200])
            assert body.startswith(b'{"error":'), (url, body[:200])
        for leak in (SECRET.encode(), b"root:", b"[project]", b"class Settings"):
            assert leak not in body, (url, leak)
    reached = {str(t) for t in targets.values()} & set(opened.paths)
    assert not reached, reached
    # Anything else of ours opened at all must be a photo, a static asset, or the source
    # of a loaded module (FastAPI reads an endpoint's source once, for its error messages).
    loaded = {os.path.abspath(m.__file__) for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
    ours = [p for p in opened.paths if p.startswith((str(REPO), str(built_index), str(photo_dir)))]
    stray = [p for p in ours if p not in loaded and not p.startswith((str(REPO / "web" / "static"), str(photo_dir)))]
    assert not stray, stray[:5]


@pytest.mark.parametrize("name", ["../../../../../../tmp/evil.jpg", "/etc/passwd", "..\\..\\evil.jpg",
                                  "photo_0001.jpg\x00.txt", "%2e%2e%2fevil.jpg", "a/" * 200 + "x.jpg"])
def test_upload_file_name_is_never_used(client, photo_dir, built_index, name, tmp_path):
    data = (photo_dir / "photo_0001.jpg").read_bytes()
    with OpenedFiles() as opened:
        response = client.post("/api/search/image", files={"file": (name, data, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["name"] == "photo_0001.jpg"
    written = [p for p in opened.paths if "evil" in p or p == "/etc/passwd" or p.endswith("x.jpg")]
    assert not written, written
