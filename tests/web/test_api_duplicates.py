"""GET /api/duplicates over a real index with copies: the same groups as the library, paging,
validation, and the /duplicates page."""

import pytest

from sightline.search.duplicates import find_duplicates
from sightline.search.engine import SearchEngine
from sightline.search.store import Store
from tests.web.support import make_settings, serve


@pytest.fixture(scope="module")
def dup_client(duplicate_index, tiny_encoder, tmp_path_factory):
    index_dir, _ = duplicate_index
    factory = lambda: SearchEngine(Store.open(index_dir), tiny_encoder)  # noqa: E731
    with serve(make_settings(index_dir, tmp_path_factory.mktemp("dup-server"), engine_factory=factory)) as c:
        yield c


@pytest.mark.parametrize("threshold", [0.99, 0.9995])
def test_groups_are_the_librarys(dup_client, duplicate_index, threshold):
    index_dir, _ = duplicate_index
    body = dup_client.get("/api/duplicates", params={"threshold": threshold, "limit": 200}).json()
    with Store.open(index_dir) as store:
        expected = find_duplicates(store, threshold)
    assert body["total_groups"] == len(expected) == len(body["groups"])
    assert [[f["id"] for f in g["files"]] for g in body["groups"]] == [[f.id for f in g.files] for g in expected]
    first = body["groups"][0]["files"][0]
    assert {"thumbnail_url", "preview_url", "file_url", "folder", "size", "similarity", "taken_at"} <= set(first)
    assert body["reclaimable_bytes"] == sum(g.reclaimable_bytes for g in expected)


def test_exact_only_and_paging(dup_client):
    body = dup_client.get("/api/duplicates", params={"exact_only": True}).json()
    assert [(g["kind"], g["score"], g["file_count"]) for g in body["groups"]] == [("exact", 1.0, 2)]
    assert {f["name"] for f in body["groups"][0]["files"]} == {"photo_0002.jpg"}
    everything = dup_client.get("/api/duplicates", params={"threshold": 0.9}).json()
    page = dup_client.get("/api/duplicates", params={"threshold": 0.9, "limit": 1, "offset": 0}).json()
    assert page["groups"] == everything["groups"][:1]
    assert page["next_offset"] == (1 if everything["total_groups"] > 1 else None)


def test_folder_filter_and_validation(dup_client, duplicate_index):
    _, photos = duplicate_index
    body = dup_client.get("/api/duplicates", params={"folder": str(photos), "exact_only": True}).json()
    assert body["groups"] == []  # the exact copy lives in the other root
    for bad in ({"threshold": 0.1}, {"threshold": "nan"}, {"threshold": 2}, {"limit": 0}):
        response = dup_client.get("/api/duplicates", params=bad)
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["error"]["type"] == "invalid_request"


def test_the_page_is_served(dup_client):
    page = dup_client.get("/duplicates")
    assert page.status_code == 200 and "duplicates.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert dup_client.get("/static/duplicates.js").status_code == 200
