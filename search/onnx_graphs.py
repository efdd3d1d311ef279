"""The two CLIP towers rewritten as plain tensor operations, for ONNX export.

``torch.onnx.export`` traces a module into a graph; ``nn.MultiheadAttention``
bakes the traced batch and sequence sizes into its reshapes, so an exported
text tower would only accept queries of the length it was traced with.  These
modules compute the same thing from the same parameters (they hold references
to the model's own tensors; nothing is copied) with shapes taken from the
input, so one graph serves every batch size and every query length.

What they cover is the standard CLIP layout that ``search.lean_clip`` builds
and open_clip's ``CLIP`` uses for its ViT models: pre-norm residual blocks
(LayerNorm, multi-head attention with a packed in-projection, LayerNorm, a
GELU or QuickGELU MLP), no layer scale; a causal text transformer pooled at
the end-of-text token; a ViT image tower pooled at its class token; optional
Sightline projection heads on top.  :func:`text_graph` and :func:`image_graph`
raise :class:`Unsupported` for anything else, and the export checks every
graph against the model's own ``encode_text``/``encode_image`` before keeping it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Unsupported(Exception):
    """The model has a part these graphs do not reproduce; the torch encoder is used for it."""


def split_model(model) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(the CLIP model, its image head, its text head) of an open_clip model or a Sightline dual encoder."""
    if hasattr(model, "text_head") and hasattr(model, "clip"):
        return model.clip, model.image_head, model.text_head
    return model, nn.Identity(), nn.Identity()


class Blocks(nn.Module):
    """A stack of CLIP residual attention blocks, with shapes read from the input."""

    def __init__(self, transformer: nn.Module, where: str):
        super().__init__()
        blocks = list(getattr(transformer, "resblocks", []))
        if not blocks:
            raise Unsupported(f"{where}: no residual blocks")
        for block in blocks:
            _check_block(block, where)
        self.blocks = nn.ModuleList(blocks)
        attn = blocks[0].attn
        self.heads = attn.num_heads
        self.head_dim = attn.embed_dim // attn.num_heads

    def forward(self, x: torch.Tensor, mask: "torch.Tensor | None" = None) -> torch.Tensor:
        for block in self.blocks:
            x = x + self._attention(block, block.ln_1(x), mask)
            x = x + block.mlp(block.ln_2(x))
        return x

    def _attention(self, block: nn.Module, x: torch.Tensor, mask: "torch.Tensor | None") -> torch.Tensor:
        attn = block.attn
        qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
        # (B, L, 3*W) -> three (B, heads, L, head_dim); B and L stay symbolic in the graph.
        qkv = qkv.unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q * (1.0 / math.sqrt(self.head_dim)), k.transpose(-1, -2))
        if mask is not None:
            scores = scores + mask
        out = torch.matmul(scores.softmax(dim=-1), v)  # (B, heads, L, head_dim)
        out = out.transpose(1, 2).flatten(2)
        return attn.out_proj(out)


def _check_block(block: nn.Module, where: str) -> None:
    for name in ("ln_1", "attn", "ln_2", "mlp"):
        if not hasattr(block, name):
            raise Unsupported(f"{where}: a block without {name}")
    for name in ("ls_1", "ls_2"):
        if not isinstance(getattr(block, name, nn.Identity()), nn.Identity):
            raise Unsupported(f"{where}: layer scale")
    if hasattr(block, "ln_1_kv") or hasattr(block, "ln_attn"):
        raise Unsupported(f"{where}: a block with extra norms")
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim or attn.in_proj_bias is None:
        raise Unsupported(f"{where}: attention is not a packed nn.MultiheadAttention")
    if attn.bias_k is not None or attn.add_zero_attn:
        raise Unsupported(f"{where}: attention with extra key/value biases")
    layers = dict(block.mlp.named_children()) if isinstance(block.mlp, nn.Sequential) else {}
    act = layers.get("gelu")
    if set(layers) != {"c_fc", "gelu", "c_proj"}:
        raise Unsupported(f"{where}: MLP layout {sorted(layers)}")
    if not (type(act).__name__ == "QuickGELU" or (type(act) is nn.GELU and act.approximate == "none")):
        raise Unsupported(f"{where}: activation {type(act).__name__}")


class TextGraph(nn.Module):
    """Token embeddings (B, L, width) and end-of-text positions (B,) -> text features (B, dim).

    The token lookup happens outside the graph (a memory-mapped table: a
    query touches a dozen of its rows instead of loading all 49,408).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        clip, _, head = split_model(model)
        for name in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"):
            if getattr(clip, name, None) is None:
                raise Unsupported(f"text tower without {name}")
        if getattr(clip, "attn_mask", None) is None:
            raise Unsupported("text tower without a causal mask")
        if getattr(clip, "text_pool_type", "argmax") != "argmax" or getattr(clip, "cls_emb", None) is not None:
            raise Unsupported("text tower not pooled at the end-of-text token")
        if getattr(clip, "text_final_ln_after_pool", False):
            raise Unsupported("text tower normalises after pooling")
        self.blocks = Blocks(clip.transformer, "text tower")
        self.positional_embedding = clip.positional_embedding
        self.register_buffer("mask", clip.attn_mask.float(), persistent=False)
        self.ln_final = clip.ln_final
        self.projection = clip.text_projection
        self.head = head
        self.token_embedding = clip.token_embedding  # exported separately, not part of the graph

    @property
    def width(self) -> int:
        return int(self.positional_embedding.shape[1])

    @property
    def context_length(self) -> int:
        return int(self.positional_embedding.shape[0])

    def forward(self, embedded: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        length = embedded.shape[1]
        x = embedded + self.positional_embedding[:length]
        x = self.blocks(x, self.mask[:length, :length])
        # The end-of-text position of each row (GatherElements in the graph).
        x = x.gather(1, eot.reshape(-1, 1, 1).expand(-1, 1, x.shape[2])).squeeze(1)
        x = self.ln_final(x)
        x = self.projection(x) if isinstance(self.projection, nn.Module) else x @ self.projection
        return self.head(x)


class ImageGraph(nn.Module):
    """Normalised pixels (B, 3, S, S) -> image features (B, dim) for a ViT image tower."""

    def __init__(self, model: nn.Module):
        super().__init__()
        clip, head, _ = split_model(model)
        visual = getattr(clip, "visual", None)
        for name in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj"):
            if getattr(visual, name, None) is None:
                raise Unsupported(f"image tower without {name} (not a ViT)")
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise Unsupported("image tower not pooled at its class token")
        if getattr(visual, "output_tokens", False) or getattr(visual, "final_ln_after_pool", False):
            raise Unsupported("image tower with token outputs or a norm after pooling")
        if visual.conv1.bias is not None:
            raise Unsupported("image tower with a biased patch embedding")
        self.visual = visual
        self.blocks = Blocks(visual.transformer, "image tower")
        self.head = head

    @property
    def image_size(self) -> int:
        grid = int(math.isqrt(self.visual.positional_embedding.shape[0] - 1))
        return grid * int(self.visual.conv1.kernel_size[0])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(pixels).flatten(2).transpose(1, 2)
        cls = v.class_embedding.reshape(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding
        x = self.blocks(v.ln_pre(x))
        x = v.ln_post(x[:, 0]) @ v.proj  # LayerNorm is per token: only the pooled one is needed
        return self.head(x)


def text_graph(model: nn.Module) -> TextGraph:
    return TextGraph(model).eval()


def image_graph(model: nn.Module) -> ImageGraph:
    return ImageGraph(model).eval()
