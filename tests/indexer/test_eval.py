"""`sightline eval` and the evaluation library on small generated datasets."""

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sightline.cli import main
from sightline.indexer.datasets import load_annotations
from sightline.indexer.evaluate import PlotUnavailableError, embed_dataset, evaluate, plot_recall
from sightline.indexer.synthetic import generate
from sightline.search.metrics import image_text_retrieval
from tests.helpers import write_photos


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("shapes"), {"train": 4, "val": 4, "test": 10}, size=32, seed=1)


@pytest.fixture
def flickr_root(tmp_path):
    """A miniature Flickr30k as its archives unpack: Karpathy JSON + flickr30k-images/."""
    photos = write_photos(tmp_path / "flickr30k-images", 6)
    entries = [{"filename": p.name, "split": "test" if i < 4 else "train",
                "sentences": [{"raw": f"photo {i} caption {j}"} for j in range(5)]} for i, p in enumerate(photos)]
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps({"images": entries}))
    return tmp_path


def test_evaluate_matches_metrics_on_the_embeddings(shapes, tiny_encoder):
    test = load_annotations(shapes, shapes.parent / "images").split("test")
    result = evaluate(tiny_encoder, test, "test", workers=0)
    images, texts, owner = embed_dataset(tiny_encoder, test, workers=0)
    assert images.shape == (10, 32) and texts.shape == (50, 32)
    assert owner.tolist() == [i for i in range(10) for _ in range(5)]
    expected = image_text_retrieval(images, texts, owner).summary()
    assert result.summary == expected
    assert 0 <= result.summary["t2i"]["R@1"] <= 100 and result.summary["images"] == 10
    # Vectors come back in dataset order even though decoding finishes out of order.
    direct = tiny_encoder.encode_images([Image.open(i.image) for i in test])
    assert np.allclose(direct, images, atol=1e-5)


def test_plot_is_a_png(shapes, tiny_encoder, tmp_path):
    test = load_annotations(shapes, shapes.parent / "images").split("test")
    path = plot_recall([evaluate(tiny_encoder, test, "test", workers=0)], tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib(monkeypatch, shapes, tiny_encoder, tmp_path):
    test = load_annotations(shapes, shapes.parent / "images").split("test")
    result = evaluate(tiny_encoder, test, "test", workers=0)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotUnavailableError, match="pip install"):
        plot_recall([result], tmp_path / "plot.png")


def test_cli_eval_json_and_plot(shapes, tiny_model_args, tmp_path):
    plot = tmp_path / "recall.png"
    result = run_cli("eval", "--annotations", shapes, "--images", shapes.parent / "images", *tiny_model_args,
                     "--workers", "0", "--plot", plot, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for direction in ("t2i", "i2t"):
        assert set(out[direction]) == {"R@1", "R@5", "R@10"}
        assert out[direction]["R@1"] <= out[direction]["R@5"] <= out[direction]["R@10"] <= 100
    assert out["rsum"] == pytest.approx(sum(out["t2i"].values()) + sum(out["i2t"].values()), abs=0.05)
    assert out["split"] == "test" and out["images"] == 10 and out["captions"] == 50
    assert out["plot"] == str(plot) and plot.is_file()


def test_cli_eval_named_benchmark_table(flickr_root, tiny_model_args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("eval", "flickr30k", "--root", flickr_root, *tiny_model_args, "--workers", "0", "-q")
    assert result.exit_code == 0, result.output
    assert "text -> image" in result.stdout and "image -> text" in result.stdout and "rsum" in result.stdout
    assert "flickr30k [test]: 4 images, 20 captions" in result.stdout
    assert (tmp_path / "recall-flickr30k-test.png").is_file()


def test_cli_eval_says_what_is_missing(flickr_root, tiny_model_args, tmp_path):
    (flickr_root / "flickr30k-images" / "photo_0001.jpg").unlink()
    result = run_cli("eval", "flickr30k", "--root", flickr_root, *tiny_model_args, "--no-plot")
    assert result.exit_code == 10
    assert "1 of 4 images" in result.output and "photo_0001.jpg" in result.output
    result = run_cli("eval", "flickr30k", "--root", tmp_path / "elsewhere", *tiny_model_args)
    assert result.exit_code == 10 and "does not exist" in result.output
    result = run_cli("eval", "flickr30k", *tiny_model_args)
    assert result.exit_code == 10 and "--root" in result.output
    result = run_cli("eval", "flickr30k", "--root", flickr_root, "--split", "val", *tiny_model_args)
    assert result.exit_code == 10 and "no split 'val'" in result.output
