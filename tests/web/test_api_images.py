"""Metadata, thumbnails and original files: served by id only, upright,
cached once, and never anything the index does not hold."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from tests.web.support import fake_factory, make_settings, serve


def find(client, name: str) -> dict:
    for page in range(0, 100, 50):
        answer = client.get("/api/search/text", params={"q": "photo", "k": 50, "offset": page}).json()
        for hit in answer["results"]:
            if hit["name"] == name:
                return hit
    raise AssertionError(f"{name} not in the index")


def test_metadata(client, photo_dir):
    hit = find(client, "photo_0000.jpg")
    detail = client.get(f"/api/images/{hit['id']}").json()
    original = photo_dir / "photo_0000.jpg"
    assert detail["path"] == str(original)
    assert (detail["width"], detail["height"]) == (160, 120)
    assert detail["size"] == original.stat().st_size and detail["format"] == "JPEG"
    assert len(detail["sha256"]) == 64
    assert detail["indexed_at"].endswith("+00:00") and detail["modified_at"]
    assert detail["similar_url"] == f"/api/images/{hit['id']}/similar"
    assert detail["preview_url"] == f"/api/images/{hit['id']}/thumbnail?size=large"


def test_own_captions_in_metadata(client):
    captioned = [client.get(f"/api/images/{i}").json() for i in range(1, 40)]
    with_captions = [d for d in captioned if "error" not in d and d["captions"]]
    assert len(with_captions) == 1
    assert with_captions[0]["captions"][0]["text"] == "a red square on grey"


def test_non_ascii_path(client, photo_dir):
    hit = find(client, "café ☕.jpg")
    assert hit["path"] == str(photo_dir / "café ☕.jpg")
    response = client.get(hit["file_url"])
    assert response.status_code == 200
    assert "filename*=UTF-8''caf%C3%A9%20%E2%98%95.jpg" in response.headers["content-disposition"]


def test_thumbnail_is_jpeg_small_and_cached_once(client):
    hit = find(client, "photo_0004.jpg")
    cache = client.app.state.settings.thumbnails
    before = set(cache.rglob("*.jpg"))
    first = client.get(hit["thumbnail_url"])
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "JPEG" and max(image.size) <= 320
    created = set(cache.rglob("*.jpg")) - before
    assert len(created) == 1
    stamp = next(iter(created)).stat().st_mtime_ns
    second = client.get(hit["thumbnail_url"])
    assert second.content == first.content
    assert next(iter(created)).stat().st_mtime_ns == stamp  # served from the cache, not regenerated
    etag = first.headers["etag"]
    assert client.get(hit["thumbnail_url"], headers={"If-None-Match": etag}).status_code == 304


def test_thumbnail_applies_exif_orientation(client):
    hit = find(client, "rotated.jpg")
    assert (hit["width"], hit["height"]) == (80, 160)  # stored 160x80, EXIF says rotate
    for url in (hit["thumbnail_url"], hit["preview_url"]):
        image = Image.open(io.BytesIO(client.get(url).content))
        assert image.height > image.width, url


def test_thumbnail_size_is_validated(client):
    response = client.get("/api/images/1/thumbnail", params={"size": "huge"})
    assert response.status_code == 422 and response.json()["error"]["type"] == "invalid_request"


def test_original_file(client, photo_dir):
    hit = find(client, "graphic.png")
    response = client.get(hit["file_url"])
    assert response.status_code == 200
    assert response.content == (photo_dir / "graphic.png").read_bytes()
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]


@pytest.mark.parametrize("url", [
    "/api/images/..%2F..%2F..%2Fetc%2Fpasswd/file",
    "/api/images/%2e%2e/file",
    "/api/images/..%2Fsightline.db/file",
    "/api/images/1%2F..%2F2/file",
    "/api/images/%2Fetc%2Fpasswd",
    "/api/images/1.5/thumbnail",
    "/api/images/99999999999999999999999/file",
    "/api/files/etc/passwd",
    "/static/..%2F..%2Fsearch%2Fstore.py",
    "/static/%2e%2e/app.py",
    "/api/images/1/file/..%2F..%2F..%2Fetc%2Fpasswd",
])
def test_path_traversal_is_404(client, url):
    response = client.get(url)
    assert response.status_code == 404, (url, response.status_code, response.text[:200])
    assert response.json()["error"]["type"] == "not_found"
    assert "root:" not in response.text


def test_client_supplied_path_is_ignored(client, photo_dir):
    hit = find(client, "photo_0002.jpg")
    response = client.get(hit["file_url"], params={"path": "/etc/passwd"})
    assert response.content == (photo_dir / "photo_0002.jpg").read_bytes()


def test_files_changed_since_indexing_are_not_served(fake_index, tmp_path):
    index_dir, photos = fake_index
    with serve(make_settings(index_dir, tmp_path, engine_factory=fake_factory(index_dir))) as c:
        assert c.get("/api/images/1/file").status_code == 200
        # Replaced by a link to something else: refused, although the path is the indexed one.
        secret = tmp_path / "secret.txt"
        secret.write_text("not an indexed photo")
        photos[1].unlink()
        os.symlink(secret, photos[1])
        for url in ("/api/images/2/file", "/api/images/2/thumbnail"):
            response = c.get(url)
            assert response.status_code == 404 and "changed on disk" in response.json()["error"]["message"]
            assert "not an indexed photo" not in response.text
        # Deleted: 404 with a hint, no path.
        photos[2].unlink()
        response = c.get("/api/images/3/file")
        assert response.status_code == 404 and str(tmp_path) not in response.text
        # A directory in place of the file.
        photos[3].unlink()
        photos[3].mkdir()
        assert c.get("/api/images/4/thumbnail").status_code == 404


def test_thumbnail_cache_folder_unwritable_still_serves(fake_index, tmp_path):
    index_dir, _ = fake_index
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    settings = make_settings(index_dir, tmp_path, engine_factory=fake_factory(index_dir), thumbnail_dir=blocker)
    with serve(settings) as c:
        response = c.get("/api/images/1/thumbnail")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
