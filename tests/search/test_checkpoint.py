"""Sightline checkpoints: heads, round trip, loading from the file alone."""

import json

import pytest
import torch

from sightline.search import checkpoint
from sightline.search.models import ModelSpec, load_encoder
from tests.helpers import TINY_CONFIG


def _tiny_dual(head_specs):
    torch.manual_seed(0)
    clip = checkpoint.build_clip(json.loads(TINY_CONFIG.read_text()))
    return checkpoint.make_dual_encoder(clip, head_specs).eval()


def test_head_specs():
    assert checkpoint.head_spec("none", 32) is None
    assert checkpoint.head_spec("linear", 32, 16) == {"type": "linear", "in": 32, "out": 16}
    assert checkpoint.head_spec("mlp", 32) == {"type": "mlp", "in": 32, "out": 32, "hidden": 64, "residual": True}
    assert checkpoint.head_spec("mlp", 32, 8)["residual"] is False
    with pytest.raises(ValueError, match="unknown head type"):
        checkpoint.head_spec("conv", 32)
    residual = checkpoint.make_head(checkpoint.head_spec("mlp", 4))
    torch.nn.init.zeros_(residual.inner[-1].weight)
    torch.nn.init.zeros_(residual.inner[-1].bias)
    x = torch.randn(3, 4)
    assert torch.equal(residual(x), x)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_round_trip_and_load_from_the_file_alone(tmp_path, kind):
    specs = {"image": checkpoint.head_spec(kind, 32, 24), "text": checkpoint.head_spec(kind, 32, 24)}
    dual = _tiny_dual(specs)
    path = tmp_path / "model.pt"
    checkpoint.save_checkpoint(path, model_name="tiny-vit", model_cfg=json.loads(TINY_CONFIG.read_text()),
                               preprocess_cfg={"size": 32}, dual_encoder=dual, extra={"note": "x"})
    assert checkpoint.is_sightline_checkpoint(path)
    loaded, cfg, payload = checkpoint.load_checkpoint(path)
    assert payload["heads"] == specs and payload["extra"] == {"note": "x"}
    tokens = torch.zeros(2, 77, dtype=torch.long)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_text(tokens), dual.encode_text(tokens))
        assert torch.allclose(loaded.encode_image(pixels), dual.encode_image(pixels))
    encoder = load_encoder(ModelSpec(None, str(path)), device="cpu")
    assert encoder.dim == 24 and encoder.model_id.startswith("sightline:model.pt#")


def test_newer_format_is_refused(tmp_path):
    dual = _tiny_dual({})
    path = tmp_path / "future.pt"
    checkpoint.save_checkpoint(path, model_name="tiny", model_cfg=json.loads(TINY_CONFIG.read_text()),
                               preprocess_cfg={"size": 32}, dual_encoder=dual)
    payload = torch.load(path, weights_only=True)
    payload[checkpoint.FORMAT_KEY] = checkpoint.FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(ValueError, match="newer than this Sightline reads"):
        checkpoint.load_checkpoint(path)
