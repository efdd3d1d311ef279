"""`sightline serve`: option checks before binding, and a real process answering."""

from __future__ import annotations

import json
import urllib.request

from click.testing import CliRunner

from sightline.cli import main
from sightline.search.store import Store


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def test_serve_help():
    result = run("serve", "--help")
    assert result.exit_code == 0
    for option in ("--index", "--host", "--port", "--token", "--max-upload-mb", "SIGHTLINE_TOKEN"):
        assert option in result.output


def test_serve_refuses_public_bind_without_token(tmp_path, monkeypatch):
    monkeypatch.delenv("SIGHTLINE_TOKEN", raising=False)
    Store.open(tmp_path / "index", create=True).close()
    result = run("serve", "--index", tmp_path / "index", "--host", "0.0.0.0")
    assert result.exit_code == 2
    assert "token" in result.output and "Traceback" not in result.output


def test_serve_refuses_short_token(tmp_path):
    Store.open(tmp_path / "index", create=True).close()
    result = run("serve", "--index", tmp_path / "index", "--host", "0.0.0.0", env={"SIGHTLINE_TOKEN": "abc"})
    assert result.exit_code == 2 and "at least 8" in result.output


def test_serve_missing_index(tmp_path):
    result = run("serve", "--index", tmp_path / "nothing")
    assert result.exit_code == 5
    assert "sightline index" in result.output and "Traceback" not in result.output


def test_serve_process_answers(tmp_path):
    """The real command on an empty index: starts fast (no model needed) and serves page and API."""
    from tests.web.server_process import running_server

    Store.open(tmp_path / "index", create=True).close()
    with running_server(tmp_path / "index", tmp_path / "server.log", timeout=60) as base:
        with urllib.request.urlopen(base + "/api/status") as response:
            assert json.load(response)["images"] == 0
        with urllib.request.urlopen(base + "/") as response:
            assert b"<title>Sightline</title>" in response.read()
    log = (tmp_path / "server.log").read_text()
    assert "0 image(s)" in log and "open http://127.0.0.1:" in log
