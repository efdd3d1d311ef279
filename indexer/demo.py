"""``sightline demo``: the whole system, offline, in a few minutes on a CPU.

Generates the compositional shapes dataset, trains a small dual encoder
from scratch on it, measures recall on its test split, and indexes the test
images with their captions so that the UI (served by the CLI) searches them.
Nothing is downloaded: the architecture is defined here and the tokenizer's
vocabulary ships with open_clip.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from sightline.indexer import synthetic
from sightline.indexer.captions import index_captions
from sightline.indexer.datasets import load_annotations
from sightline.indexer.evaluate import EvalResult, PlotUnavailableError, evaluate, plot_recall
from sightline.indexer.train import DatasetRef, TrainConfig, TrainJob, TrainResult, run_training
from sightline.indexer.train.state import load_state, state_path
from sightline.search.metrics import format_table

log = logging.getLogger(__name__)

#: A small open_clip architecture for 64 px pictures and short captions.  The
#: image tower is a narrow CLIP ResNet: from scratch, convolutions learn shapes
#: in a few epochs where a ViT of the same cost needs many more (measured:
#: test R@1 13 % vs 3.5 % after one epoch).  24 tokens fit every caption.
DEMO_ARCH = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3, "mlp_ratio": 2},
}
ARCH_NAME = "sightline-demo"


@dataclass
class DemoSettings:
    out_dir: Path
    train_images: int = 10_000
    val_images: int = 500
    test_images: int = 1_000
    image_size: int = 64
    epochs: int = 6
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    workers: Optional[int] = None
    progress: bool = True
    retrain: bool = False
    device: Optional[str] = "cpu"


@dataclass
class DemoResult:
    out_dir: Path
    checkpoint: Path
    index_dir: Path
    evaluation: EvalResult
    training: Optional[TrainResult]
    timings: dict = field(default_factory=dict)
    plot: Optional[Path] = None

    def as_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "checkpoint": str(self.checkpoint), "index": str(self.index_dir),
                "test": self.evaluation.as_dict(), "plot": str(self.plot) if self.plot else None,
                "best_epoch": self.training.best_epoch if self.training else None,
                "seconds": {k: round(v, 1) for k, v in self.timings.items()}}

    def report(self) -> str:
        s = self.evaluation.summary
        lines = [format_table(s, f"Demo test split: {s['images']} images, {s['captions']} captions "
                                 f"(chance R@1: {100 / s['images']:.2f} %)")]
        t = self.timings
        lines.append(f"Training: {t.get('train', 0):.0f} s ({t.get('train_prepare', 0):.0f} s decoding); "
                     f"dataset {t.get('generate', 0):.0f} s, evaluation {t.get('evaluate', 0):.0f} s, "
                     f"indexing {t.get('index', 0):.0f} s.")
        lines.append(f"Model: {self.checkpoint}")
        lines.append(f"Index: {self.index_dir}" + (f"   Plot: {self.plot}" if self.plot else ""))
        return "\n".join(lines)


def default_demo_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("sightline", appauthor=False)) / "demo"


def run_demo(settings: DemoSettings, log: Optional[Callable[[str], None]] = None) -> DemoResult:
    say = log or (lambda message: None)
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    say(f"[1/4] Generating the shapes dataset in {out / 'data'} ...")
    started = time.perf_counter()
    annotations = synthetic.generate(out / "data", {"train": settings.train_images, "val": settings.val_images,
                                                    "test": settings.test_images},
                                     size=settings.image_size, seed=settings.seed, progress=settings.progress)
    timings["generate"] = time.perf_counter() - started

    say("[2/4] Training a dual encoder from scratch (the bar shows loss and validation rsum) ...")
    checkpoint, training = _train(settings, out, annotations)
    if training is not None:
        timings["train"] = training.train_seconds
        timings["train_prepare"] = training.prepare_seconds

    say("[3/4] Measuring recall on the test split ...")
    from sightline.search.models import ModelSpec, load_encoder

    started = time.perf_counter()
    encoder = load_encoder(ModelSpec(None, str(checkpoint)), settings.device)
    test = load_annotations(annotations, annotations.parent / synthetic.IMAGES_DIR, name="shapes").split("test")
    evaluation = evaluate(encoder, test, "test", workers=settings.workers, progress=settings.progress)
    timings["evaluate"] = time.perf_counter() - started
    plot = _plot(evaluation, out / "recall.png")

    say("[4/4] Indexing the test images with their captions ...")
    started = time.perf_counter()
    index_dir = out / "index"
    _index(index_dir, encoder, out / "data" / synthetic.IMAGES_DIR / "test", test.captions_by_image(), settings)
    timings["index"] = time.perf_counter() - started
    result = DemoResult(out, checkpoint, index_dir, evaluation, training, timings, plot)
    (out / "demo-result.json").write_text(json.dumps(result.as_dict(), indent=2))
    return result


def _train(settings: DemoSettings, out: Path, annotations: Path) -> tuple[Path, Optional[TrainResult]]:
    arch = out / f"{ARCH_NAME}.json"
    arch.write_text(json.dumps(DEMO_ARCH, indent=2))
    checkpoint = out / "model.pt"
    config = TrainConfig(mode="scratch", epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                         head="none", seed=settings.seed)
    job = TrainJob(DatasetRef(str(annotations), str(annotations.parent / synthetic.IMAGES_DIR)), checkpoint,
                   config, model_name=str(arch), device=settings.device, workers=settings.workers,
                   cache_dir=out / "cache", progress=settings.progress)
    if not settings.retrain and _already_trained(checkpoint, job):
        log.info("reusing the model trained earlier at %s", checkpoint)
        return checkpoint, None
    return checkpoint, run_training(job)


def _already_trained(checkpoint: Path, job: TrainJob) -> bool:
    """A finished run with the same settings on the same data: nothing to redo."""
    if not checkpoint.is_file() or not state_path(checkpoint).is_file():
        return False
    try:
        state = load_state(checkpoint)
    except Exception:
        return False
    return (state.get("config") == job.config.to_dict() and state.get("run") == job.run_info()
            and state.get("epoch") == job.config.epochs)


def _plot(evaluation: EvalResult, path: Path) -> Optional[Path]:
    try:
        return plot_recall([evaluation], path)
    except PlotUnavailableError as exc:
        log.warning("%s", exc)
        return None


def _index(index_dir: Path, encoder, folder: Path, captions: dict, settings: DemoSettings) -> None:
    from sightline.indexer.pipeline import IndexJob
    from sightline.search.store import Store

    if (index_dir / "sightline.db").exists():
        with Store.open(index_dir) as store:
            info = store.model_info()
        if info is not None and info.model_id != encoder.model_id:
            # The demo owns this folder: a retrained model means a fresh index.
            shutil.rmtree(index_dir)
    with Store.open(index_dir, create=True) as store:
        IndexJob(store, encoder, batch_size=64, workers=settings.workers, progress=settings.progress).run(str(folder))
        with store.writer():
            index_captions(store, encoder, captions)
    from sightline.search.onnx_export import export_after_indexing

    export_after_indexing(index_dir, encoder)  # so that the served demo answers without torch
