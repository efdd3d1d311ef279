"""The demo pipeline end to end at a small size, and the generator behind it."""

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from sightline.indexer import synthetic
from sightline.cli import main
from sightline.indexer.datasets import load_annotations


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# -------------------------------------------------------------- generator
def test_captions_name_every_attribute():
    rng = random.Random(0)
    for _ in range(200):
        scene = synthetic.random_scene(rng)
        captions = synthetic.captions_for(scene, rng, 5)
        assert len(captions) == 5 and len(set(captions)) == 5
        for caption in captions:
            words = caption.lower()
            plural = scene.count > 1
            assert any(w in words for w in synthetic.SHAPES[scene.shape][1 if plural else 0])
            assert any(w in words for w in synthetic.COLOURS[scene.colour][1])
            assert any(w in words for w in synthetic.SIZES[scene.size])
            assert any(w in words for w in synthetic.POSITIONS[scene.position])
            assert any(w in words for w in synthetic.BACKGROUNDS[scene.background])


def test_rendering_follows_the_scene():
    rng = random.Random(0)
    base = synthetic.Scene("circle", "red", "large", "left", "white", 1)
    image = synthetic.render(base, rng, 64)
    assert image.size == (64, 64) and image.mode == "RGB"
    pixels = np.asarray(image).astype(int)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 100) & (pixels[..., 2] < 100)
    assert red[:, :21].sum() > 50 and red[:, 43:].sum() == 0
    three = synthetic.render(synthetic.Scene("square", "blue", "small", "top", "black", 3), rng, 64)
    blues = [x for x in range(64) if any(three.getpixel((x, y))[2] > 150 for y in range(21))]
    assert blues and sum(1 for a, b in zip(blues, blues[1:]) if b != a + 1) == 2  # three separate runs


def test_generate_is_deterministic_and_complete(tmp_path):
    splits = {"train": 6, "val": 2, "test": 3}
    a = synthetic.generate(tmp_path / "a", splits, size=32, seed=5)
    b = synthetic.generate(tmp_path / "b", splits, size=32, seed=5)
    assert json.loads(a.read_text())["images"] == json.loads(b.read_text())["images"]
    assert (tmp_path / "a/images/test/test_00000.png").read_bytes() == \
        (tmp_path / "b/images/test/test_00000.png").read_bytes()
    ds = load_annotations(a, a.parent / "images")
    assert ds.splits() == splits and all(len(i.captions) == 5 for i in ds)
    ds.check_images()
    stamp = a.stat().st_mtime_ns
    synthetic.generate(tmp_path / "a", splits, size=32, seed=5)  # already there: kept
    assert a.stat().st_mtime_ns == stamp
    # The test split does not depend on the training split's size.
    c = synthetic.generate(tmp_path / "c", {"train": 2, "val": 2, "test": 3}, size=32, seed=5)
    test_of = lambda p: [e for e in json.loads(p.read_text())["images"] if e["split"] == "test"]  # noqa: E731
    assert test_of(a) == [dict(e, imgid=e["imgid"] + 4) for e in test_of(c)]


# -------------------------------------------------------------- pipeline
def test_demo_end_to_end_small(tmp_path, monkeypatch):
    served = {}

    def fake_uvicorn_run(app, host, port, **kwargs):
        served.update(app=app, host=host, port=port)

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", fake_uvicorn_run)
    out = tmp_path / "demo"
    args = ["demo", "--out", out, "--train-images", 96, "--val-images", 16, "--test-images", 24, "--epochs", 2,
            "--workers", 0, "-q", "--port", 8765]
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    test = report["test"]
    assert test["images"] == 24 and test["captions"] == 120
    assert set(test["t2i"]) == {"R@1", "R@5", "R@10"} and "rsum" in test
    assert report["best_epoch"] in (1, 2)
    assert (out / "model.pt").is_file() and (out / "recall.png").is_file() and (out / "demo-result.json").is_file()
    assert served["port"] == 8765 and served["host"] == "127.0.0.1"  # the UI is served on the demo index

    from sightline.search.store import Store

    with Store.open(out / "index") as store:
        assert store.counts()["images"] == 24 and store.counts()["captions"] == 120

    # A second run reuses the dataset, the model and the index.
    again = run_cli(*args, "--no-serve")
    assert again.exit_code == 0, again.output
    assert "text -> image" in again.stdout
    assert "Training:" in again.stdout
    with Store.open(out / "index") as store:
        assert store.counts()["images"] == 24 and store.counts()["captions"] == 120
