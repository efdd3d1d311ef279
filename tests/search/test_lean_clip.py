"""The lean loader: same embeddings as open_clip, no open_clip import, and a
fallback to open_clip for whatever it does not build."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sightline.search import lean_clip
from sightline.search.models import ModelSpec, load_encoder
from tests.helpers import TINY_CONFIG, photo

IMAGES = [photo(i, (90 + 11 * i, 70)) for i in range(6)]
TEXTS = ["a photo of a dog", "x", "two red squares and a very long description of a blue circle " * 3]


@pytest.fixture(scope="module")
def lean(tiny_checkpoint):
    return load_encoder(ModelSpec(str(TINY_CONFIG), str(tiny_checkpoint)), device="cpu", precision="fp32")


def test_local_weights_of_a_standard_vit_load_lean(lean, tiny_encoder):
    assert type(lean.model).__name__ == "LeanCLIP"
    assert (lean.model_id, lean.name, lean.dim) == (tiny_encoder.model_id, tiny_encoder.name, tiny_encoder.dim)
    assert lean.preprocessor == tiny_encoder.preprocessor


def test_lean_embeddings_equal_open_clip(lean, tiny_checkpoint):
    reference = load_encoder(ModelSpec(str(TINY_CONFIG), str(tiny_checkpoint)), device="cpu", precision="fp32",
                             lean=False)
    assert type(reference.model).__name__ == "CLIP"
    assert np.allclose(lean.encode_images(IMAGES), reference.encode_images(IMAGES), atol=1e-5)
    assert np.allclose(lean.encode_texts(TEXTS), reference.encode_texts(TEXTS), atol=1e-5)


def test_lean_loading_does_not_import_open_clip(tiny_checkpoint):
    code = (
        "import sys; from sightline.search.models import ModelSpec, load_encoder; "
        f"e = load_encoder(ModelSpec({str(TINY_CONFIG)!r}, {str(tiny_checkpoint)!r}), device='cpu'); "
        "e.encode_texts(['a dog']); print(type(e.model).__name__, 'open_clip' in sys.modules, "
        "'torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["LeanCLIP", "False", "False"]


@pytest.mark.parametrize("change", [
    {"vision_cfg": {"ls_init_value": 0.1}},
    {"text_cfg": {"pool_type": "last"}},
    {"custom_text": True},
])
def test_architectures_it_does_not_build_go_through_open_clip(tmp_path, tiny_checkpoint, change):
    config = json.loads(TINY_CONFIG.read_text())
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    with pytest.raises(lean_clip.Unsupported):
        lean_clip.check(config)


def test_weights_of_another_shape_fall_back_to_open_clip(tmp_path, tiny_checkpoint):
    config = json.loads(TINY_CONFIG.read_text())
    config["text_cfg"]["layers"] = 3  # the file holds 2 layers
    with pytest.raises(lean_clip.Unsupported, match="do not match"):
        lean_clip.load(config, tiny_checkpoint)


def test_unmappable_files_are_unsupported_not_fatal(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(lean_clip.Unsupported):
        lean_clip.load(json.loads(TINY_CONFIG.read_text()), bad)


def test_builtin_configs_are_read_from_open_clip_files():
    config = lean_clip.builtin_config("ViT-B-32")
    assert config["vision_cfg"]["patch_size"] == 32
    lean_clip.check(config)
    assert lean_clip.builtin_config("No-Such-Model") is None
    assert lean_clip.builtin_config("../etc/passwd") is None


def test_the_tokenizer_is_open_clips(tiny_encoder):
    config = json.loads(TINY_CONFIG.read_text())
    ours = lean_clip.tokenizer(config)(TEXTS)
    assert torch.equal(ours, tiny_encoder.tokenizer(TEXTS))
