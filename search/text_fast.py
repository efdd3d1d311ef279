"""Text encoding over the real tokens only.

CLIP's text transformer is causal and reads its output at the end-of-text
token, so every position after the longest EOT in a batch cannot influence
the result: running on ``tokens[:, :L]`` instead of all 77 padded positions
gives the same embedding for a fraction of the work (a query of a few words
is ~10 tokens).  Where the architecture does not guarantee this (no causal
mask, another pooling), the model's own ``encode_text`` is used.
"""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)


def text_encoder_fn(model) -> Callable:
    """The fastest exact text encoder for ``model`` (an open_clip model or a
    Sightline dual encoder wrapping one)."""
    if getattr(model, "truncates_text", False):
        return model.encode_text
    inner = getattr(model, "clip", None)
    if inner is not None and hasattr(model, "text_head"):
        fast = _truncating_encoder(inner)
        if fast is not None:
            return lambda tokens: model.text_head(fast(tokens))
        return model.encode_text
    return _truncating_encoder(model) or model.encode_text


def _truncating_encoder(model):
    import open_clip

    if type(model) is not open_clip.CLIP:  # subclasses may change encode_text
        return None
    if getattr(model, "attn_mask", None) is None or getattr(model, "text_pool_type", "argmax") != "argmax":
        return None
    return lambda tokens: _encode_truncated(model, tokens)


def _encode_truncated(model, tokens):
    # Mirrors open_clip.CLIP.encode_text, with the sequence cut after the last EOT.
    from open_clip.transformer import text_global_pool

    length = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type)
    if model.text_projection is not None:
        x = model.text_projection(x) if hasattr(model.text_projection, "weight") else x @ model.text_projection
    return x
