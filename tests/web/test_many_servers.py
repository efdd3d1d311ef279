"""Several servers over one PostgreSQL index while an indexer writes: each answers,
they answer alike, and each shows new photos within its refresh interval."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from tests.backends import new_database
from tests.helpers import write_photos
from tests.web.server_process import REPO, server_process

QUERIES = ["a red square", "sunset", "a dog on the beach", "green field"]
DEADLINE_S = 20.0


def _results(base: str, q: str) -> list[tuple[str, float]]:
    response = httpx.get(f"{base}/api/search/text", params={"q": q, "k": 50}, timeout=60)
    response.raise_for_status()
    return [(r["name"], r["score"]) for r in response.json()["results"]]


def _index(folder, url, cache, tiny_model_args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sightline", "index", str(folder), "--db", url, "--index",
                             str(cache), "--workers", "0", "--batch-size", "4", "-q", *tiny_model_args],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_two_servers_over_one_database_answer_alike_while_an_indexer_writes(pg_server, tmp_path, tiny_model_args):
    url = new_database(pg_server)
    photos = tmp_path / "photos"
    write_photos(photos, 12)
    first = _index(photos, url, tmp_path / "indexer", tiny_model_args)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    servers = [server_process(tmp_path / f"cache{i}", tmp_path / f"server{i}.log", "--db", url, "--refresh", "0.5")
               for i in range(2)]
    with servers[0] as a, servers[1] as b:
        for q in QUERIES:
            assert _results(a.base, q) == _results(b.base, q) and len(_results(a.base, q)) == 12
        write_photos(photos, 20, start=200)
        indexer = _index(photos, url, tmp_path / "indexer", tiny_model_args)
        answered = 0
        while indexer.poll() is None:  # both keep answering while the batches commit
            for server in (a, b):
                assert len(_results(server.base, QUERIES[answered % 4])) >= 12
                answered += 1
        assert indexer.returncode == 0, indexer.stderr.read()
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and not all(len(_results(s.base, "photo")) == 32 for s in (a, b)):
            time.sleep(0.25)
        for q in QUERIES:
            ra, rb = _results(a.base, q), _results(b.base, q)
            assert len(ra) == 32 and [n for n, _ in ra] == [n for n, _ in rb]
            assert all(abs(x - y) < 1e-6 for (_, x), (_, y) in zip(ra, rb))
        assert answered > 0
