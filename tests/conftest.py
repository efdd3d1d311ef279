"""Shared fixtures: a tiny real open_clip model (random weights, loaded from a
file through the public loading path), generated photos and fake encoders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.backends import BACKENDS, index_settings, start_pg_server
from tests.helpers import TINY_CONFIG, FakeEncoder, make_tiny_checkpoint

# Tests never reach a model hub; the first missing file must fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_model_args(tiny_checkpoint) -> list[str]:
    """CLI arguments selecting the tiny model."""
    return ["--model", str(TINY_CONFIG), "--pretrained", str(tiny_checkpoint)]


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint):
    from sightline.search.models import ModelSpec, load_encoder

    return load_encoder(ModelSpec(str(TINY_CONFIG), str(tiny_checkpoint)), device="cpu", precision="fp32")


@pytest.fixture(scope="session")
def open_clip_encoder(tiny_checkpoint):
    """The tiny model built by open_clip itself (the reference for the lean loader)."""
    from sightline.search.models import ModelSpec, load_encoder

    return load_encoder(ModelSpec(str(TINY_CONFIG), str(tiny_checkpoint)), device="cpu", precision="fp32", lean=False)


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def one_torch_thread():
    """Training tests run torch on one thread: two threads on two busy cores spin
    against each other and are several times slower here."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pg_server():
    """One private PostgreSQL server (with pgvector) for the whole run; each test gets its own database."""
    server = start_pg_server()
    yield server
    server.cleanup()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Run a test once per storage backend."""
    return request.param


@pytest.fixture
def fresh_settings(backend, tmp_path, request):
    """Library settings for a new, empty index on ``backend``."""
    server = request.getfixturevalue("pg_server") if backend == "postgresql" else None
    return index_settings(backend, tmp_path / "idx", server)
