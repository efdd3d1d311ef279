"""Loading encoders through the public path, and the errors when we cannot."""

import numpy as np
import pytest
import torch

from sightline.search.errors import ModelNotAvailableError
from sightline.search.models import ModelSpec, load_encoder, resolve_spec
from sightline.search.store_records import ModelInfo
from tests.helpers import TINY_CONFIG, photo


def test_tiny_model_loads_from_config_and_checkpoint(tiny_encoder, tiny_checkpoint):
    assert tiny_encoder.dim == 32
    assert tiny_encoder.image_size == 32
    assert tiny_encoder.model_id.startswith("tiny-vit/file:tiny.pt#")
    assert tiny_encoder.name == str(TINY_CONFIG)  # reloadable from another process


def test_embeddings_are_normalised_float32(tiny_encoder):
    images = tiny_encoder.encode_images([photo(i) for i in range(5)], batch_size=2)
    texts = tiny_encoder.encode_texts(["a red square", "two blue circles", "x"], batch_size=2)
    for vectors in (images, texts):
        assert vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert images.shape == (5, 32) and texts.shape == (3, 32)


def test_embeddings_equal_open_clip_for_the_same_image(tiny_encoder, tiny_checkpoint):
    import open_clip

    model, _, transform = open_clip.create_model_and_transforms("tiny-vit", pretrained=str(tiny_checkpoint))
    model.eval()
    images = [photo(i, (120 + i * 13, 90)) for i in range(4)]
    with torch.no_grad():
        ref = model.encode_image(torch.stack([transform(im) for im in images])).numpy()
        ref_text = model.encode_text(open_clip.get_tokenizer("tiny-vit")(["a photo of a dog"])).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    ref_text /= np.linalg.norm(ref_text, axis=1, keepdims=True)
    assert np.allclose(tiny_encoder.encode_images(images), ref, atol=1e-5)
    assert np.allclose(tiny_encoder.encode_texts(["a photo of a dog"]), ref_text, atol=1e-5)


def test_same_checkpoint_gives_same_model_id(tiny_checkpoint, tiny_encoder):
    again = load_encoder(ModelSpec(str(TINY_CONFIG), str(tiny_checkpoint)), device="cpu")
    assert again.model_id == tiny_encoder.model_id


def test_missing_weights_error_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelNotAvailableError) as info:
        load_encoder(ModelSpec("ViT-B-32", "laion2b_s34b_b79k"), device="cpu")
    message = str(info.value)
    assert "'ViT-B-32'" in message and "laion2b_s34b_b79k" in message
    assert str(tmp_path / "hf" / "hub") in message
    assert "--pretrained" in message and "local checkpoint file" in message
    assert "HF_HUB_OFFLINE" in message


def test_unknown_model_name():
    with pytest.raises(ModelNotAvailableError, match="unknown model 'No-Such-Model'"):
        load_encoder(ModelSpec("No-Such-Model", "whatever"), device="cpu")


def test_checkpoint_for_another_architecture(tmp_path, tiny_checkpoint):
    with pytest.raises(ModelNotAvailableError, match="cannot load weights for model 'RN50'"):
        load_encoder(ModelSpec("RN50", str(tiny_checkpoint)), device="cpu")


def test_garbage_checkpoint_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelNotAvailableError, match="bad.pt"):
        load_encoder(ModelSpec(str(TINY_CONFIG), str(bad)), device="cpu")


def test_the_model_is_decided_in_one_place(tiny_checkpoint):
    recorded = ModelInfo("RN50/openai", 1024, "RN50", "openai")
    # An explicit request wins over what the index records...
    assert resolve_spec(ModelSpec("ViT-B-16", "openai"), recorded) == ModelSpec("ViT-B-16", "openai")
    # ...weights alone mean the default architecture, unless they describe themselves (a file)...
    assert resolve_spec(ModelSpec(None, "openai"), recorded) == ModelSpec("ViT-B-32", "openai")
    assert resolve_spec(ModelSpec(None, str(tiny_checkpoint))) == ModelSpec(None, str(tiny_checkpoint))
    # ...otherwise the index's own model, and for a new index the default.
    assert resolve_spec(ModelSpec(), recorded) == ModelSpec("RN50", "openai")
    assert resolve_spec(ModelSpec()) == ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
