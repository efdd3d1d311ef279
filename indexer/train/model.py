"""The model being trained: open_clip towers, projection heads and a temperature.

``heads`` mode trains only the heads (towers frozen), ``finetune`` also the
towers (all, or their last N blocks) at a lower rate, ``scratch`` builds the
towers from an architecture config with random weights.  Whatever the mode,
the result saves as a Sightline checkpoint that loads from the file alone.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from sightline.indexer.train.config import TrainConfig
from sightline.indexer.train.loss import LogitScale
from sightline.search import checkpoint
from sightline.search.errors import ModelNotAvailableError
from sightline.search.model_loaders import resolve_model_name, tokenizer_for_config
from sightline.search.models import ModelSpec, load_encoder, model_id_for, resolve_spec
from sightline.search.preprocess import Preprocessor

log = logging.getLogger(__name__)


@dataclass
class Towers:
    """A pair of towers and what is needed to save and feed them."""

    clip: nn.Module
    model_name: str
    model_cfg: dict
    preprocess_cfg: dict
    tokenizer: Callable
    preprocessor: Preprocessor
    model_id: str  # identifies the frozen features (heads mode caches them by it)
    heads: Optional[nn.Module] = None  # a Sightline checkpoint's dual encoder, when it had heads


def load_towers(model_name: Optional[str], pretrained: Optional[str], mode: str, seed: int = 0) -> Towers:
    """The starting towers for ``mode``; raises ModelNotAvailableError."""
    if mode == "scratch":
        if not model_name:
            raise ModelNotAvailableError("scratch training needs an architecture: --model NAME or a config JSON")
        return _scratch_towers(model_name, seed)
    spec = resolve_spec(ModelSpec(model_name, pretrained))
    if spec.pretrained and Path(spec.pretrained).expanduser().is_file() and \
            checkpoint.is_sightline_checkpoint(Path(spec.pretrained).expanduser()):
        return _checkpoint_towers(Path(spec.pretrained).expanduser().resolve())
    encoder = load_encoder(spec, "cpu", precision="fp32", lean=False)  # training needs open_clip's fp32 model
    name = resolve_model_name(encoder.name)  # the config name, whatever form it was given in
    return Towers(encoder.model, name, _open_clip_cfg(name, encoder.model), dict(encoder.model.visual.preprocess_cfg),
                  encoder.tokenizer, encoder.preprocessor, encoder.model_id)


def _scratch_towers(model_name: str, seed: int) -> Towers:
    import open_clip

    name = resolve_model_name(model_name)
    torch.manual_seed(seed)
    clip, _, transform = open_clip.create_model_and_transforms(name, pretrained=None)
    preprocess_cfg = dict(clip.visual.preprocess_cfg)
    return Towers(clip, name, _open_clip_cfg(name, clip), preprocess_cfg, open_clip.get_tokenizer(name),
                  Preprocessor.from_open_clip(preprocess_cfg, transform), f"scratch:{name}")


def _checkpoint_towers(path: Path) -> Towers:
    try:
        dual, model_cfg, payload = checkpoint.load_checkpoint(path)
    except Exception as exc:
        raise ModelNotAvailableError(f"cannot load Sightline checkpoint {path}: {exc}") from None
    preprocess_cfg = dict(payload["preprocess_cfg"])
    has_heads = bool(dual.head_specs)
    return Towers(dual.clip, payload.get("model_name", "sightline"), model_cfg, preprocess_cfg,
                  tokenizer_for_config(model_cfg), Preprocessor.from_open_clip(preprocess_cfg, None),
                  model_id_for(ModelSpec(None, str(path))), dual if has_heads else None)


def _open_clip_cfg(name: str, clip: nn.Module) -> dict:
    """The config that rebuilds ``clip`` with ``open_clip.CLIP(**cfg)``."""
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ModelNotAvailableError(f"open_clip has no config for {name!r}; cannot record its architecture")
    cfg = copy.deepcopy(cfg)
    # Pretrained tags such as 'openai' switch QuickGELU on at load time, not in the config.
    if any(type(m).__name__ == "QuickGELU" for m in clip.modules()):
        cfg["quick_gelu"] = True
    return cfg


class TrainableModel(nn.Module):
    """Towers + heads (a Sightline dual encoder) + temperature."""

    def __init__(self, towers: Towers, config: TrainConfig):
        super().__init__()
        self.towers = towers
        self.config = config
        dim = tower_dim(towers.clip)
        specs = {side: checkpoint.head_spec(config.head, dim, config.head_dim) for side in ("image", "text")}
        self.dual = checkpoint.make_dual_encoder(towers.clip, {k: v for k, v in specs.items() if v})
        self._init_heads(specs)
        initial = _initial_temperature(towers.clip, config)
        self.logit_scale = LogitScale(initial, config.max_logit_scale)
        self._set_trainable()

    # ------------------------------------------------------------- features
    def tower_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.dual.clip.encode_image(pixels)

    def tower_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.dual.clip.encode_text(tokens)

    def head_image(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.dual.image_head(features), dim=-1)

    def head_text(self, features: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.dual.text_head(features), dim=-1)

    # -------------------------------------------------------------- set-up
    def _init_heads(self, specs: dict) -> None:
        """Heads start as the identity where shapes allow, so training starts
        from the towers' own retrieval quality instead of a random projection;
        a checkpoint's heads of the same shape are continued instead."""
        old = self.towers.heads
        for side, spec in specs.items():
            head = getattr(self.dual, f"{side}_head")
            if spec is None:
                continue
            if old is not None and old.head_specs.get(side) == spec:
                head.load_state_dict(getattr(old, f"{side}_head").state_dict())
                continue
            with torch.no_grad():
                if spec["type"] == "linear" and spec["in"] == spec["out"]:
                    head.weight.copy_(torch.eye(spec["in"]))
                elif spec.get("residual"):
                    last = head.inner[-1]
                    last.weight.zero_()
                    last.bias.zero_()
        if old is not None and old.head_specs and old.head_specs != {k: v for k, v in specs.items() if v}:
            log.warning("the starting checkpoint's heads %s are replaced by new %s heads",
                        old.head_specs, self.config.head)

    def _set_trainable(self) -> None:
        clip = self.dual.clip
        mode = self.config.mode
        clip.requires_grad_(mode != "heads")
        if mode == "finetune" and self.config.unfreeze_blocks is not None:
            clip.requires_grad_(False)
            unfreeze_last_blocks(clip, self.config.unfreeze_blocks)
        # The towers' own logit_scale is unused: ours is self.logit_scale.
        if isinstance(getattr(clip, "logit_scale", None), nn.Parameter):
            clip.logit_scale.requires_grad_(False)

    def param_groups(self) -> list[dict]:
        """AdamW groups: no weight decay on gains, biases, embeddings and the
        temperature (as in CLIP); towers at their own rate when fine-tuning."""
        cfg = self.config
        groups: dict[tuple[bool, bool], list] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            tower = name.startswith("dual.clip.")
            decay = param.ndim >= 2 and "embedding" not in name and "logit_scale" not in name
            groups.setdefault((tower, decay), []).append(param)
        return [{"params": params, "lr": cfg.effective_tower_lr() if tower else cfg.lr,
                 "weight_decay": cfg.weight_decay if decay else 0.0}
                for (tower, decay), params in groups.items()]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.mode == "heads":
            self.dual.clip.eval()  # frozen towers keep inference behaviour (norm statistics, dropout)
        return self

    # ------------------------------------------------------------- saving
    def save(self, path: Path, extra: Optional[dict[str, Any]] = None) -> None:
        clip = self.dual.clip
        if isinstance(getattr(clip, "logit_scale", None), nn.Parameter):
            with torch.no_grad():  # so the saved model's own scale is the learnt one
                clip.logit_scale.copy_(self.logit_scale.log_scale.detach().clamp(0, self.logit_scale.max_log))
        checkpoint.save_checkpoint(path, model_name=self.towers.model_name, model_cfg=self.towers.model_cfg,
                                   preprocess_cfg=self.towers.preprocess_cfg, dual_encoder=self.dual,
                                   extra=extra)


def tower_dim(clip: nn.Module) -> int:
    """Width of the towers' joint embedding space."""
    with torch.no_grad():
        tokens = torch.zeros(1, _context_length(clip), dtype=torch.long)
        was_training = clip.training
        clip.eval()
        dim = int(clip.encode_text(tokens).shape[-1])
        clip.train(was_training)
    return dim


def _context_length(clip: nn.Module) -> int:
    return int(getattr(clip, "context_length", None) or getattr(getattr(clip, "text", None), "context_length", 77))


def _initial_temperature(clip: nn.Module, config: TrainConfig) -> float:
    """Scratch starts at ``init_temperature``; pretrained towers keep their learnt one."""
    scale = getattr(clip, "logit_scale", None)
    if config.mode != "scratch" and isinstance(scale, nn.Parameter) and scale.numel() == 1:
        return float(1.0 / scale.detach().exp().clamp(max=config.max_logit_scale))
    return config.init_temperature


def unfreeze_last_blocks(clip: nn.Module, n: int) -> None:
    """Train the last ``n`` transformer blocks of each tower and what follows them."""
    # open_clip's CLIP keeps its text tower on the model itself; CustomTextCLIP under .text.
    text_tower = clip.text if hasattr(clip, "text") else clip
    towers = [(getattr(clip, "visual", None), ("ln_post", "proj", "attn_pool", "head")),
              (text_tower, ("ln_final", "text_projection", "proj"))]
    unfrozen = 0
    for tower, tail in towers:
        blocks = getattr(getattr(tower, "transformer", None), "resblocks", None)
        if blocks is None:
            continue
        for block in list(blocks)[len(blocks) - n:] if n > 0 else []:
            block.requires_grad_(True)
            unfrozen += 1
        for attr in tail:
            part = getattr(tower, attr, None)
            if isinstance(part, (nn.Module, nn.Parameter)):
                part.requires_grad_(True)
    if unfrozen == 0 and n > 0:
        log.warning("these towers have no transformer blocks to unfreeze selectively; training all of them")
        clip.requires_grad_(True)
