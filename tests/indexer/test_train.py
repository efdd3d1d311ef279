"""Training in each mode on a tiny generated set: loss goes down, checkpoints
round-trip and load anywhere a model is accepted, resume continues exactly."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sightline.indexer.synthetic import generate
from sightline.indexer.train import DatasetRef, TrainConfig, TrainJob, run_training
from sightline.indexer.train.data import Split, one_caption_each, train_val_splits
from sightline.indexer.train.loss import LogitScale, contrastive_loss
from sightline.indexer.train.schedule import warmup_cosine
from sightline.indexer.train.state import ResumeError, state_path
from sightline.search.checkpoint import is_sightline_checkpoint, load_checkpoint
from sightline.search.models import ModelSpec, load_encoder
from sightline.search.settings import Settings
from tests.helpers import TINY_CONFIG


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    return generate(root, {"train": 48, "val": 12, "test": 12}, size=32, seed=3)


def _job(tiny_shapes, tmp_path, mode, checkpoint=None, **config) -> TrainJob:
    settings = dict(mode=mode, epochs=3, batch_size=16, lr=2e-3, warmup_steps=2)
    settings.update(config)
    return TrainJob(DatasetRef(str(tiny_shapes), str(tiny_shapes.parent / "images")), tmp_path / f"{mode}.pt",
                    TrainConfig(**settings), model_name=str(TINY_CONFIG),
                    pretrained=None if mode == "scratch" else str(checkpoint), device="cpu", workers=0,
                    cache_dir=tmp_path / "cache", progress=False)


# ------------------------------------------------------------ pure pieces
def test_loss_is_symmetric_and_small_for_matching_pairs():
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(50.0)
    assert contrastive_loss(x, x, scale) < 0.05
    y = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    assert torch.isclose(contrastive_loss(x, y, scale), contrastive_loss(y, x, scale))
    assert contrastive_loss(x, y, scale) > 1.0


def test_logit_scale_is_clamped():
    scale = LogitScale(init_temperature=0.001, max_scale=100.0)
    assert float(scale().detach()) == pytest.approx(100.0)
    scale.clamp_()
    assert float(scale.log_scale.detach()) == pytest.approx(np.log(100.0))


def test_warmup_then_cosine():
    values = [warmup_cosine(s, 100, 10) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[-1] < 0.01
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert warmup_cosine(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)


def test_one_random_caption_per_image():
    offsets = np.array([0, 5, 6, 9])
    seen = set()
    for epoch in range(30):
        picks = one_caption_each(offsets, torch.Generator().manual_seed(epoch))
        assert 0 <= picks[0] < 5 and picks[1] == 5 and 6 <= picks[2] < 9
        seen.add(int(picks[0]))
    assert seen == {0, 1, 2, 3, 4}


def test_splits_without_val_hold_out_training_images(tmp_path):
    from sightline.indexer.datasets import load_annotations

    ann = tmp_path / "c.csv"
    ann.write_text("image,caption\n" + "".join(f"{i}.jpg,caption {i}\n" for i in range(40)))
    train, val = train_val_splits(load_annotations(ann, tmp_path), 1000, seed=0)
    assert len(train) == 38 and len(val) == 2
    assert not set(train.images) & set(val.images)
    assert isinstance(train, Split) and train.owner.tolist() == list(range(38))


# ------------------------------------------------------------ each mode
@pytest.mark.parametrize("mode", ["heads", "finetune", "scratch"])
def test_training_lowers_the_loss_and_saves_a_loadable_checkpoint(mode, tiny_shapes, tmp_path, tiny_checkpoint):
    head = {"heads": "mlp", "finetune": "linear", "scratch": "none"}[mode]
    job = _job(tiny_shapes, tmp_path, mode, tiny_checkpoint, head=head, epochs=4,
               unfreeze_blocks=1 if mode == "finetune" else None)
    result = run_training(job)
    losses = [r.loss for r in result.history]
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert losses[-1] < losses[0], losses
    assert result.best_epoch in (1, 2, 3, 4)
    assert set(result.best_val) >= {"t2i", "i2t", "rsum"}

    assert is_sightline_checkpoint(job.out)
    dual, _, payload = load_checkpoint(job.out)
    assert payload["extra"]["training"]["config"]["mode"] == mode
    assert payload["extra"]["training"]["epoch"] == result.best_epoch
    expected_heads = set() if head == "none" else {"image", "text"}
    assert set(dual.head_specs) == expected_heads
    # Loads from the file alone, as `--pretrained FILE` does in index, serve and eval.
    encoder = load_encoder(ModelSpec(None, str(job.out)), device="cpu")
    vectors = encoder.encode_texts(["two large red circles at the top on a white background"])
    assert vectors.shape == (1, 32) and np.isclose(np.linalg.norm(vectors), 1.0, atol=1e-5)


def test_heads_mode_trains_only_heads_and_caches_features(tiny_shapes, tmp_path, tiny_checkpoint):
    job = _job(tiny_shapes, tmp_path, "heads", tiny_checkpoint, epochs=1)
    run_training(job)
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 2  # train and val
    before, _, _ = load_checkpoint(job.out)
    original = torch.load(tiny_checkpoint, weights_only=True)
    tower = before.clip.state_dict()
    assert all(torch.equal(tower[k], v) for k, v in original.items() if k != "logit_scale")
    # The linear heads started as the identity and moved.
    weight = before.image_head.weight
    assert weight.shape == (32, 32) and not torch.equal(weight, torch.eye(32))


def test_finetune_last_blocks_only(tiny_shapes, tmp_path, tiny_checkpoint):
    job = _job(tiny_shapes, tmp_path, "finetune", tiny_checkpoint, epochs=1, unfreeze_blocks=1)
    run_training(job)
    trained, _, _ = load_checkpoint(job.out)
    original = torch.load(tiny_checkpoint, weights_only=True)
    state = trained.clip.state_dict()
    assert torch.equal(state["visual.transformer.resblocks.0.mlp.c_fc.weight"],
                       original["visual.transformer.resblocks.0.mlp.c_fc.weight"])
    assert not torch.equal(state["visual.transformer.resblocks.1.mlp.c_fc.weight"],
                           original["visual.transformer.resblocks.1.mlp.c_fc.weight"])
    assert not torch.equal(state["transformer.resblocks.1.attn.in_proj_weight"],
                           original["transformer.resblocks.1.attn.in_proj_weight"])


class Interrupted(Exception):
    pass


TINY_RESNET = {  # batch norm: its running statistics must survive a resume too
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.mark.parametrize("mode, arch", [("heads", None), ("scratch", None), ("scratch", "resnet")])
def test_resume_continues_where_it_stopped(mode, arch, tiny_shapes, tmp_path, tiny_checkpoint):
    def job(folder):
        made = _job(tiny_shapes, tmp_path / folder, mode, tiny_checkpoint)
        if arch:
            config = tmp_path / "tiny-resnet.json"
            config.write_text(json.dumps(TINY_RESNET))
            made.model_name = str(config)
        return made

    whole = job("whole")
    run_training(whole)

    split = job("split")

    def stop_after_first(record):
        if record.epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_training(split, on_epoch_end=stop_after_first)
    assert state_path(split.out).is_file()
    epochs_seen = []
    # Resumed runs take their settings from the saved state, not from the job.
    bare = TrainJob(DatasetRef(), split.out, cache_dir=split.cache_dir, workers=0, progress=False)
    resumed = run_training(bare, resume=True, on_epoch_end=lambda r: epochs_seen.append(r.epoch))
    assert epochs_seen == [2, 3]
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    a = torch.load(state_path(whole.out), weights_only=True)["model"]
    b = torch.load(state_path(split.out), weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_resume_without_state(tmp_path):
    with pytest.raises(ResumeError, match="nothing to resume"):
        run_training(TrainJob(DatasetRef(), tmp_path / "none.pt", progress=False), resume=True)


def test_trained_checkpoint_indexes_and_searches(tiny_shapes, tmp_path, tiny_checkpoint):
    from sightline.indexer.captions import index_captions
    from sightline.indexer.datasets import load_annotations
    from sightline.indexer.pipeline import IndexJob
    from sightline.search.engine import SearchEngine
    from sightline.search.store import Store

    job = _job(tiny_shapes, tmp_path, "heads", tiny_checkpoint, epochs=1)
    run_training(job)
    encoder = load_encoder(ModelSpec(None, str(job.out)), device="cpu")
    test = load_annotations(tiny_shapes, tiny_shapes.parent / "images").split("test")
    with Store.open(tmp_path / "index", create=True) as store:
        IndexJob(store, encoder, workers=0, progress=False).run(str(tiny_shapes.parent / "images" / "test"))
        with store.writer():
            assert index_captions(store, encoder, test.captions_by_image()) == 12 * 5
        assert store.counts()["images"] == 12
    engine = SearchEngine.open(Settings(tmp_path / "index", model=ModelSpec(None, str(job.out)), device="cpu"))
    try:
        hits = engine.search_text("three small blue stars on the left on a grey background", k=5)
        assert len(hits) == 5 and all(h.path.endswith(".png") for h in hits)
        query = engine.encoder.encode_texts(["a red circle"])[0]
        captions = engine.store.search("captions", query, 3)
        assert len(captions) == 3
    finally:
        engine.close()


def test_cli_train_and_eval_with_the_trained_checkpoint(tiny_shapes, tmp_path, tiny_checkpoint):
    from click.testing import CliRunner

    from sightline.cli import main

    out = tmp_path / "cli.pt"
    args = ["train", "--dataset", str(tiny_shapes), "--images", str(tiny_shapes.parent / "images"), "--out", str(out),
            "--mode", "heads", "--head", "mlp", "--model", str(TINY_CONFIG), "--pretrained", str(tiny_checkpoint),
            "--epochs", "2", "--batch-size", "16", "--workers", "0", "--cache-dir", str(tmp_path / "cache"),
            "--json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [h["epoch"] for h in summary["history"]] == [1, 2] and summary["out"] == str(out)
    # --pretrained FILE alone, no --model.
    result = CliRunner().invoke(main, ["eval", "shapes", "--root", str(tiny_shapes.parent), "--pretrained", str(out),
                                       "--workers", "0", "--no-plot", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"].startswith("sightline:cli.pt#")
    resumed = CliRunner().invoke(main, ["train", "--out", str(out), "--resume", "--workers", "0", "--cache-dir",
                                        str(tmp_path / "cache"), "--json"], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    assert [h["epoch"] for h in json.loads(resumed.stdout)["history"]] == [1, 2]  # already finished


def test_cli_train_errors(tmp_path):
    from click.testing import CliRunner

    from sightline.cli import main

    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 10 and "--dataset is required" in result.output
    result = CliRunner().invoke(main, ["train", "--dataset", str(tmp_path / "none.json"), "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 10 and "does not exist" in result.output
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "m.pt"), "--resume"])
    assert result.exit_code == 11 and "nothing to resume" in result.output
