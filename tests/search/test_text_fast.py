"""Encoding only the real tokens gives the same text embeddings as all 77."""

import numpy as np
import torch

from sightline.search.text_fast import text_encoder_fn

TEXTS = ["a dog", "a photo of a dog on the beach at sunset with two people and a red kite",
         "", "x " * 60, "ünïcødé and emoji 📷"]


def test_truncated_text_encoder_equals_full(open_clip_encoder):
    model = open_clip_encoder.model
    fast = text_encoder_fn(model)
    assert fast != model.encode_text  # the fast path is in use for this architecture
    tokens = open_clip_encoder.tokenizer(TEXTS)
    with torch.inference_mode():
        full = model.encode_text(tokens).numpy()
        cut = fast(tokens).numpy()
        one_by_one = np.concatenate([fast(tokens[i:i + 1]).numpy() for i in range(len(TEXTS))])
    assert np.allclose(full, cut, atol=1e-5, rtol=1e-4)
    assert np.allclose(full, one_by_one, atol=1e-5, rtol=1e-4)
    cos = (full * cut).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(cut, axis=1)
    assert cos.min() > 0.999999


def test_vit_b_32_architecture_equal_too():
    """The real ViT-B-32 text tower (random weights; compute is the same as trained)."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    tokens = open_clip.get_tokenizer("ViT-B-32")(TEXTS)
    with torch.inference_mode():
        full = model.encode_text(tokens)
        cut = text_encoder_fn(model)(tokens)
    cos = torch.nn.functional.cosine_similarity(full, cut).min().item()
    assert cos > 0.99999
    assert torch.allclose(full, cut, atol=1e-4, rtol=1e-3)


def test_encoders_use_it(tiny_encoder, open_clip_encoder):
    """Both the lean model and open_clip's equal open_clip's encode_text over all 77 positions."""
    with torch.inference_mode():
        ref = open_clip_encoder.model.encode_text(open_clip_encoder.tokenizer(TEXTS)).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert type(tiny_encoder.model).__name__ == "LeanCLIP"
    for encoder in (tiny_encoder, open_clip_encoder):
        assert np.allclose(encoder.encode_texts(TEXTS), ref, atol=1e-5)
