"""Safety: upload limits, decompression bombs, tokens, host checks and error
bodies that never carry tracebacks or server paths."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from sightline.search.errors import ModelNotAvailableError
from tests.helpers import FakeEncoder, bomb_png
from tests.web.support import TOKEN, fake_factory, make_settings, serve



def jpeg_bytes(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def small_limit(fake_index, tmp_path):
    index_dir, _ = fake_index
    settings = make_settings(index_dir, tmp_path, engine_factory=fake_factory(index_dir), max_upload_bytes=20_000,
                             upload_max_pixels=1_000_000)
    with serve(settings) as c:
        yield c


@pytest.mark.parametrize("url", ["/api/search/image", "/api/captions/image"])
def test_bad_uploads(small_limit, url):
    def post(data, content_type="image/jpeg", name="q.jpg"):
        return small_limit.post(url, files={"file": (name, data, content_type)})

    assert post(jpeg_bytes()).status_code == 200
    cases = [
        (post(b"%PDF-1.4 not an image", "application/pdf", "q.pdf"), 415, "unsupported_media_type"),
        (post(b"plain text", "text/plain", "q.txt"), 415, "unsupported_media_type"),
        (post(b"this is not a jpeg"), 400, "image_decode"),
        (post(jpeg_bytes()[:200]), 400, "image_decode"),
        (post(b""), 400, "image_decode"),
        (post(bomb_png(), "image/png", "bomb.png"), 413, "image_too_large"),
        (post(jpeg_bytes((1200, 1000))), 413, "image_too_large"),  # above upload_max_pixels
        (post(b"\xff" * 30_000), 413, "payload_too_large"),  # above max_upload_bytes
        (small_limit.post(url, data={"other": "field"}), 422, "invalid_request"),
    ]
    for response, status, kind in cases:
        assert response.status_code == status, (kind, response.text)
        body = response.json()["error"]
        assert body["type"] == kind and body["status"] == status and body["message"]


def test_declared_length_over_limit_is_refused_before_reading(small_limit):
    response = small_limit.post("/api/search/image", content=b"x" * 10,
                                headers={"content-type": "multipart/form-data; boundary=x",
                                         "content-length": str(10**9)})
    assert response.status_code == 413 and response.json()["error"]["type"] == "payload_too_large"


def test_streamed_body_over_limit_is_refused(small_limit):
    def chunks():
        for _ in range(100):
            yield b"y" * 1024

    response = small_limit.post("/api/search/image", content=chunks(),
                                headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413


def test_query_length_limit(small_limit):
    assert small_limit.get("/api/search/text", params={"q": "a" * 1000}).status_code == 200
    response = small_limit.get("/api/search/text", params={"q": "a" * 1001})
    assert response.status_code == 422 and "1000" in response.json()["error"]["message"]


# ------------------------------------------------------------------ token
def api_calls(client):
    """Every API operation from the OpenAPI schema, with its method."""
    for path, operations in client.app.openapi()["paths"].items():
        for method in operations:
            yield method.upper(), path.replace("{image_id}", "1")


def test_exposed_server_needs_the_token_on_every_api_call(exposed):
    calls = list(api_calls(exposed))
    assert len(calls) >= 12
    for method, url in calls:
        if url == "/api/session" and method == "POST":
            continue  # the login itself
        response = exposed.request(method, url, params={"q": "red"})
        assert response.status_code == 401, (method, url)
        assert response.json()["error"]["type"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    wrong = exposed.get("/api/status", headers={"Authorization": "Bearer wrong-token-here"})
    assert wrong.status_code == 401


def test_token_header_variants(exposed):
    assert exposed.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert exposed.get("/api/status", headers={"X-Sightline-Token": TOKEN}).status_code == 200
    files = {"file": ("q.jpg", jpeg_bytes(), "image/jpeg")}
    assert exposed.post("/api/search/image", files=files).status_code == 401
    ok = exposed.post("/api/search/image", files=files, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["results"]


def test_browser_login_sets_a_cookie(exposed):
    assert exposed.get("/").status_code == 200  # the page itself holds no data
    assert exposed.post("/api/session", json={"token": "nope-nope-nope"}).status_code == 401
    assert exposed.get("/api/images/1/thumbnail").status_code == 401
    login = exposed.post("/api/session", json={"token": TOKEN})
    assert login.status_code == 204
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert exposed.get("/api/images/1/thumbnail").status_code == 200
    assert exposed.get("/api/status").json()["token_required"] is True
    exposed.delete("/api/session")
    exposed.cookies.clear()
    assert exposed.get("/api/status").status_code == 401


def test_exposed_without_token_is_refused(fake_index, tmp_path):
    from sightline.web.app import create_app
    from sightline.web.settings import InsecureBindError

    index_dir, _ = fake_index
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        with pytest.raises(InsecureBindError, match="token"):
            create_app(make_settings(index_dir, tmp_path, host=host))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        create_app(make_settings(index_dir, tmp_path, host=host))  # loopback needs none


def test_loopback_server_rejects_foreign_host_names(fake_index, tmp_path):
    """DNS rebinding: a page on evil.example must not read a local server."""
    index_dir, _ = fake_index
    settings = make_settings(index_dir, tmp_path, engine_factory=fake_factory(index_dir))
    with serve(settings) as c:
        assert c.get("/api/status", headers={"host": "evil.example"}).status_code == 421
        assert c.get("/", headers={"host": "evil.example:8000"}).status_code == 421
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
            assert c.get("/api/health", headers={"host": host}).status_code == 200, host


# ------------------------------------------------------------ error bodies
class ExplodingEncoder(FakeEncoder):
    def encode_texts(self, texts, batch_size=64):
        if texts[0] == "boom":
            raise RuntimeError("secret internals at /srv/private/thing.py line 3")
        if texts[0] == "nomodel":
            raise ModelNotAvailableError("weights missing in /root/.cache/huggingface/hub/x; try --pretrained")
        return super().encode_texts(texts, batch_size)


def test_errors_are_typed_json_without_tracebacks_or_paths(fake_index, tmp_path):
    index_dir, _ = fake_index
    settings = make_settings(index_dir, tmp_path, engine_factory=fake_factory(index_dir, ExplodingEncoder()))
    with serve(settings, raise_server_exceptions=False) as c:
        crash = c.get("/api/search/text", params={"q": "boom"})
        assert crash.status_code == 500
        assert crash.json() == {"error": {"type": "internal_error", "status": 500,
                                          "message": "internal server error (details are in the server log)"}}
        missing = c.get("/api/search/text", params={"q": "nomodel"})
        assert missing.status_code == 503
        error = missing.json()["error"]
        assert error["type"] == "model_not_available" and "/root" not in error["message"]
        assert "--pretrained" in error["message"]
        unknown = c.get("/api/nothing-here")
        assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found"
        wrong_method = c.delete("/api/status")
        assert wrong_method.status_code == 405 and wrong_method.json()["error"]["type"] == "method_not_allowed"
        for response in (crash, missing, unknown, wrong_method):
            assert "Traceback" not in response.text and str(index_dir) not in response.text


def test_scrub_removes_server_paths():
    from sightline.web.errors import scrub

    message = "no Sightline index at /data/idx. Create one with `sightline index PHOTOS --index /data/idx`"
    assert scrub(message, ["/data/idx"]) == ("no Sightline index at <index>. Create one with "
                                             "`sightline index PHOTOS --index <index>`")
    assert scrub("cannot open /home/me/x.jpg: bad") == "cannot open <path>: bad"
    assert scrub("k must be between 1 and 1000; got image/png") == "k must be between 1 and 1000; got image/png"


def test_security_headers_on_the_page(small_limit):
    page = small_limit.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert small_limit.get("/static/app.js").headers["content-type"].startswith(("text/javascript",
                                                                                  "application/javascript"))
