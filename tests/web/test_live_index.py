"""A running server and a concurrent `sightline index`.

The real server (`sightline serve --refresh 0.5`) answers a continuous stream
of queries from a thread while separate `sightline index` processes add
photos, remove and change some, and run once more with nothing to do.  The
server must never fail a request, must show new photos within a bounded time
and drop removed ones without a restart, and must never answer with a half-
written state: every hit carries its metadata, an id always names the same
file, and an id from a search is only ever unknown afterwards when its file
was removed or changed by the indexer.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tests.helpers import photo, write_photos
from tests.web.server_process import REPO, server_process

REFRESH_S = 0.5
#: New photos must be searchable this long after the indexing process exits
#: (the refresh interval plus one catch-up, with room for a busy 2-core box).
PICKUP_DEADLINE_S = 15.0
TEXTS = ["a red square", "sunset", "a dog on the beach", "green field", "photo", "night city"]


class Traffic(threading.Thread):
    """Queries in a loop: a text search covering the whole index, then the
    detail, thumbnail and "more like this" of one hit, round robin."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base, timeout=60)
        self.halt = threading.Event()
        self.requests = 0
        self.failures: list[str] = []
        self.names_by_id: dict[int, str] = {}
        self.gone: list[tuple[int, str]] = []  # (id, name) answered 404 after a search returned it

    def run(self) -> None:
        texts, turn = itertools.cycle(TEXTS), itertools.count()
        while not self.halt.is_set():
            try:
                hits = self._search(next(texts))
                if hits:
                    self._follow(hits[next(turn) % len(hits)])
            except Exception as exc:  # a refused or dropped connection is a failure too
                self.failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.02)
        self.client.close()

    def _get(self, url: str, **params) -> httpx.Response:
        response = self.client.get(url, params=params)
        self.requests += 1
        if response.status_code not in (200, 404):
            self.failures.append(f"{url} -> {response.status_code}: {response.text[:200]}")
        return response

    def _search(self, text: str) -> list[dict]:
        response = self._get("/api/search/text", q=text, k=500)
        if response.status_code != 200:
            self.failures.append(f"search {text!r} -> {response.status_code}")
            return []
        hits = response.json()["results"]
        for hit in hits:
            if not (hit["name"] and hit["path"].endswith(hit["name"]) and hit["width"] > 0):
                self.failures.append(f"a hit without its metadata: {hit}")
            known = self.names_by_id.setdefault(hit["id"], hit["name"])
            if known != hit["name"]:
                self.failures.append(f"id {hit['id']} named {known} and then {hit['name']}")
        return hits

    def _follow(self, hit: dict) -> None:
        for url in (f"/api/images/{hit['id']}", hit["thumbnail_url"], f"/api/images/{hit['id']}/similar"):
            if self._get(url).status_code == 404:
                self.gone.append((hit["id"], hit["name"]))


def run_index(photo_dir: Path, index_dir: Path) -> float:
    """`sightline index` as a separate process (the index's own model); returns when it ended."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "sightline", "index", str(photo_dir), "--index", str(index_dir),
               "--workers", "0", "--quiet"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return time.monotonic()


def served(client: httpx.Client) -> dict[str, int]:
    """name -> id of everything the server finds."""
    response = client.get("/api/search/text", params={"q": "photo", "k": 500})
    assert response.status_code == 200, response.text
    return {hit["name"]: hit["id"] for hit in response.json()["results"]}


def wait_for(client: httpx.Client, expected: set[str], since: float, changed: tuple[str, int] = ("", 0)) -> float:
    """Seconds from ``since`` until the server finds exactly ``expected``
    (and ``changed``'s name under an id other than its old one)."""
    name, old_id = changed
    while True:
        now = served(client)
        waited = time.monotonic() - since
        if set(now) == expected and now.get(name) != old_id:
            return waited
        if waited > PICKUP_DEADLINE_S:
            pytest.fail(f"after {waited:.1f} s the server still shows {sorted(now.items())}, "
                        f"expected {sorted(expected)} ({name} not as id {old_id})")
        time.sleep(0.1)


def test_server_follows_a_concurrent_index_run(tmp_path, tiny_model_args):
    from sightline.cli import main

    photo_dir, index_dir = tmp_path / "photos", tmp_path / "index"
    first = write_photos(photo_dir, 6)
    built = CliRunner().invoke(main, ["index", str(photo_dir), "--index", str(index_dir), "--workers", "0",
                                      "--quiet", *tiny_model_args], catch_exceptions=False)
    assert built.exit_code == 0, built.output
    names = {p.name for p in first}
    removed, changed = first[:3], first[5]

    with server_process(index_dir, tmp_path / "server.log", "--refresh", str(REFRESH_S)) as server, \
            httpx.Client(base_url=server.base, timeout=60) as client:
        before = served(client)
        assert set(before) == names
        traffic = Traffic(server.base)
        traffic.start()
        try:
            # Run 1 embeds: four new photos, and new content under an indexed name (a new id).
            names |= {p.name for p in write_photos(photo_dir, 4, start=100)}
            photo(999, (96, 72)).save(changed)
            pickup_add = wait_for(client, names, run_index(photo_dir, index_dir), (changed.name, before[changed.name]))
            # Run 2 only removes.
            for path in removed:
                path.unlink()
            names -= {p.name for p in removed}
            pickup_remove = wait_for(client, names, run_index(photo_dir, index_dir))
            # Run 3 has nothing to do: nothing may change.
            settled = run_index(photo_dir, index_dir)
            while time.monotonic() - settled < 3 * REFRESH_S:
                assert set(served(client)) == names
                time.sleep(0.1)
        finally:
            traffic.halt.set()
            traffic.join(timeout=60)
        log = server.log()

    assert traffic.failures == [], traffic.failures[:10]
    assert traffic.requests >= 50, traffic.requests
    allowed = {p.name for p in removed} | {changed.name}
    assert {name for _, name in traffic.gone} <= allowed, traffic.gone
    assert "Traceback" not in log and "refreshing the index failed" not in log, log[-3000:]
    print(f"\n{traffic.requests} requests during indexing, 0 failed; new photos served after {pickup_add:.2f} s, "
          f"removed ones gone after {pickup_remove:.2f} s")
