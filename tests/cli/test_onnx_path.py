"""The command line answers text and image queries from the ONNX export, without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sightline.cli import main
from tests.helpers import write_photos

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_model_args):
    """An index made by `sightline index`, which exports the model at the end."""
    root = tmp_path_factory.mktemp("cli-onnx")
    write_photos(root / "photos", 12)
    index = root / "index"
    result = run_cli("index", root / "photos", "--index", index, *tiny_model_args, "--workers", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["onnx_export_s"] > 0
    return root, index


def in_subprocess(args: list[str]) -> subprocess.CompletedProcess:
    """The real command in a fresh interpreter, then what it imported (printed after the command's output)."""
    code = ("import sys; from sightline.cli import main\n"
            f"try:\n    main.main({args!r}, prog_name='sightline')\nexcept SystemExit as exc:\n    code = exc.code\n"
            "print('IMPORTED', 'torch' in sys.modules, 'open_clip' in sys.modules, file=sys.stderr)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


def imported(done: subprocess.CompletedProcess) -> list[str]:
    return [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]


@pytest.mark.parametrize("query", [["a red square"], ["--image", "IMAGE"]])
def test_search_imports_no_torch(indexed, query):
    root, index = indexed
    query = [str(root / "photos" / "photo_0003.jpg") if q == "IMAGE" else q for q in query]
    done = in_subprocess(["search", *query, "--index", str(index), "-k", "3", "--json"])
    assert "IMPORTED False False" in done.stderr, done.stderr[-2000:]
    assert not [m for m in imported(done) if m.split(".")[0] in ("torch", "torchvision", "open_clip")]
    assert len(json.loads(done.stdout[:done.stdout.rindex("]") + 1])) == 3


def test_no_onnx_uses_torch(indexed):
    """The check above can fail: the torch path imports torch."""
    _, index = indexed
    done = in_subprocess(["search", "a red square", "--index", str(index), "-k", "3", "--no-onnx"])
    assert "IMPORTED True" in done.stderr and "torch" in imported(done)


def test_console_script_exit_codes_and_output(indexed):
    """`python -m sightline` ends read-only commands without interpreter teardown: same output, same codes."""
    root, index = indexed
    base = [sys.executable, "-m", "sightline"]
    ok = subprocess.run(base + ["search", "a dog", "--index", str(index), "-k", "4"], capture_output=True, text=True)
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == 4
    empty = subprocess.run(base + ["search", " ", "--index", str(index)], capture_output=True, text=True)
    assert empty.returncode == 2 and "query text is empty" in empty.stderr
    missing = subprocess.run(base + ["status", "--index", str(root / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 5 and "no Sightline index" in missing.stderr


def test_export_command_and_status(tmp_path, tiny_model_args):
    write_photos(tmp_path / "photos", 5)
    index = tmp_path / "index"
    assert run_cli("index", tmp_path / "photos", "--index", index, *tiny_model_args, "--workers", "0", "-q",
                   "--no-export").exit_code == 0
    assert not (index / "onnx").exists()
    status = run_cli("status", "--index", index)
    assert "torch (no ONNX export yet: `sightline export` makes one)" in status.output
    exported = run_cli("export", "--index", index, "--json")
    assert exported.exit_code == 0, exported.output
    report = json.loads(exported.stdout)
    assert report["text"] and report["image"] and report["unsupported"] == {}
    assert "text and image on onnxruntime" in run_cli("status", "--index", index).output
    assert json.loads(run_cli("status", "--index", index, "--json").stdout)["onnx"]["text"] is True
    again = run_cli("export", "--index", index)  # already there: nothing to do, same answer
    assert again.exit_code == 0 and "text queries: onnxruntime" in again.output


def test_export_of_an_empty_index_says_what_to_do(tmp_path):
    (tmp_path / "photos").mkdir()
    assert run_cli("index", tmp_path / "photos", "--index", tmp_path / "index", "-q").exit_code == 0
    result = CliRunner().invoke(main, ["export", "--index", str(tmp_path / "index")])
    assert result.exit_code == 3 and "is empty" in result.output and "Traceback" not in result.output
