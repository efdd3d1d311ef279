"""Search endpoints over a real index (tiny open_clip model): text, image,
"more like this", image -> text, paging and validation."""

from __future__ import annotations

import pytest

from tests.web.support import CAPTIONS, PHOTOS


def ids(answer) -> list[int]:
    return [r["id"] for r in answer["results"]]


def test_status_and_health(client, tiny_encoder):
    status = client.get("/api/status").json()
    assert status["images"] == PHOTOS
    assert status["captions"] == len(CAPTIONS)
    assert status["model"] == tiny_encoder.model_id
    assert status["dim"] == tiny_encoder.dim
    assert status["last_indexed"] and status["last_run"]["indexed"] == PHOTOS
    assert status["model_loaded"] is True and status["token_required"] is False
    assert "/" not in str(status.get("index", ""))  # the server's index path is not reported
    health = client.get("/api/health").json()
    assert health == {"status": "ok", "images": PHOTOS, "model_loaded": True, "detail": None}


def test_text_search_results(client):
    answer = client.get("/api/search/text", params={"q": "a red square", "k": 7}).json()
    assert answer["query"] == {"kind": "text", "text": "a red square", "image_id": None}
    assert len(answer["results"]) == 7 and answer["next_offset"] == 7
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    hit = answer["results"][0]
    assert hit["thumbnail_url"] == f"/api/images/{hit['id']}/thumbnail"
    assert hit["file_url"] == f"/api/images/{hit['id']}/file"
    assert hit["name"] and hit["path"].endswith(hit["name"])
    assert answer["index_images"] == PHOTOS and answer["captions"] is None


def test_text_pagination_is_consistent(client):
    whole = ids(client.get("/api/search/text", params={"q": "sunset", "k": 12}).json())
    first = client.get("/api/search/text", params={"q": "sunset", "k": 5}).json()
    second = client.get("/api/search/text", params={"q": "sunset", "k": 5, "offset": 5}).json()
    assert ids(first) + ids(second) == whole[:10]
    last = client.get("/api/search/text", params={"q": "sunset", "k": 10, "offset": PHOTOS - 4}).json()
    assert len(last["results"]) == 4 and last["next_offset"] is None
    beyond = client.get("/api/search/text", params={"q": "sunset", "offset": PHOTOS + 5}).json()
    assert beyond["results"] == [] and beyond["next_offset"] is None


def test_min_score_filters(client):
    answer = client.get("/api/search/text", params={"q": "sunset", "k": 50}).json()
    cut = answer["results"][5]["score"]
    kept = client.get("/api/search/text", params={"q": "sunset", "k": 50, "min_score": cut}).json()
    assert kept["results"] and all(r["score"] >= cut for r in kept["results"])
    assert len(kept["results"]) < len(answer["results"])
    none = client.get("/api/search/text", params={"q": "sunset", "min_score": 1.0}).json()
    assert none["results"] == [] and none["index_images"] == PHOTOS


@pytest.mark.parametrize("params", [
    {"q": ""}, {"q": "   "}, {"q": "x" * 1001}, {"q": "cat", "k": 0}, {"q": "cat", "k": 1001},
    {"q": "cat", "offset": -1}, {"q": "cat", "k": "ten"}, {"q": "cat", "min_score": 2}, {},
])
def test_text_query_validation(client, params):
    response = client.get("/api/search/text", params=params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["status"] == 422 and error["type"] in ("invalid_request", "invalid_query") and error["message"]


def test_image_upload_finds_itself_with_captions(client, photo_dir):
    target = photo_dir / "photo_0003.jpg"
    files = {"file": ("query.jpg", target.read_bytes(), "image/jpeg")}
    answer = client.post("/api/search/image", params={"k": 5, "captions": 3}, files=files).json()
    assert answer["query"]["kind"] == "image"
    assert answer["results"][0]["name"] == "photo_0003.jpg"
    assert answer["results"][0]["score"] > 0.99
    assert len(answer["captions"]) == 3 and answer["captions_note"] is None
    assert {c["text"] for c in answer["captions"]} <= set(CAPTIONS)
    scores = [c["score"] for c in answer["captions"]]
    assert scores == sorted(scores, reverse=True)


def test_image_upload_pages_and_octet_stream(client, photo_dir):
    data = (photo_dir / "graphic.png").read_bytes()
    first = client.post("/api/search/image", params={"k": 4},
                        files={"file": ("blob", data, "application/octet-stream")}).json()
    second = client.post("/api/search/image", params={"k": 4, "offset": 4}, files={"file": ("q.png", data)}).json()
    assert first["captions"] is None and first["next_offset"] == 4
    assert not set(ids(first)) & set(ids(second))


def test_more_like_this_excludes_itself(client):
    target = client.get("/api/search/text", params={"q": "green", "k": 1}).json()["results"][0]["id"]
    answer = client.get(f"/api/images/{target}/similar", params={"k": 10, "captions": 2}).json()
    assert answer["query"] == {"kind": "similar", "text": None, "image_id": target}
    assert target not in ids(answer) and len(answer["results"]) == 10
    assert len(answer["captions"]) == 2
    every = client.get(f"/api/images/{target}/similar", params={"k": 100}).json()
    assert len(every["results"]) == PHOTOS - 1 and every["next_offset"] is None


def test_captions_for_upload_and_for_id(client, photo_dir):
    files = {"file": ("q.jpg", (photo_dir / "photo_0001.jpg").read_bytes(), "image/jpeg")}
    upload = client.post("/api/captions/image", params={"k": 4}, files=files).json()
    assert len(upload["results"]) == 4 and upload["note"] is None
    assert upload["index_captions"] == len(CAPTIONS)
    by_id = client.get("/api/images/2/captions", params={"k": 100}).json()
    assert len(by_id["results"]) == len(CAPTIONS)
    assert {"id", "score", "text", "source", "file_id"} <= set(by_id["results"][0])


def test_captions_when_the_index_has_none(fake_index, tmp_path):
    from tests.web.support import fake_factory, make_settings, serve

    index_dir, photos = fake_index
    with serve(make_settings(index_dir, tmp_path, engine_factory=fake_factory(index_dir))) as c:
        files = {"file": ("q.jpg", photos[0].read_bytes(), "image/jpeg")}
        upload = c.post("/api/captions/image", files=files).json()
        assert upload["results"] == [] and "no captions" in upload["note"]
        by_id = c.get("/api/images/1/captions").json()
        assert by_id["results"] == [] and "no captions" in by_id["note"]
        combined = c.post("/api/search/image", params={"captions": 5}, files=files).json()
        assert combined["results"] and combined["captions"] == [] and "no captions" in combined["captions_note"]


def test_unknown_ids_are_404(client):
    for url in ("/api/images/999999/similar", "/api/images/999999/captions", "/api/images/999999",
                "/api/images/999999/thumbnail", "/api/images/999999/file", "/api/images/0", "/api/images/-3"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["type"] == "not_found"


def test_openapi_documents_every_endpoint(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path, method in [("/api/search/text", "get"), ("/api/search/image", "post"),
                         ("/api/images/{image_id}/similar", "get"), ("/api/captions/image", "post"),
                         ("/api/images/{image_id}/captions", "get"), ("/api/images/{image_id}", "get"),
                         ("/api/images/{image_id}/thumbnail", "get"), ("/api/images/{image_id}/file", "get"),
                         ("/api/status", "get"), ("/api/health", "get")]:
        operation = paths[path][method]
        assert operation.get("summary"), path
        assert "404" in operation["responses"], path
    ok = paths["/api/search/text"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/ImageSearchResponse")
    params = {p["name"] for p in paths["/api/search/text"]["get"]["parameters"]}
    assert {"q", "k", "offset", "min_score"} <= params
    upload = paths["/api/search/image"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    assert {"ErrorResponse", "ImageDetail", "StatusResponse", "CaptionSearchResponse"} <= set(
        schema["components"]["schemas"])


def test_deep_pages_of_more_like_this(client):
    """Any page the schema allows is answered (k + offset + 1 beyond MAX_K used to be a 422)."""
    everything = client.get("/api/images/1/similar", params={"k": 1000})
    assert everything.status_code == 200 and len(everything.json()["results"]) == PHOTOS - 1
    for offset in (999, 99_999, 100_000):
        response = client.get("/api/images/1/similar", params={"k": 20, "offset": offset})
        assert response.status_code == 200 and response.json()["results"] == [], (offset, response.text)


def test_method_not_allowed_names_every_method(client):
    """Starlette's 405 listed only the first route at the path (Allow: POST for /api/session)."""
    response = client.request("OPTIONS", "/api/session")
    assert response.status_code == 405 and response.json()["error"]["type"] == "method_not_allowed"
    assert set(response.headers["allow"].split(", ")) == {"DELETE", "POST"}


def test_blank_queries_are_outside_the_schema(client):
    """The schema says what is refused, so clients (and schemathesis) can know."""
    q = next(p for p in client.get("/openapi.json").json()["paths"]["/api/search/text"]["get"]["parameters"]
             if p["name"] == "q")["schema"]
    assert q["maxLength"] == 1000 and q["pattern"]
    for blank in (" ", "\t\n", "\u3000", "\x1c\x1f"):
        response = client.get("/api/search/text", params={"q": blank})
        assert response.status_code == 422 and response.json()["error"]["type"] == "invalid_request", blank
