"""Indexing on Ray (local mode): the same index as the single-process job — the same
vectors, the same failure records — incremental, and committed by the driver."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sightline.cli import main
from sightline.search.store import Store
from tests.helpers import write_photos

pytest.importorskip("ray")


def _index(folder, index, tiny_model_args, *extra):
    result = CliRunner().invoke(main, ["index", str(folder), "--index", str(index), "--json", "--workers", "0",
                                       *tiny_model_args, *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _stored(index):
    with Store.open(index) as store:
        states = store.file_states()
        vectors = {path: store.file_embedding(state.id) for path, state in states.items()}
        failures = {f.path: f.reason for f in store.failures()}
        return vectors, failures, sorted(store.vector_ids("files").tolist()) == sorted(s.id for s in states.values())


def test_ray_local_builds_the_same_index_and_stays_incremental(tmp_path, tiny_model_args):
    import ray

    folder = tmp_path / "photos"
    write_photos(folder, 30)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "copy.jpg").write_bytes((folder / "photo_0003.jpg").read_bytes())  # known content: reused
    try:
        on_ray = _index(folder, tmp_path / "ray", tiny_model_args, "--ray", "local")
        assert (on_ray["indexed"], on_ray["reused"], len(on_ray["failed"])) == (30, 1, 1)
        again = _index(folder, tmp_path / "ray", tiny_model_args, "--ray", "local")
        assert (again["indexed"], again["unchanged"], again["still_failing"]) == (0, 31, 1)
        write_photos(folder, 2, start=100)
        more = _index(folder, tmp_path / "ray", tiny_model_args, "--ray", "local")
        assert more["indexed"] == 2
    finally:
        ray.shutdown()
    (folder / "photo_0100.jpg").unlink(), (folder / "photo_0101.jpg").unlink()
    _index(folder, tmp_path / "ray", tiny_model_args)  # the sweep is the driver's, as ever
    _index(folder, tmp_path / "local", tiny_model_args)
    ray_vectors, ray_failures, ray_in_step = _stored(tmp_path / "ray")
    local_vectors, local_failures, _ = _stored(tmp_path / "local")
    assert ray_vectors.keys() == local_vectors.keys() and len(ray_vectors) == 31
    assert all(np.allclose(ray_vectors[p], local_vectors[p], atol=1e-5) for p in ray_vectors)
    assert ray_failures == local_failures and ray_in_step


def test_an_unreachable_cluster_is_a_clear_error(tmp_path, tiny_model_args):
    folder = tmp_path / "photos"
    write_photos(folder, 2)
    result = CliRunner().invoke(main, ["index", str(folder), "--index", str(tmp_path / "idx"), *tiny_model_args,
                                       "--ray", "127.0.0.1:1"])
    assert result.exit_code == 25, result.output
    assert "cannot reach the Ray cluster" in result.stderr and "Traceback" not in result.output
