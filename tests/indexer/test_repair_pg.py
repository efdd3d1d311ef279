"""`sightline repair --db URL`: what can go wrong in a PostgreSQL index is found, mended,
and the next `index` run embeds again what repair had to drop."""

import json

from click.testing import CliRunner
from sqlalchemy import text

from sightline.cli import main
from sightline.search.store import Store
from sightline.search.store_records import FailureRecord
from tests.backends import new_database
from tests.helpers import write_photos


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_repair_mends_a_postgres_index(pg_server, tmp_path, tiny_model_args):
    url, cache = new_database(pg_server), tmp_path / "cache"
    photos = write_photos(tmp_path / "photos", 12)
    where = ["--db", url, "--index", cache]
    assert cli("index", tmp_path / "photos", *where, "--workers", "0", "-q", *tiny_model_args).exit_code == 0
    with Store.open_url(url, cache) as store:
        victim = store.file_states()[str(photos[3])].id
        with store.engine.begin() as conn:
            twos = "[" + ",".join(["2"] * store.dim) + "]"  # the right width, far from unit length
            conn.execute(text("UPDATE files SET embedding = CAST(:v AS vector) WHERE id = :id"),
                         {"v": twos, "id": victim})
            conn.execute(text("DROP INDEX ix_captions_embedding_hnsw"))
        store.record_failures([FailureRecord(str(photos[5]), 1, 2, "was broken once")])

    check = cli("repair", *where, "--check", "--json")
    assert check.exit_code == 1
    problems = {p["where"]: p["message"] for p in json.loads(check.stdout)["problems"]}
    assert "ix_captions_embedding_hnsw" in problems and "damaged stored embedding" in problems["files"]
    assert "also listed as failed" in problems["failures"]

    fixed = cli("repair", *where, "--json")
    assert fixed.exit_code == 0, fixed.output
    report = json.loads(fixed.stdout)
    assert report["ok"] and report["problems"] == [] and len(report["repaired"]) == 3
    assert cli("repair", *where, "--check").exit_code == 0
    again = cli("index", tmp_path / "photos", *where, "--workers", "0", "-q", "--json", *tiny_model_args)
    assert json.loads(again.stdout)["indexed"] == 1  # the dropped photo, embedded afresh
