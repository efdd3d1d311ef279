"""Our torch-free preprocessing must equal open_clip's own transform bit for bit."""

import numpy as np
import pytest

from sightline.search.preprocess import Preprocessor
from tests.helpers import photo


def _open_clip_transform(size, resize_mode="shortest", interpolation="bicubic"):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(size=size, resize_mode=resize_mode, interpolation=interpolation)
    return cfg, image_transform_v2(cfg, is_train=False)


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [(224, 224), (300, 201), (201, 300), (97, 33), (224, 500), (640, 480), (50, 50)])
def test_matches_open_clip_exactly(size, resize_mode, interpolation):
    cfg, transform = _open_clip_transform(224, resize_mode, interpolation)
    ours = Preprocessor.from_open_clip(
        {"size": 224, "mean": cfg.mean, "std": cfg.std, "interpolation": interpolation, "resize_mode": resize_mode},
        transform,
    )
    assert ours.fallback is None  # the fast path is what we test
    image = photo(sum(size), size)
    expected = transform(image).numpy()
    got = ours.to_batch([ours(image)])[0].numpy()
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_non_rgb_input_is_converted_like_open_clip():
    cfg, transform = _open_clip_transform(64)
    ours = Preprocessor.from_open_clip({"size": 64}, transform)
    image = photo(3, (80, 120)).convert("L")
    assert np.array_equal(ours.to_batch([ours(image)])[0].numpy(), transform(image).numpy())


def test_unsupported_mode_falls_back_to_the_model_transform():
    cfg, transform = _open_clip_transform(64, resize_mode="longest")
    ours = Preprocessor.from_open_clip({"size": 64, "resize_mode": "longest"}, transform)
    assert ours.fallback is transform
    image = photo(5, (100, 70))
    assert np.array_equal(ours.to_batch([ours(image)])[0].numpy(), transform(image).numpy())


def test_draft_size_is_twice_the_input():
    assert Preprocessor(size=224, mean=(0, 0, 0), std=(1, 1, 1)).draft_size == 448
