"""Property-based tests of the whole API from its own OpenAPI schema (schemathesis).

Every operation the schema lists is driven in-process (ASGI) over a real index
built by `sightline index` with the tiny model: schemathesis' coverage phase
(boundary values, wrong types, missing parameters, unsupported methods) plus
derandomized fuzzing, positive and negative.  Each response must not be a 5xx,
must match its documented status and schema (Allow header included), must
accept schema-valid and reject schema-invalid input, and an error body must
never carry a traceback or a server path.

Two things a schema cannot say are added by hand: upload cases are repeated
with a real image (random bytes are never a decodable photo, so schema-valid
uploads are otherwise all rejected), and half of the generated image ids are
folded into the index's id range so that the found-an-image paths run too.

The exposed variant (non-loopback bind, token) runs every case twice: with
the token it must behave as above; without it, it must be a 401 that says
how to pass the token.
"""

from __future__ import annotations

import io

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from PIL import Image
from schemathesis.checks import positive_data_acceptance
from schemathesis.python import asgi

from sightline.search.engine import SearchEngine
from sightline.search.store import Store
from tests.web.support import PHOTOS, make_settings

TOKEN = "schemathesis-token-123"
LOCAL_HOST = {"host": "127.0.0.1"}
#: Ids from 1 to this are folded into; a few beyond PHOTOS stay unknown (404).
ID_RANGE = PHOTOS + 4
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
FUZZ_EXPOSED = settings(FUZZ, max_examples=12)


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (40, 160, 90)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _jpeg()


@pytest.fixture(scope="module")
def app_factory(built_index, tiny_encoder, tmp_path_factory):
    """Apps over the shared index; their lifespans are stopped when the module ends."""
    from sightline.web.app import create_app

    def make(**overrides):
        tmp = tmp_path_factory.mktemp("schemathesis")
        factory = lambda: SearchEngine(Store.open(built_index), tiny_encoder)  # noqa: E731
        return create_app(make_settings(built_index, tmp, engine_factory=factory, **overrides))

    yield make
    asgi.shutdown_lifespans()  # schemathesis keeps an ASGI app's lifespan running until told


@pytest.fixture(scope="module")
def loopback_api(app_factory):
    return schemathesis.openapi.from_asgi("/openapi.json", app_factory(), headers=LOCAL_HOST)


@pytest.fixture(scope="module")
def exposed_api(app_factory):
    app = app_factory(host="0.0.0.0", token=TOKEN)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def server_paths(built_index, photo_dir) -> list[str]:
    return [str(built_index), str(photo_dir), str(built_index.resolve()), "/tmp/"]


def _all_positive(case) -> bool:
    meta = case.meta
    return (meta is not None and meta.generation.mode.is_positive
            and not any(c.mode.is_negative for c in meta.components.values()))


def _fold_image_id(case) -> None:
    """Point half of the schema-valid ids at images that exist."""
    image_id = (case.path_parameters or {}).get("image_id")
    if _all_positive(case) and isinstance(image_id, int) and image_id % 2 == 0:
        case.path_parameters = {**case.path_parameters, "image_id": 1 + image_id % ID_RANGE}


def _is_upload(case) -> bool:
    return case.method == "POST" and case.operation.path in ("/api/search/image", "/api/captions/image")


def _check_error_body(response, server_paths: list[str]) -> None:
    if response.status_code < 400:
        return
    text = response.text
    assert response.json()["error"]["status"] == response.status_code, text
    assert "Traceback" not in text and 'File "' not in text, text
    for path in server_paths:
        assert path not in text, (path, text)


def _run(case, server_paths: list[str], headers: dict) -> None:
    _fold_image_id(case)
    # Random bytes are schema-valid but never an image: rejecting them is right.
    excluded = [positive_data_acceptance] if _is_upload(case) else []
    response = case.call_and_validate(headers=headers, excluded_checks=excluded)
    _check_error_body(response, server_paths)
    if _is_upload(case) and _all_positive(case):
        # The same schema-valid query with a real photo must be answered.
        with_image = case.operation.Case(query=case.query, body={"file": JPEG}, media_type=case.media_type,
                                         multipart_content_types={"file": "image/jpeg"})
        answer = with_image.call_and_validate(headers=headers)
        assert answer.status_code == 200, answer.text


loopback = schemathesis.pytest.from_fixture("loopback_api")
exposed = schemathesis.pytest.from_fixture("exposed_api")


@loopback.parametrize()
@FUZZ
def test_api_conforms_to_its_schema(case, server_paths):
    _run(case, server_paths, LOCAL_HOST)


@exposed.parametrize()
@FUZZ_EXPOSED
def test_exposed_api_needs_the_token(case, server_paths):
    _run(case, server_paths, {"Authorization": f"Bearer {TOKEN}"})
    anonymous = case.call()
    if case.operation.path == "/api/session" and case.method == "POST":
        assert anonymous.status_code in (204, 400, 401, 405, 422), anonymous.text  # the login itself
        assert anonymous.status_code != 204 or case.body == {"token": TOKEN}
        return
    assert anonymous.status_code == 401, (case.method, case.formatted_path, anonymous.text)
    assert "Authorization: Bearer" in anonymous.json()["error"]["message"]
    assert anonymous.headers["www-authenticate"][0].startswith("Bearer")  # header values come as lists
