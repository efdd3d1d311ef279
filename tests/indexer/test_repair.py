"""`sightline repair` and the checks behind it: damaged FAISS files are found and
rebuilt from the stored embeddings, damaged databases are named, damaged
stored embeddings are dropped and re-embedded by the next run."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

from sightline.cli import main
from sightline.indexer.repair import DAMAGED, FATAL, STALE, repair, verify
from sightline.search.store import ModelInfo, Store
from sightline.search.store_records import FailureRecord, FileRecord
from tests.helpers import write_photos

DIM = 16


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _vectors(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def index(tmp_path):
    """A saved index of 300 images and 20 captions (fake 16-d vectors)."""
    root = tmp_path / "idx"
    with Store.open(root, create=True) as store:
        store.bind_model(ModelInfo("fake/test", DIM, "fake", "test"))
        vecs = _vectors(300)
        ids = store.add_files([FileRecord(f"/photos/img{i:04d}.jpg", 100 + i, 1_000 + i, f"{i:064d}", 64, 48,
                                          None, None, "JPEG", vecs[i]) for i in range(300)])
        store.add_captions([(ids[i], f"caption {i}", "test", _vectors(1, 1000 + i)[0]) for i in range(20)])
        store.save()
    return root


def checkpoint(root):
    with sqlite3.connect(root / "sightline.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def problems(report, severity=None):
    return [(p.where, p.message) for p in report.problems if severity is None or p.severity == severity]


def search_matches_database(root):
    with Store.open(root) as store:
        db = sqlite3.connect(root / "sightline.db")
        rows = db.execute("SELECT id, embedding FROM files ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows])
        matrix = np.frombuffer(b"".join(r[1] for r in rows), "<f4").reshape(-1, DIM)
        for query in _vectors(5, seed=77):
            expected = ids[np.argsort(-(matrix @ query), kind="stable")[:10]].tolist()
            assert [i for i, _ in store.search("files", query, 10)] == expected


def test_healthy_index_passes_and_repair_changes_nothing(index):
    with Store.open(index) as store:
        report = verify(store)
    assert report.ok and report.problems == [] and (report.images, report.captions) == (300, 20)
    before = os.stat(index / "images.faiss").st_mtime_ns
    result = cli("repair", "--index", index)
    assert result.exit_code == 0 and "The index is healthy." in result.stdout
    assert os.stat(index / "images.faiss").st_mtime_ns == before
    checked = json.loads(cli("repair", "--index", index, "--check", "--json").stdout)
    assert checked["ok"] and checked["problems"] == [] and checked["images"] == 300


def _garbage(path, index):
    path.write_bytes(os.urandom(5000))


def _truncated(path, index):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path, index):
    path.write_bytes(b"")


def _wrong_width(path, index):
    import faiss

    other = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM * 2))
    other.add_with_ids(np.zeros((3, DIM * 2), np.float32), np.arange(3, dtype=np.int64))
    faiss.write_index(other, str(path))


def _not_id_keyed(path, index):
    import faiss

    flat = faiss.IndexFlatIP(DIM)
    flat.add(_vectors(300))
    faiss.write_index(flat, str(path))


def _flipped_vector(path, index):
    """Bit rot inside the vector data: the file still loads, the ids still match."""
    with sqlite3.connect(index / "sightline.db") as conn:
        blob = conn.execute("SELECT embedding FROM files WHERE id = 17").fetchone()[0]
    data = bytearray(path.read_bytes())
    at = data.find(blob)
    assert at > 0
    data[at:at + 8] = bytes(8)
    path.write_bytes(bytes(data))


def _duplicate_ids(path, index):
    import faiss

    raw = faiss.read_index(str(path))
    raw.add_with_ids(_vectors(2, seed=5), np.array([3, 4], np.int64))
    faiss.write_index(raw, str(path))


@pytest.mark.parametrize("damage,where,severity,words", [
    (_garbage, "images.faiss", DAMAGED, "cannot be used"),
    (_truncated, "images.faiss", DAMAGED, "cannot be used"),
    (_empty, "images.faiss", DAMAGED, "cannot be used"),
    (_wrong_width, "images.faiss", DAMAGED, "32-d vectors"),
    (_not_id_keyed, "images.faiss", DAMAGED, "cannot be used"),
    (_flipped_vector, "images.faiss", DAMAGED, "1 vector(s) differ"),
    (_duplicate_ids, "images.faiss", DAMAGED, "2 duplicate id(s)"),
])
def test_damaged_faiss_file_is_found_and_rebuilt(index, damage, where, severity, words):
    damage(index / where, index)
    with Store.open(index) as store:
        report = verify(store)
    assert not report.ok
    assert any(w == where and words in m for w, m in problems(report, severity)), report.problems
    checked = cli("repair", "--index", index, "--check")
    assert checked.exit_code == 1 and where in checked.stdout and "Run `sightline repair`" in checked.stdout
    result = cli("repair", "--index", index, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["ok"] and out["problems"] == []
    assert out["repaired"] == ["rebuilt images.faiss from 300 stored embedding(s)"]
    search_matches_database(index)


def test_damaged_faiss_file_is_rebuilt_automatically_with_a_message(index, caplog):
    _garbage(index / "captions.faiss", index)
    _truncated(index / "images.faiss", index)
    with Store.open(index) as store:
        assert store.vectors("files").ntotal == 300 and store.vectors("captions").ntotal == 20
        store.save()
    assert "images.faiss is damaged" in caplog.text and "rebuilding it from the database" in caplog.text
    with Store.open(index) as store:
        assert verify(store).problems == []
    search_matches_database(index)


def test_stale_and_missing_faiss_files_are_not_damage(index):
    with Store.open(index) as store:  # committed, never saved: what a kill leaves behind
        store.add_files([FileRecord("/photos/late.jpg", 1, 1, "f" * 64, 1, 1, None, None, None, _vectors(1, 9)[0])])
        store.remove_files([1, 2])
    (index / "captions.faiss").unlink()
    with Store.open(index) as store:
        report = verify(store)
    assert report.ok
    assert problems(report, STALE) == [
        ("images.faiss", "images.faiss is behind the database (1 to add, 2 to remove); "
                         "caught up automatically on next use"),
        ("captions.faiss", "captions.faiss is missing; rebuilt automatically on next use")]
    assert cli("repair", "--index", index, "--check").exit_code == 0
    with Store.open(index) as store:
        repaired = repair(store)
    assert repaired.problems == [] and len(repaired.repaired) == 2


def test_damaged_stored_embeddings_are_dropped_and_reembedded(tmp_path, tiny_model_args):
    folder = tmp_path / "photos"
    write_photos(folder, 8)
    root = tmp_path / "idx"
    assert cli("index", folder, "--index", root, *tiny_model_args, "--workers", "0", "-q").exit_code == 0
    with sqlite3.connect(root / "sightline.db") as conn:
        (dim,) = conn.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
        dim = int(dim)
        conn.execute("UPDATE files SET embedding = ? WHERE id = 1", (b"\0" * 7,))  # wrong size
        conn.execute("UPDATE files SET embedding = ? WHERE id = 2", (np.full(dim, np.nan, "<f4").tobytes(),))
        conn.execute("UPDATE files SET embedding = ? WHERE id = 3", (np.full(dim, 2.0, "<f4").tobytes(),))  # norm
        conn.execute("INSERT INTO failures(path, size, mtime_ns, reason, failed_at) SELECT path, 1, 1, 'x', 0 "
                     "FROM files WHERE id = 4")
    with Store.open(root) as store:
        report = verify(store)
    assert ("sightline.db", "3 image(s) with a damaged stored embedding (wrong size, not finite or not unit length), "
            "e.g. id 1") in problems(report, DAMAGED)
    assert ("sightline.db", "1 indexed file(s) also listed as failed") in problems(report, DAMAGED)
    result = cli("repair", "--index", root)
    assert result.exit_code == 0, result.output
    assert "removed 3 image(s) with a damaged embedding" in result.stdout
    assert "forgot 1 stale failure record(s)" in result.stdout and "rebuilt images.faiss from 5" in result.stdout
    rerun = json.loads(cli("index", folder, "--index", root, "--workers", "0", "--json").stdout)
    assert (rerun["indexed"], rerun["unchanged"]) == (3, 5)
    with Store.open(root) as store:
        assert verify(store).problems == [] and store.counts()["images"] == 8


def _corrupt_middle_page(root):
    """Overwrite the middle page of the files table (found with dbstat, so that new
    tables or indexes elsewhere in the file do not move the damage somewhere else)."""
    checkpoint(root)
    db = root / "sightline.db"
    with sqlite3.connect(db) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'files' ORDER BY pageno")]
    with open(db, "r+b") as handle:
        handle.seek((pages[len(pages) // 2] - 1) * size)
        handle.write(np.random.default_rng(0).bytes(size))


def test_damaged_database_is_named_never_a_traceback(index):
    _corrupt_middle_page(index)
    result = cli("repair", "--index", index)
    assert result.exit_code == 7
    assert str(index / "sightline.db") in result.stderr and "integrity check" in result.stderr
    assert "re-index" in result.stderr and "Traceback" not in result.output
    with Store.open(index) as store:
        report = verify(store)
    assert [p.severity for p in report.problems] == [FATAL]
    # Commands that read the damaged pages say which file is damaged (exit 7), not a traceback.
    (index / "images.faiss").unlink()
    with Store.open(index) as store:
        from sightline.search.errors import StoreCorruptError

        with pytest.raises(StoreCorruptError, match="sightline.db is damaged"):
            store.vectors("files")


@pytest.mark.parametrize("where", ["header", "truncated"])
def test_database_damaged_at_open_is_named(index, where):
    checkpoint(index)
    db = index / "sightline.db"
    data = db.read_bytes()
    db.write_bytes(os.urandom(100) + data[100:] if where == "header" else data[: len(data) // 2])
    for command in (["repair"], ["repair", "--check"], ["status"]):
        result = cli(*command, "--index", index)
        assert result.exit_code == 7, (command, result.output)
        assert str(db) in result.stderr and "Traceback" not in result.output


def test_repair_waits_for_no_one_and_refuses_during_an_index_run(index):
    with Store.open(index) as store, store.writer():
        result = cli("repair", "--index", index)
        assert result.exit_code == 6 and "another process is writing" in result.stderr
        assert cli("repair", "--index", index, "--check").exit_code == 0  # checking needs no lock


def test_failure_records_are_kept_by_repair(index):
    with Store.open(index) as store:
        store.record_failures([FailureRecord("/photos/broken.jpg", 1, 2, "truncated")])
        repair(store)
    with Store.open(index) as store:
        assert [f.path for f in store.failures()] == ["/photos/broken.jpg"]
