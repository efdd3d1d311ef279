"""How the app runs: work off the event loop, an empty index, picking up new
images, the factory doing nothing at import or construction time."""

from __future__ import annotations

import threading
import time

from sightline.search.engine import SearchEngine
from sightline.search.store import ModelInfo, Store
from tests.helpers import FakeEncoder, write_photos
from tests.web.support import fake_factory, fake_record, make_settings, serve


class SlowEncoder(FakeEncoder):
    """Model inference that takes a while and holds its thread (as a real model would)."""

    delay = 0.6

    def encode_texts(self, texts, batch_size=64):
        if texts[0].startswith("slow"):
            time.sleep(self.delay)
        return super().encode_texts(texts, batch_size)


def test_slow_queries_do_not_block_other_requests(fake_index, tmp_path):
    index_dir, _ = fake_index
    settings = make_settings(index_dir, tmp_path, engine_factory=fake_factory(index_dir, SlowEncoder()), threads=4)
    with serve(settings) as c:
        results = {}

        def query(word):
            results[word] = c.get("/api/search/text", params={"q": f"slow {word}"}).status_code

        started = time.perf_counter()
        workers = [threading.Thread(target=query, args=(w,)) for w in ("one", "two", "three")]
        for w in workers:
            w.start()
        time.sleep(0.1)
        health_started = time.perf_counter()
        assert c.get("/api/health").status_code == 200
        health_took = time.perf_counter() - health_started
        for w in workers:
            w.join()
        total = time.perf_counter() - started
    assert results == {"one": 200, "two": 200, "three": 200}
    assert health_took < SlowEncoder.delay / 2  # answered while the searches were running
    # The forward passes queued for the model (one at a time, each on every core).
    assert total >= 2.5 * SlowEncoder.delay


def test_empty_index_answers_without_a_model(tmp_path):
    index_dir = tmp_path / "empty"
    Store.open(index_dir, create=True).close()
    # The default engine (SearchEngine.open): no model is loaded for an empty index.
    with serve(make_settings(index_dir, tmp_path)) as c:
        status = c.get("/api/status").json()
        assert status["images"] == 0 and status["model"] is None and status["last_indexed"] is None
        assert c.get("/api/health").json()["status"] == "ok"
        answer = c.get("/api/search/text", params={"q": "anything"}).json()
        assert answer["results"] == [] and answer["index_images"] == 0 and answer["next_offset"] is None
        files = {"file": ("q.png", (write_photos(tmp_path / "q", 1, ext="png")[0]).read_bytes(), "image/png")}
        upload = c.post("/api/search/image", params={"captions": 3}, files=files).json()
        assert upload["results"] == [] and upload["captions"] == [] and "empty" in upload["captions_note"]
        assert c.get("/api/images/1").status_code == 404
        assert c.get("/").status_code == 200


def test_images_indexed_while_serving_are_found(tmp_path):
    """An index that starts empty and is filled by another process while the server runs."""
    index_dir = tmp_path / "index"
    Store.open(index_dir, create=True).close()
    encoder = FakeEncoder()
    with serve(make_settings(index_dir, tmp_path, engine_factory=fake_factory(index_dir, encoder))) as c:
        assert c.get("/api/search/text", params={"q": "red"}).json()["results"] == []
        photos = write_photos(tmp_path / "photos", 4)
        with Store.open(index_dir) as writer:  # the indexer, elsewhere
            writer.bind_model(ModelInfo(encoder.model_id, encoder.dim, encoder.name, encoder.pretrained))
            writer.add_files([fake_record(p, encoder) for p in photos[:2]])
            writer.save()
        assert len(c.get("/api/search/text", params={"q": "red"}).json()["results"]) == 2
        with Store.open(index_dir) as writer:
            writer.add_files([fake_record(p, encoder) for p in photos[2:]])
            writer.save()
        c.app.state.service.refresh()  # what the periodic refresh does
        assert len(c.get("/api/search/text", params={"q": "red"}).json()["results"]) == 4


def test_default_engine_picks_the_model_the_index_records_later(tmp_path, tiny_checkpoint, tiny_encoder):
    """Started on an empty index, the server must not settle on a default model."""
    from tests.helpers import TINY_CONFIG
    from sightline.web.app import open_engine

    index_dir = tmp_path / "index"
    Store.open(index_dir, create=True).close()
    engine = open_engine(make_settings(index_dir, tmp_path))
    try:
        with Store.open(index_dir) as writer:
            writer.bind_model(ModelInfo(tiny_encoder.model_id, tiny_encoder.dim, str(TINY_CONFIG),
                                        str(tiny_checkpoint)))
        assert engine.encoder.model_id == tiny_encoder.model_id
    finally:
        engine.close()


def test_periodic_refresh_runs(fake_index, tmp_path):
    index_dir, _ = fake_index
    calls = []
    settings = make_settings(index_dir, tmp_path, engine_factory=fake_factory(index_dir), refresh_seconds=0.05)
    with serve(settings) as c:
        service = c.app.state.service
        original = service.refresh
        service.refresh = lambda: (calls.append(1), original())
        deadline = time.time() + 5
        while not calls and time.time() < deadline:
            time.sleep(0.05)
    assert calls


def test_create_app_does_no_work(tmp_path):
    """Building the app opens nothing: the index is opened at startup (lifespan)."""
    from sightline.web.app import create_app

    opened = []
    settings = make_settings(tmp_path / "does-not-exist", tmp_path, engine_factory=lambda: opened.append(1))
    app = create_app(settings)
    assert opened == [] and not hasattr(app.state, "service")
    assert not (tmp_path / "does-not-exist").exists()


def test_missing_index_fails_startup(tmp_path):
    import pytest

    from sightline.search.errors import IndexNotFoundError

    with pytest.raises(IndexNotFoundError):
        with serve(make_settings(tmp_path / "nowhere", tmp_path)):
            pass


def test_engine_kept_on_app_state(fake_index, tmp_path):
    index_dir, _ = fake_index
    with serve(make_settings(index_dir, tmp_path, engine_factory=fake_factory(index_dir))) as c:
        engine = c.app.state.engine
        assert isinstance(engine, SearchEngine)
        c.get("/api/search/text", params={"q": "blue"})
        assert c.app.state.service.engine is engine  # one engine for all requests


def test_engine_runs_one_forward_pass_at_a_time(tmp_path):
    running, most = [0], [0]
    guard = threading.Lock()

    class Slow(FakeEncoder):
        def encode_texts(self, texts, batch_size=64):
            with guard:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.02)
            with guard:
                running[0] -= 1
            return super().encode_texts(texts, batch_size)

    store = Store.open(tmp_path / "index", create=True)
    engine = SearchEngine(store, Slow())
    threads = [threading.Thread(target=engine.embed_text, args=(f"query {i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
    assert len(engine._text_cache) == 8


def test_torch_threads_never_oversubscribe(tmp_path, monkeypatch):
    """Each forward pass gets every core, and passes run one at a time."""
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert make_settings(tmp_path, tmp_path, threads=4, torch_threads=None).intra_op_threads == 16
    assert make_settings(tmp_path, tmp_path, threads=32, torch_threads=None).intra_op_threads == 16
    assert make_settings(tmp_path, tmp_path, torch_threads=None).engine_settings.threads == 16
    assert make_settings(tmp_path, tmp_path, torch_threads=3).intra_op_threads == 3
    assert make_settings(tmp_path, tmp_path, torch_threads=0).intra_op_threads is None
