"""`sightline index PATH...`, `sightline roots`, `status` with roots, and the exit codes of safe sweeping."""

import json
import shutil

from tests.cli.test_commands import run_cli
from tests.helpers import write_photos


def test_roots_from_the_command_line(tmp_path, tiny_model_args):
    a, b, index = tmp_path / "a", tmp_path / "b", tmp_path / "index"
    write_photos(a / "private", 2)
    write_photos(a, 3, start=10)
    write_photos(b, 2, start=20)
    result = run_cli("index", a, b, "--index", index, *tiny_model_args, "--workers", "0", "--exclude", "*/private/*",
                     "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["indexed"] == 5 and report["roots"] == [str(a), str(b)] and report["held_back"] == []
    listed = json.loads(run_cli("roots", "--index", index, "--json").stdout)
    assert [(r["path"], r["photos"], r["excludes"], r["state"]) for r in listed] == [
        (str(a), 3, ["*/private/*"], "ok"), (str(b), 2, ["*/private/*"], "ok")]
    assert "3 photo(s)" in run_cli("roots", "--index", index).stdout
    status = json.loads(run_cli("status", "--index", index, "--json").stdout)
    assert [r["path"] for r in status["roots"]] == [str(a), str(b)]
    assert "Roots:" in run_cli("status", "--index", index).stdout

    shutil.rmtree(b)  # an unplugged disk: kept, and the exit code says so
    held = run_cli("index", "--index", index, "--workers", "0", "--json")
    assert held.exit_code == 20, held.output
    assert json.loads(held.stdout)["held_back"][0]["kept"] == 2
    assert "is missing" in held.stderr and "--prune" in held.stderr and "Traceback" not in held.output
    assert json.loads(run_cli("roots", "--index", index, "--json").stdout)[1]["state"] == "missing"
    removed = run_cli("roots", "remove", b, "--index", index, "--json")
    assert json.loads(removed.stdout) == {"root": str(b), "removed": 2}
    assert run_cli("index", "--index", index, "--workers", "0", "-q").exit_code == 0
    missing = run_cli("roots", "remove", b, "--index", index)
    assert missing.exit_code == 9 and "not a root" in missing.stderr


def test_usage_errors(tmp_path, tiny_model_args):
    index = tmp_path / "index"
    result = run_cli("index", "--index", index, *tiny_model_args)
    assert result.exit_code == 2 and "remembers no folders" in result.stderr
    result = run_cli("index", tmp_path / "nowhere", "--index", index, *tiny_model_args)
    assert result.exit_code == 2 and "does not exist" in result.stderr
    for command in (["roots"], ["roots", "remove"]):
        assert run_cli(*command, "--help").exit_code == 0
