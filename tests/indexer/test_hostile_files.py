"""Hostile files: indexing finishes, records every failure with its reason, retries
failures only when they change, and indexes every image that can be decoded.

The corpus (tests/hostile_corpus.py) is generated: truncated files at many
offsets, empty and random files, decompression bombs, odd pixel modes,
animations, broken EXIF, strange names, symlink loops, FIFOs and devices.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from click.testing import CliRunner

from benchmarks.common import process_tree
from sightline.cli import main
from sightline.indexer.pipeline import IndexJob
from sightline.search.errors import ImageDecodeError
from sightline.search.imageio import decode_image
from sightline.search.store import Store
from sightline.search.store_records import display_path
from tests.helpers import photo, write_photos
from tests.hostile_corpus import build_cases, make_special_files, write_corpus


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def decodable(data: bytes) -> bool:
    try:
        decode_image(data, draft_size=64)
        return True
    except ImageDecodeError:
        return False


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "corpus"
    cases = write_corpus(folder, build_cases(seed=0))
    cases.update(make_special_files(folder))
    return folder, {os.fsdecode(path): case for path, case in cases.items()}


def test_corpus_is_large_and_varied(corpus):
    _, cases = corpus
    groups = {c.group for c in cases.values()}
    assert {"truncated", "empty", "random", "bomb", "modes", "animated", "exif", "names", "special"} <= groups
    assert len(cases) >= 350


def test_decode_image_only_ever_raises_decode_errors(corpus):
    """Unit level: every corpus file decodes to RGB of its stated size, or raises ImageDecodeError."""
    import warnings

    _, cases = corpus
    for path, case in cases.items():
        if case.group == "special":
            continue
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                image, info = decode_image(case.data)
            assert not caught, f"{path}: {caught[0].message}"  # broken metadata is not worth a warning per file
        except ImageDecodeError as exc:
            assert str(exc), path
            assert case.expect in ("fail", "either"), f"{path}: {exc}"
            continue
        assert case.expect in ("index", "either", "skip"), path
        assert image.mode == "RGB" and (info.width, info.height) == image.size, path


def test_hostile_corpus_end_to_end(tmp_path, corpus, tiny_model_args):
    folder, cases = corpus
    index = tmp_path / "index"
    result = cli("index", folder, "--index", index, *tiny_model_args, "--workers", "2", "--batch-size", "16",
                 "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)

    with Store.open(index) as store:
        stored = store.file_states()
        rows = store.get_files([s.id for s in stored.values()])
        assert sorted(store.vectors("files").ids().tolist()) == sorted(s.id for s in stored.values())
    status = json.loads(cli("status", "--index", index, "--json").stdout)
    failed = {f["path"]: f["reason"] for f in status["failures"]}
    assert len(failed) == len(status["failures"])  # one entry per file

    for path, case in cases.items():
        shown = display_path(path)
        expect = case.expect
        if expect == "either":
            expect = "index" if decodable(case.data) else "fail"
        if expect == "index":
            assert path in stored, f"{shown} should be indexed; failure: {failed.get(shown)}"
            assert shown not in failed
        elif expect == "fail":
            assert path not in stored, shown
            assert shown in failed, f"{shown} should be recorded as a failure"
            assert re.search(case.reason, failed[shown], re.I), f"{shown}: {failed[shown]!r}"
        else:
            assert path not in stored and shown not in failed, shown
    # Nothing outside the corpus, nothing twice.
    assert set(stored) <= set(cases)
    assert set(failed) <= {display_path(p) for p in cases}
    assert report["indexed"] + report["reused"] == len(stored)
    assert len(report["failed"]) == len(failed)

    # EXIF orientation that can be read is applied to the recorded size; absurd values are ignored.
    by_name = {os.path.relpath(r.path, folder): r for r in rows.values()}
    assert (by_name["exif/orient_6.jpg"].width, by_name["exif/orient_6.jpg"].height) == (48, 64)
    assert (by_name["exif/orient_9.jpg"].width, by_name["exif/orient_9.jpg"].orientation) == (64, None)

    # A second run retries nothing that has not changed, and loses no recorded failure.
    again = json.loads(cli("index", folder, "--index", index, "--workers", "2", "--json").stdout)
    assert again["indexed"] == again["reused"] == again["removed"] == 0
    assert again["unchanged"] == len(stored)
    scan_problems = {f["path"] for f in again["failed"]}  # found while walking, so reported every run
    assert all("symbolic links" in f["reason"] for f in again["failed"])
    assert again["still_failing"] + len(scan_problems) == len(failed)
    status_again = json.loads(cli("status", "--index", index, "--json").stdout)
    assert {f["path"]: f["reason"] for f in status_again["failures"]} == failed


def test_failures_are_retried_when_the_file_changes(tmp_path, tiny_encoder):
    folder = tmp_path / "photos"
    write_photos(folder, 2)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (folder / "empty.png").write_bytes(b"")
    index = tmp_path / "index"

    def run():
        with Store.open(index, create=True) as store:
            return IndexJob(store, tiny_encoder, workers=0, progress=False).run(str(folder))

    assert len(run().failed) == 2
    second = run()
    assert (second.still_failing, second.failed, second.indexed) == (2, [], 0)
    photo(5).save(folder / "broken.jpg")  # fixed: retried and indexed
    (folder / "empty.png").write_bytes(b"still not a png")  # changed but still broken: retried, fails again
    third = run()
    assert third.indexed == 1 and [os.path.basename(f.path) for f in third.failed] == ["empty.png"]
    assert "not a recognised" in third.failed[0].reason
    (folder / "empty.png").unlink()  # gone: its failure is forgotten
    run()
    with Store.open(index) as store:
        assert store.failures() == []


# ------------------------------------------------------------------ memory
def _memory_kb(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) in kB: the process's peak and current resident memory."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(("VmHWM", "VmRSS")):
                    values[line[:5]] = int(line.split()[1])
    except OSError:
        pass
    return values.get("VmHWM", 0), values.get("VmRSS", 0)


def test_indexing_bombs_and_big_images_in_bounded_memory(tmp_path, tiny_model_args):
    """Peak memory of every process of an index run with 2 decode workers, sampled from /proc.

    The folder holds header-only bombs, real bombs that are allowed (64-megapixel 16-bit, palette
    and RGBA PNGs of a few hundred kB), a 1x65535 sliver, a 600 MB sparse file and ordinary photos.
    Before the fixes a worker peaked at ~2 GB on the 16-bit PNG alone.
    """
    import subprocess
    import sys

    from tests.helpers import REPO
    from tests.hostile_corpus import bomb_cases, png_chunk, raw_png

    folder = tmp_path / "photos"
    write_photos(folder, 6)
    for case in bomb_cases():
        (folder / os.path.basename(case.name)).write_bytes(case.data)
    side = 8000
    palette = png_chunk(b"PLTE", bytes(range(256)) * 3) + png_chunk(b"tRNS", b"\0" + b"\xff" * 255)
    big = {
        "grey16.png": raw_png(side, side, 16, 0, b"\0" + b"\x12\x34" * side),
        "palette.png": raw_png(side, side, 8, 3, b"\0" + (bytes(range(256)) * 32)[:side], palette),
        "rgba.png": raw_png(6000, 6000, 8, 6, b"\0" + b"\x10\x20\x30\x80" * 6000),
        "sliver.png": raw_png(1, 65535, 8, 2, b"\0\x10\x20\x30"),
    }
    for name, data in big.items():
        (folder / name).write_bytes(data)
    with open(folder / "sparse.jpg", "wb") as handle:
        handle.truncate(600 * 1024 * 1024)

    index = tmp_path / "index"
    proc = subprocess.Popen([sys.executable, "-m", "sightline", "index", str(folder), "--index", str(index),
                             *tiny_model_args, "--workers", "2", "--batch-size", "4", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    peaks: dict[int, int] = {}
    peak_total = 0
    while proc.poll() is None:
        tree = process_tree(proc.pid)
        total = 0
        for pid in tree:
            hwm, rss = _memory_kb(pid)
            peaks[pid] = max(peaks.get(pid, 0), hwm)
            total += rss
        peak_total = max(peak_total, total)
        time.sleep(0.02)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    report = json.loads(out)
    failed = {os.path.basename(f["path"]): f["reason"] for f in report["failed"]}
    assert report["indexed"] == 6 + len(big) and set(failed) == {
        os.path.basename(c.name) for c in bomb_cases()} | {"sparse.jpg"}
    assert "larger than 512 MiB" in failed["sparse.jpg"]

    mb = 1024
    main_peak = peaks.pop(proc.pid) // mb
    others = sorted((p // mb for p in peaks.values()), reverse=True)
    print(f"\npeak MB: index process {main_peak}, workers/helpers {others}, whole tree {peak_total // mb}")
    assert len(others) >= 2  # the decode workers were seen
    assert main_peak < 1500  # torch (~0.8 GB with its CUDA libraries) + the model; never a decoded image
    assert others[0] < 700  # decoded 16-bit 64 MP = 128 MB; float64 conversion used to take ~2 GB
    assert peak_total // mb < main_peak + 1000  # both workers busy at once, plus the forkserver
