"""Standard open_clip CLIP models for inference, without importing open_clip.

Importing open_clip pulls in torchvision, which pulls in torch._dynamo: about
two seconds before any work, on every ``sightline search`` and every server
start.  Building the model the usual way then spends another second on a
random initialisation that the weights immediately overwrite.

For the architecture most checkpoints use (a ViT image tower with a class
token and a causal text transformer pooled at the end-of-text token, as in
ViT-B-32, ViT-B-16, ViT-L-14 and their ``-quickgelu`` variants) this module
builds the same modules under the same names, skipping their random
initialisation, and assigns the checkpoint's tensors straight from a
memory-mapped file.  A strict ``load_state_dict`` proves the architecture
matches; anything this module does not recognise raises :class:`Unsupported`
and the caller uses open_clip itself.  The tokenizer is open_clip's own code, loaded from its
file.  Embeddings equal open_clip's (tested).
"""

from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch
from torch import nn

# Config keys this module implements, with the value open_clip defaults them to
# (None: any value is understood).  Other keys, or other values, mean Unsupported.
_TOP = {"embed_dim": None, "vision_cfg": None, "text_cfg": None, "quick_gelu": None, "preprocess_cfg": None}
_VISION = {"image_size": None, "layers": None, "width": None, "head_width": None, "patch_size": None,
           "mlp_ratio": None, "patch_dropout": None, "ls_init_value": "null", "pool_type": "tok",
           "attentional_pool": False, "no_ln_pre": False, "final_ln_after_pool": False, "output_tokens": False,
           "pos_embed_type": "learnable", "timm_model_name": "null"}
_TEXT = {"context_length": None, "vocab_size": None, "width": None, "heads": None, "layers": None,
         "mlp_ratio": None, "ls_init_value": "null", "embed_cls": False, "no_causal_mask": False,
         "final_ln_after_pool": False, "pool_type": "argmax", "proj_bias": False, "proj_type": "linear",
         "output_tokens": False, "hf_model_name": "null", "hf_tokenizer_name": "null", "tokenizer_kwargs": None,
         "pad_id": 0}


class Unsupported(Exception):
    """This model is not one lean_clip builds; use open_clip."""


def builtin_config(name: str) -> Optional[dict]:
    """open_clip's config for a built-in model name, read from its file (no import)."""
    package = _open_clip_dir()
    path = package / "model_configs" / f"{name}.json" if package else None
    if path is None or "/" in name or not path.is_file():
        return None
    return json.loads(path.read_text())


def preprocess_cfg(config: dict) -> dict:
    """The preprocessing open_clip derives for ``config`` when the weights are a plain file
    (:meth:`search.preprocess.Preprocessor.from_open_clip` fills in open_clip's defaults)."""
    return {"size": config["vision_cfg"]["image_size"], **(config.get("preprocess_cfg") or {})}


def load(config: dict, weights: Path) -> "LeanCLIP":
    """Build the model for ``config`` with the weights in ``weights``; raises Unsupported."""
    check(config)
    try:
        state = torch.load(weights, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # old pickle formats cannot be mapped; open_clip reads them
        raise Unsupported(f"cannot map {weights}: {exc}") from None
    state = _unwrap(state)
    model = LeanCLIP(config)
    if "logit_scale" in state:
        state["logit_scale"] = state["logit_scale"].reshape(())
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise Unsupported(f"weights do not match the lean architecture: {str(exc)[:300]}") from None
    return model.eval()


def check(config: dict) -> None:
    for section, allowed in ((config, _TOP), (config.get("vision_cfg") or {}, _VISION),
                             (config.get("text_cfg") or {}, _TEXT)):
        for key, value in section.items():
            if key not in allowed:
                raise Unsupported(f"config key {key!r}")
            default = allowed[key]
            if default is not None and value != (None if default == "null" else default):
                raise Unsupported(f"config {key}={value!r}")
    vision = config.get("vision_cfg") or {}
    if not all(isinstance(vision.get(k), int) for k in ("image_size", "layers", "width", "patch_size")):
        raise Unsupported("vision tower is not a square ViT")


def tokenizer(config: dict):
    """open_clip's SimpleTokenizer for ``config``, loaded without importing open_clip."""
    text = config.get("text_cfg", {})
    module = _tokenizer_module()
    return module.SimpleTokenizer(context_length=text.get("context_length", 77),
                                  **(text.get("tokenizer_kwargs") or {}))


def causal_mask(length: int) -> torch.Tensor:
    return torch.full((length, length), float("-inf")).triu_(1)


# Every parameter is overwritten by the checkpoint, so the layers skip their
# random initialisation (about a second for ViT-B-32).  The ``meta`` device
# would skip it too, but its first use imports ~1.5 s of torch internals.
class _Linear(nn.Linear):
    def reset_parameters(self) -> None:
        pass


class _Conv2d(nn.Conv2d):
    def reset_parameters(self) -> None:
        pass


class _Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        pass


class _MultiheadAttention(nn.MultiheadAttention):
    def _reset_parameters(self) -> None:
        pass


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """open_clip's ResidualAttentionBlock without layer scale."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, act: type):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = _MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(
            [("c_fc", _Linear(width, hidden)), ("gelu", act()), ("c_proj", _Linear(hidden, width))]))

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.ln_1(x)
        mask = attn_mask.to(x.dtype) if attn_mask is not None else None
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, act: type):
        super().__init__()
        self.resblocks = nn.ModuleList(Block(width, heads, mlp_ratio, act) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class Vision(nn.Module):
    """open_clip's VisionTransformer: class token pooling, ln_pre, ln_post, projection."""

    def __init__(self, cfg: dict, embed_dim: int, act: type):
        super().__init__()
        width, patch = cfg["width"], cfg["patch_size"]
        grid = cfg["image_size"] // patch
        self.conv1 = _Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, cfg["layers"], width // cfg.get("head_width", 64),
                                       cfg.get("mlp_ratio", 4.0), act)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj  # LayerNorm is per token: only the pooled one is needed


class LeanCLIP(nn.Module):
    """The text and image towers of open_clip.CLIP, state_dict compatible."""

    truncates_text = True  # encode_text runs only over the real tokens (see search.text_fast)

    def __init__(self, config: dict):
        super().__init__()
        text = config["text_cfg"]
        act = QuickGELU if config.get("quick_gelu") else nn.GELU
        self.context_length = text.get("context_length", 77)
        self.visual = Vision(config["vision_cfg"], config["embed_dim"], act)
        self.token_embedding = _Embedding(text.get("vocab_size", 49408), text["width"])
        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, text["width"]))
        self.transformer = Transformer(text["width"], text["layers"], text["heads"], text.get("mlp_ratio", 4.0), act)
        self.ln_final = nn.LayerNorm(text["width"])
        self.text_projection = nn.Parameter(torch.empty(text["width"], config["embed_dim"]))
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.register_buffer("attn_mask", causal_mask(self.context_length), persistent=False)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        # Causal attention and end-of-text pooling: positions after the last
        # EOT cannot change the result, so they are not computed.
        length = int(tokens.argmax(dim=-1).max()) + 1
        tokens = tokens[:, :length]
        dtype = self.text_projection.dtype
        x = self.token_embedding(tokens).to(dtype) + self.positional_embedding[:length].to(dtype)
        x = self.transformer(x, self.attn_mask[:length, :length])
        x = self.ln_final(x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)])
        return x @ self.text_projection


def _unwrap(state) -> dict:
    # Mirrors open_clip.factory.load_state_dict for the layouts a mapped file can hold.
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise Unsupported("not a state_dict")
    if next(iter(state)).startswith("module"):
        state = {k[7:]: v for k, v in state.items()}
    return dict(state)


def _open_clip_dir() -> Optional[Path]:
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it
    return Path(spec.origin).parent if spec and spec.origin else None


@lru_cache(maxsize=1)
def _tokenizer_module():
    import sys

    if "open_clip.tokenizer" in sys.modules:
        return sys.modules["open_clip.tokenizer"]
    package = _open_clip_dir()
    if package is None:
        raise Unsupported("open_clip is not installed")
    # tokenizer.py has no relative imports and finds its vocabulary next to its own __file__.
    spec = importlib.util.spec_from_file_location("sightline._open_clip_tokenizer", package / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
