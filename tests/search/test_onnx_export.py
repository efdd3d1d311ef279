"""The ONNX export answers as the torch encoder does, and falls back to it where it cannot.

Real models throughout: the tiny open_clip architecture with random weights,
exported by the real exporter and run by onnxruntime, against the same
weights in torch (fp32, the reference).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sightline.indexer.pipeline import IndexJob
from sightline.search.encoder import ClipEncoder
from sightline.search.engine import SearchEngine
from sightline.search.errors import ModelMismatchError
from sightline.search.models import ModelSpec, load_encoder
from sightline.search.onnx_export import export_after_indexing, export_model, needs_export
from sightline.search.onnx_files import FOLDER, MANIFEST, TEXT_GRAPH, export_dir, find_export
from sightline.search.query_encoder import QueryEncoder, open_query_encoder
from sightline.search.settings import Settings
from sightline.search.store import Store
from tests.helpers import TINY_CONFIG, photo, text_corpus, write_photos

QUERIES = text_corpus(120, seed=3)
MIN_COSINE = 0.9999  # the bar, per query


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


def build_index(root: Path, encoder, photos: int = 60) -> Path:
    folder = write_photos(root / "photos", photos, size=(120, 90))[0].parent
    index = root / "index"
    with Store.open(index, create=True) as store:
        IndexJob(store, encoder, batch_size=32, workers=0, progress=False).run(str(folder))
    return index


def checkpoint_for(config_changes: dict, folder: Path) -> tuple[str, str]:
    """A tiny model of another architecture: (config JSON path, random weights file)."""
    import open_clip
    import torch

    from sightline.search.model_loaders import resolve_model_name

    config = json.loads(TINY_CONFIG.read_text())
    for key, value in config_changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    path = folder / f"tiny-{abs(hash(json.dumps(config_changes, sort_keys=True)))}.json"
    path.write_text(json.dumps(config))
    torch.manual_seed(0)
    weights = folder / "weights.pt"
    torch.save(open_clip.create_model(resolve_model_name(str(path)), pretrained=None).state_dict(), weights)
    return str(path), str(weights)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_encoder) -> Path:
    index = build_index(tmp_path_factory.mktemp("onnx"), tiny_encoder)
    export_model(tiny_encoder, index)
    return index


def engines(index: Path, **settings):
    fast = SearchEngine.open(Settings(index, **settings))
    slow = SearchEngine.open(Settings(index, onnx=False, precision="fp32"))
    return fast, slow


# ------------------------------------------------------------------ the export
def test_the_export_holds_both_towers_checked_against_torch(exported, tiny_encoder):
    manifest = find_export(exported, tiny_encoder.model_id)
    assert manifest.text is not None and manifest.image is not None and manifest.unsupported == {}
    assert manifest.info["text_min_cosine"] >= 0.99999 and manifest.info["image_min_cosine"] >= 0.99999
    assert manifest.dim == tiny_encoder.dim
    folder = export_dir(exported, tiny_encoder.model_id)
    assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST, *manifest.files])  # no temporary files
    assert not needs_export(exported, tiny_encoder.model_id)


@pytest.mark.parametrize("single_query", [False, True])
def test_text_embeddings_equal_torchs(exported, single_query):
    fast, slow = engines(exported, single_query=single_query)
    assert isinstance(fast.encoder, QueryEncoder) and isinstance(slow.encoder, ClipEncoder)
    ours = np.stack([fast.encoder.encode_texts([q])[0] for q in QUERIES])
    reference = np.stack([slow.encoder.encode_texts([q])[0] for q in QUERIES])
    assert ours.dtype == np.float32 and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert cosines(ours, reference).min() >= MIN_COSINE
    # A batch runs over its longest text's tokens: the same vectors as one at a time.
    assert cosines(fast.encoder.encode_texts(QUERIES), ours).min() > 0.99999


def test_same_top_10_as_torch_for_text_and_image_queries(exported):
    fast, slow = engines(exported)
    for query in [q for q in QUERIES if q.strip() and len(q) <= 1000][:60]:
        assert [h.id for h in fast.search_text(query, k=10)] == [h.id for h in slow.search_text(query, k=10)], query
    for seed in range(12):
        image = photo(1000 + seed, (140, 100))
        assert [h.id for h in fast.search_image(image, k=10)] == [h.id for h in slow.search_image(image, k=10)]


def test_image_embeddings_equal_torchs(exported):
    fast, slow = engines(exported)
    images = [photo(500 + i, (60 + 17 * i, 90)) for i in range(8)] + [photo(9, (64, 64), mode="L")]
    assert cosines(fast.encoder.encode_images(images), slow.encoder.encode_images(images)).min() >= MIN_COSINE


def test_queries_never_import_torch(exported):
    code = (
        "import sys; from sightline.search.engine import SearchEngine; from sightline.search.settings import "
        f"Settings; from tests.helpers import photo; e = SearchEngine.open(Settings({str(exported)!r})); "
        "e.search_text('a red square', k=3); e.search_image(photo(1), k=3); "
        "print(type(e.encoder).__name__, 'torch' in sys.modules, 'open_clip' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out == ["QueryEncoder", "False", "False"]


def test_another_model_is_refused_before_anything_loads(exported, tmp_path):
    _, other = checkpoint_for({"embed_dim": 16}, tmp_path)
    settings = Settings(exported, model=ModelSpec(str(TINY_CONFIG), other))
    with Store.open(exported) as store, pytest.raises(ModelMismatchError, match="holds vectors from model"):
        open_query_encoder(settings, store, torch_factory=lambda: pytest.fail("torch was loaded"))


# ------------------------------------------------------------------- fallbacks
def test_an_unsupported_architecture_falls_back_with_one_line(tmp_path, caplog):
    """Layer scale: neither tower is one the export covers; searches use torch, saying why once."""
    encoder = load_encoder(ModelSpec(*checkpoint_for({"vision_cfg": {"ls_init_value": 0.1},
                                                     "text_cfg": {"ls_init_value": 0.1}}, tmp_path)),
                           device="cpu", precision="fp32")
    index = build_index(tmp_path, encoder, photos=8)
    manifest = export_model(encoder, index)
    assert manifest.text is None and manifest.image is None
    assert "layer scale" in manifest.unsupported["text"] and "layer scale" in manifest.unsupported["image"]
    assert not needs_export(index, encoder.model_id)  # recorded: not retried by every index run
    with caplog.at_level(logging.INFO, logger="sightline.search.query_encoder"):
        engine = SearchEngine.open(Settings(index, precision="fp32"))
        hits = engine.search_text("a dog", k=3)
    assert isinstance(engine.encoder, ClipEncoder) and len(hits) == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "sightline.search.query_encoder"]
    assert len(lines) == 1 and "layer scale" in lines[0]


def test_a_tower_it_does_not_cover_uses_torch_for_that_tower_only(tmp_path, caplog):
    """A ResNet image tower (as the demo's): text on onnxruntime, images on torch, same vectors."""
    encoder = load_encoder(ModelSpec(*checkpoint_for({"vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1],
                                                                     "width": 16}}, tmp_path)),
                           device="cpu", precision="fp32")
    index = build_index(tmp_path, encoder, photos=8)
    manifest = export_model(encoder, index)
    assert manifest.text is not None and manifest.image is None and "not a ViT" in manifest.unsupported["image"]
    engine = SearchEngine.open(Settings(index, precision="fp32"))
    assert isinstance(engine.encoder, QueryEncoder)
    images = [photo(i, (80, 60)) for i in range(3)]
    with caplog.at_level(logging.INFO, logger="sightline.search.query_encoder"):
        ours = engine.encoder.encode_images(images)
    assert isinstance(engine.encoder.image_encoder(), ClipEncoder)
    assert cosines(ours, encoder.encode_images(images)).min() >= MIN_COSINE
    assert cosines(engine.encoder.encode_texts(QUERIES[:20]), encoder.encode_texts(QUERIES[:20])).min() >= MIN_COSINE
    assert [r.getMessage() for r in caplog.records if "image queries use torch" in r.getMessage()]


def test_an_index_without_export_says_how_to_make_one(tmp_path, tiny_encoder, caplog):
    index = build_index(tmp_path, tiny_encoder, photos=6)
    with caplog.at_level(logging.WARNING, logger="sightline.search.query_encoder"):
        engine = SearchEngine.open(Settings(index, precision="fp32"))
        assert len(engine.search_text("a cat", k=2)) == 2
    assert isinstance(engine.encoder, ClipEncoder)
    assert len(caplog.records) == 1 and "sightline export" in caplog.records[0].getMessage()


def test_a_damaged_export_is_not_used(tmp_path, tiny_encoder, caplog):
    index = build_index(tmp_path, tiny_encoder, photos=6)
    export_model(tiny_encoder, index)
    weights = export_dir(index, tiny_encoder.model_id) / (TEXT_GRAPH + ".data")
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING, logger="sightline.search.query_encoder"):
        engine = SearchEngine.open(Settings(index, precision="fp32"))
        assert len(engine.search_text("a cat", k=2)) == 2
    assert isinstance(engine.encoder, ClipEncoder)
    assert "bytes, the manifest says" in caplog.records[0].getMessage()
    assert needs_export(index, tiny_encoder.model_id)
    assert export_model(tiny_encoder, index).text is not None  # made again, whole
    assert isinstance(SearchEngine.open(Settings(index)).encoder, QueryEncoder)


def test_a_failed_export_never_fails_the_indexing_run(tmp_path, tiny_encoder, caplog):
    index = build_index(tmp_path, tiny_encoder, photos=4)
    (index / FOLDER).write_text("a file where the export folder should be")
    with caplog.at_level(logging.WARNING):
        assert export_after_indexing(index, tiny_encoder) is None
    assert "searches use torch" in caplog.text


def test_the_onnx_setting_forces_torch(exported):
    engine = SearchEngine.open(dataclasses.replace(Settings(exported, precision="fp32"), onnx=False))
    assert isinstance(engine.encoder, ClipEncoder)
