"""A training run from what the command line gives: dataset, model, settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import torch

from sightline.indexer.datasets import CaptionDataset, load_annotations, load_named
from sightline.indexer.train.config import TrainConfig
from sightline.indexer.train.data import default_cache_dir, train_val_splits
from sightline.indexer.train.loop import EpochRecord, Trainer, TrainResult
from sightline.indexer.train.model import TrainableModel, load_towers
from sightline.indexer.train.state import load_state

log = logging.getLogger(__name__)


@dataclass
class DatasetRef:
    """A dataset by file (``annotations`` + ``images``) or by name under ``root``."""

    annotations: Optional[str] = None
    images: Optional[str] = None
    name: Optional[str] = None
    root: Optional[str] = None

    def load(self) -> CaptionDataset:
        if self.name:
            dataset = load_named(self.name, Path(self.root or "."))
        else:
            annotations = Path(self.annotations)
            dataset = load_annotations(annotations, Path(self.images) if self.images else annotations.parent)
        dataset.check_images()
        return dataset


@dataclass
class TrainJob:
    dataset: DatasetRef
    out: Path
    config: TrainConfig = field(default_factory=TrainConfig)
    model_name: Optional[str] = None
    pretrained: Optional[str] = None
    device: Optional[str] = None
    workers: Optional[int] = None
    cache_dir: Optional[Path] = None
    progress: bool = True

    def run_info(self) -> dict:
        return {"dataset": self.dataset.__dict__, "model": self.model_name, "pretrained": self.pretrained}


def run_training(job: TrainJob, resume: bool = False,
                 on_epoch_end: Optional[Callable[[EpochRecord], None]] = None) -> TrainResult:
    """Train as ``job`` says; with ``resume``, continue the run saved next to ``job.out``
    (its dataset, model and settings come from the saved state)."""
    if resume:
        job = _job_from_state(job)
    from sightline.search.encoder import default_device

    device = default_device(job.device)
    torch.manual_seed(job.config.seed)
    dataset = job.dataset.load()
    train, val = train_val_splits(dataset, job.config.val_max_images, job.config.seed)
    log.info("training on %d images (%d captions), validating on %d", len(train), len(train.captions), len(val))
    towers = load_towers(job.model_name, job.pretrained, job.config.mode, job.config.seed)
    model = TrainableModel(towers, job.config)
    trainer = Trainer(model, train, val, job.out, job.cache_dir or default_cache_dir(), device=device,
                      workers=job.workers, progress=job.progress, run_info=job.run_info(),
                      on_epoch_end=on_epoch_end)
    return trainer.run(resume=resume)


def _job_from_state(job: TrainJob) -> TrainJob:
    state = load_state(job.out)
    run = state.get("run", {})
    return replace(job, dataset=DatasetRef(**run.get("dataset", {})), config=TrainConfig.from_dict(state["config"]),
                   model_name=run.get("model"), pretrained=run.get("pretrained"))
