"""`sightline serve` answers text and image queries from the ONNX export, torch never loaded."""

from __future__ import annotations

import io

import httpx

from tests.helpers import photo
from tests.web.server_process import server_process


def mapped_libraries(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


def test_the_server_answers_without_torch(built_index, tmp_path):
    with server_process(built_index, tmp_path / "server.log", "--refresh", "0") as server:
        status = httpx.get(server.base + "/api/status").json()
        assert status["model_loaded"] is True  # preloaded: both towers ran once at start
        text = httpx.get(server.base + "/api/search/text", params={"q": "a red square", "k": 5})
        buffer = io.BytesIO()
        photo(3, (120, 90)).save(buffer, "JPEG")
        image = httpx.post(server.base + "/api/search/image", params={"k": 5},
                           files={"file": ("q.jpg", buffer.getvalue(), "image/jpeg")})
        assert text.status_code == image.status_code == 200
        assert len(text.json()["results"]) == len(image.json()["results"]) == 5
        libraries = mapped_libraries(server.process.pid)
    assert "onnxruntime" in libraries
    assert "libtorch" not in libraries, "torch was loaded by the server"
