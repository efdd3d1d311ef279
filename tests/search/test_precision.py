"""bf16 inference: chosen only where it is native, and close to fp32 when used."""

import numpy as np
import pytest
import torch

from sightline.search import precision
from sightline.search.errors import ConfigurationError
from sightline.search.models import ModelSpec, load_encoder
from tests.helpers import TINY_CONFIG, photo


@pytest.mark.parametrize("value", ["fp32", "bf16", "BF16 "])
def test_explicit_precision_is_kept(value):
    assert precision.resolve_precision(value, "cpu") == value.strip().lower()


def test_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    assert precision.resolve_precision("auto", "mps") == "fp32"


def test_unknown_precision_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="auto, fp32, bf16"):
        precision.resolve_precision("fp8", "cpu")


def test_bf16_embeddings_stay_within_cosine_0999_of_fp32(tiny_encoder, tiny_checkpoint):
    bf16 = load_encoder(ModelSpec(str(TINY_CONFIG), str(tiny_checkpoint)), device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and next(bf16.model.parameters()).dtype == torch.bfloat16
    images = [photo(i, (200 + 7 * i, 150)) for i in range(16)]
    texts = ["a dog", "two red squares on a blue field", "x", "a photo of a photo of a dog in the snow"]
    for low, high in ((bf16.encode_images(images), tiny_encoder.encode_images(images)),
                      (bf16.encode_texts(texts), tiny_encoder.encode_texts(texts))):
        assert low.dtype == np.float32
        assert np.allclose(np.linalg.norm(low, axis=1), 1.0, atol=1e-5)
        assert (low * high).sum(1).min() >= 0.999
