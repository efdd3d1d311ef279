"""The training loop: epochs of contrastive steps, validation, best checkpoint, resume."""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from sightline.indexer.train.data import Split, cached_pixels, epoch_generator, one_caption_each, pixel_batch, tokenize
from sightline.indexer.train.features import tower_features
from sightline.indexer.train.loss import contrastive_loss
from sightline.indexer.train.model import TrainableModel
from sightline.indexer.train.schedule import set_lr, warmup_cosine
from sightline.indexer.train.state import ResumeError, load_state, save_state, trainable_state
from sightline.search.metrics import image_text_retrieval

log = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    epoch: int  # 1-based
    loss: float
    val: dict
    seconds: float
    best: bool = False


@dataclass
class TrainResult:
    out: Path
    best_epoch: int
    best_val: dict
    history: list[EpochRecord] = field(default_factory=list)
    train_seconds: float = 0.0  # the epochs themselves, summed over resumed runs
    prepare_seconds: float = 0.0  # decoding / feature caching in this run


class Trainer:
    """Train ``model`` on ``train``, validate on ``val`` each epoch, save the best to ``out``."""

    def __init__(self, model: TrainableModel, train: Split, val: Split, out: Path, cache_dir: Path, *,
                 device: str = "cpu", workers: Optional[int] = None, progress: bool = True,
                 run_info: Optional[dict] = None, on_epoch_end: Optional[Callable[[EpochRecord], None]] = None):
        self.model = model.to(device)
        self.config = model.config
        self.train_split, self.val_split = train, val
        self.out = Path(out)
        self.cache_dir = Path(cache_dir)
        self.device = device
        self.workers = workers
        self.progress = progress
        self.run_info = run_info or {}
        self.on_epoch_end = on_epoch_end
        self._last_rsum: Optional[float] = None  # shown in the progress bar

    # ------------------------------------------------------------------ run
    def run(self, resume: bool = False) -> TrainResult:
        cfg = self.config
        started = time.perf_counter()
        self._prepare()
        prepare_seconds = time.perf_counter() - started
        optimizer = _adamw(self.model.param_groups())
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]
        batch = min(cfg.batch_size, len(self.train_split))
        steps_per_epoch = len(self.train_split) // batch
        total_steps = steps_per_epoch * cfg.epochs
        warmup = cfg.warmup_for(total_steps)
        done = {"epoch": 0, "step": 0, "best_rsum": -math.inf, "best_epoch": 0, "best_val": {}, "history": [],
                "train_seconds": 0.0}
        if resume:
            done.update(self._restore(optimizer))
        history = [EpochRecord(**h) for h in done["history"]]
        step = done["step"]
        bar = _bar(total_steps, step, self.progress)
        try:
            for epoch in range(done["epoch"], cfg.epochs):
                epoch_started = time.perf_counter()
                loss = self._epoch(epoch, batch, steps_per_epoch, optimizer, step, total_steps, warmup, bar)
                step += steps_per_epoch
                val = self.validate()
                record = EpochRecord(epoch + 1, loss, val, time.perf_counter() - epoch_started)
                done["train_seconds"] += record.seconds
                if val["rsum"] > done["best_rsum"]:
                    record.best = True
                    done.update(best_rsum=val["rsum"], best_epoch=epoch + 1, best_val=val)
                    self.model.save(self.out, extra=self._extra(epoch + 1, val))
                history.append(record)
                self._last_rsum = val["rsum"]
                log.info("epoch %d/%d: loss %.4f, validation rsum %.2f%s", epoch + 1, cfg.epochs, loss, val["rsum"],
                         " (best so far)" if record.best else "")
                save_state(self.out, config=cfg.to_dict(), run=self.run_info, towers_id=self.model.towers.model_id,
                           epoch=epoch + 1, step=step, best_rsum=done["best_rsum"], best_epoch=done["best_epoch"],
                           best_val=done["best_val"], history=[r.__dict__ for r in history],
                           train_seconds=done["train_seconds"], model=trainable_state(self.model),
                           optimizer=optimizer.state_dict())
                if self.on_epoch_end:
                    self.on_epoch_end(record)
        finally:
            bar.close()
        return TrainResult(self.out, done["best_epoch"], done["best_val"], history, done["train_seconds"],
                           prepare_seconds)

    def _restore(self, optimizer) -> dict:
        state = load_state(self.out)
        if state["towers_id"] != self.model.towers.model_id:
            raise ResumeError(f"the saved run started from {state['towers_id']!r}, not {self.model.towers.model_id!r}")
        missing = set(trainable_state(self.model)) - set(state["model"])
        if missing:
            raise ResumeError(f"the saved state lacks weights the run trains (e.g. {sorted(missing)[0]}); "
                              f"it was made with other settings")
        self.model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        log.info("resuming after epoch %d of %d", state["epoch"], self.config.epochs)
        return {k: state[k] for k in ("epoch", "step", "best_rsum", "best_epoch", "best_val", "history",
                                      "train_seconds")}

    def _extra(self, epoch: int, val: dict) -> dict:
        return {"training": {**self.run_info, "config": self.config.to_dict(), "epoch": epoch, "val": val},
                "logit_scale": float(self.model.logit_scale().detach())}

    # ------------------------------------------------------------- inputs
    def _prepare(self) -> None:
        """Cache what the epochs read: tower features (heads) or pixels and tokens."""
        towers = self.model.towers
        if self.config.mode == "heads":
            self.train_features = tower_features(self.model, self.train_split, self.cache_dir, self.device,
                                                 workers=self.workers, progress=self.progress)
            self.val_features = tower_features(self.model, self.val_split, self.cache_dir, self.device,
                                               workers=self.workers, progress=self.progress)
            return
        self.train_pixels = cached_pixels(self.train_split, towers.preprocessor, self.cache_dir, self.workers,
                                          self.progress)
        self.val_pixels = cached_pixels(self.val_split, towers.preprocessor, self.cache_dir, self.workers,
                                        self.progress)
        self.train_tokens = tokenize(towers.tokenizer, self.train_split.captions)
        self.val_tokens = tokenize(towers.tokenizer, self.val_split.captions)

    def _image_embeddings(self, indices: np.ndarray, training: bool) -> torch.Tensor:
        if self.config.mode == "heads":
            features = (self.train_features if training else self.val_features)[0][indices]
        else:
            pixels = self.train_pixels if training else self.val_pixels
            features = self.model.tower_image(pixel_batch(pixels, indices, self.model.towers.preprocessor)
                                              .to(self.device))
        return self.model.head_image(features.to(self.device))

    def _text_embeddings(self, captions: np.ndarray, training: bool) -> torch.Tensor:
        if self.config.mode == "heads":
            features = (self.train_features if training else self.val_features)[1][captions]
        else:
            tokens = (self.train_tokens if training else self.val_tokens)[captions]
            features = self.model.tower_text(tokens.to(self.device))
        return self.model.head_text(features.to(self.device))

    # --------------------------------------------------------------- epoch
    def _epoch(self, epoch: int, batch: int, steps: int, optimizer, step: int, total_steps: int, warmup: int,
               bar) -> float:
        cfg = self.config
        self.model.train()
        generator = epoch_generator(cfg.seed, epoch)
        order = torch.randperm(len(self.train_split), generator=generator).numpy()
        captions = one_caption_each(self.train_split.offsets, generator)
        params = [p for p in self.model.parameters() if p.requires_grad]
        losses = []
        for i in range(steps):
            indices = order[i * batch:(i + 1) * batch]
            set_lr(optimizer, warmup_cosine(step + i, total_steps, warmup, cfg.min_lr_ratio))
            images = self._image_embeddings(indices, training=True)
            texts = self._text_embeddings(captions[indices], training=True)
            loss = contrastive_loss(images, texts, self.model.logit_scale())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            self.model.logit_scale.clamp_()
            losses.append(float(loss.detach()))
            bar.update(1)
            if i % 10 == 0 or i == steps - 1:
                bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{np.mean(losses[-20:]):.3f}",
                                scale=f"{float(self.model.logit_scale().detach()):.1f}",
                                val_rsum="-" if self._last_rsum is None else f"{self._last_rsum:.1f}", refresh=False)
        return float(np.mean(losses))

    # ---------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict:
        """Recall both ways on the validation split (summary: R@1/5/10 in %, rsum)."""
        self.model.eval()
        n = len(self.val_split)
        images = torch.cat([self._image_embeddings(np.arange(s, min(n, s + 256)), training=False).cpu()
                            for s in range(0, n, 256)])
        m = len(self.val_split.captions)
        texts = torch.cat([self._text_embeddings(np.arange(s, min(m, s + 512)), training=False).cpu()
                           for s in range(0, m, 512)])
        self.model.train()
        return image_text_retrieval(images.numpy(), texts.numpy(), self.val_split.owner).summary()


def _adamw(groups: list[dict]) -> torch.optim.AdamW:
    """AdamW, fused where torch has it: ten times faster steps on a CPU, where
    the update of the text tower's 49k-token embedding table is a large share."""
    try:
        return torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6)


def _bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="training", unit="step", file=sys.stderr,
                disable=not enabled, dynamic_ncols=True)
