"""The ``sightline`` command line: index, search, status, and its errors."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from sightline.cli import main
from tests.helpers import photo, write_photos


def run_cli(*args, env=None):
    runner = CliRunner()
    result = runner.invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)
    return result


@pytest.fixture
def indexed(tmp_path, tiny_model_args):
    folder = tmp_path / "photos"
    write_photos(folder, 15)
    index = tmp_path / "index"
    result = run_cli("index", folder, "--index", index, *tiny_model_args, "--workers", "0", "-q")
    assert result.exit_code == 0, result.output
    return folder, index


def test_help_everywhere():
    for command in ([], ["index"], ["search"], ["status"]):
        result = run_cli(*command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output


def test_index_summary_and_json(tmp_path, tiny_model_args, indexed):
    folder, index = indexed
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = run_cli("index", folder, "--index", index, "--workers", "0", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["unchanged"] == 15 and report["indexed"] == 0
    assert report["failed"][0]["path"].endswith("broken.jpg")


def test_search_text_json(indexed):
    _, index = indexed
    result = run_cli("search", "a photo of a beach", "--index", index, "-k", "5", "--json")
    assert result.exit_code == 0
    hits = json.loads(result.stdout)
    assert len(hits) == 5 and {"id", "path", "score"} <= set(hits[0])
    assert hits == sorted(hits, key=lambda h: -h["score"])
    page2 = json.loads(run_cli("search", "a photo of a beach", "--index", index, "-k", "5", "--offset", "5",
                               "--json").stdout)
    assert not {h["id"] for h in hits} & {h["id"] for h in page2}


def test_search_by_image_finds_itself_first(indexed):
    folder, index = indexed
    result = run_cli("search", "--image", folder / "photo_0003.jpg", "--index", index, "--json")
    hits = json.loads(result.stdout)
    assert hits[0]["path"].endswith("photo_0003.jpg") and hits[0]["score"] > 0.999


def test_search_plain_output(indexed):
    _, index = indexed
    result = run_cli("search", "dog", "--index", index, "-k", "3")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].split("  ", 1)[1].endswith(".jpg")


def test_status(indexed):
    folder, index = indexed
    (folder / "zero.png").write_bytes(b"")
    run_cli("index", folder, "--index", index, "--workers", "0", "-q")
    info = json.loads(run_cli("status", "--index", index, "--json").stdout)
    assert info["images"] == 15 and info["dim"] == 32 and info["model"].startswith("tiny-vit/")
    assert info["failures"] == [{"path": str(folder / "zero.png"), "reason": "empty file (0 bytes)"}]
    assert info["disk_bytes"] > 0 and info["last_run"]["indexed"] == 0
    text = run_cli("status", "--index", index).stdout
    assert "Images:    15" in text and "zero.png" in text


def test_index_env_var(tmp_path, tiny_model_args, indexed):
    _, index = indexed
    result = run_cli("status", "--json", env={"SIGHTLINE_INDEX": str(index)})
    assert json.loads(result.stdout)["images"] == 15


def test_errors_are_messages_not_tracebacks(tmp_path, tiny_model_args, indexed):
    folder, index = indexed
    result = run_cli("search", "x", "--index", tmp_path / "nowhere")
    assert result.exit_code == 5 and "no Sightline index" in result.stderr and "Traceback" not in result.output
    result = run_cli("search", "--index", index)
    assert result.exit_code == 2 and "QUERY or --image" in result.stderr
    other = tmp_path / "other.pt"
    from tests.helpers import make_tiny_checkpoint

    make_tiny_checkpoint(other, seed=1)
    result = run_cli("index", folder, "--index", index, "--model", tiny_model_args[1], "--pretrained", other)
    assert result.exit_code == 4 and "re-index" in result.stderr


def test_console_script_end_to_end(tmp_path, tiny_model_args):
    """The installed ``sightline`` entry point, as the README uses it."""
    folder = tmp_path / "photos"
    write_photos(folder, 6)
    photo(3).save(folder / "photo_0003_copy.jpg")
    env = dict(os.environ, SIGHTLINE_INDEX=str(tmp_path / "index"))
    subprocess.run([sys.executable, "-m", "sightline", "index", str(folder), *tiny_model_args],
                   check=True, env=env, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "sightline", "search", "--image", str(folder / "photo_0003.jpg"),
                          "-k", "2", "--json"], check=True, env=env, capture_output=True, text=True).stdout
    paths = sorted(os.path.basename(h["path"]) for h in json.loads(out))
    assert paths == ["photo_0003.jpg", "photo_0003_copy.jpg"]
