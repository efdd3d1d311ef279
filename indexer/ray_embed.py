"""Decoding and embedding on a Ray cluster (Ray Data), for ``sightline index --ray``.

The driver (the ``sightline index`` process) still decides what needs
embedding, and still commits: it hands the list of files to a Ray Data
pipeline and receives, in completion order, exactly what the in-process decode
workers give it (hash, metadata, failure reasons), plus each image's vector.
It then commits batch by batch as the single-process job does, so a Ray run is
incremental, resumable after a kill and records the same failures.

The pipeline has two stages:

1. ``_Decoder`` actors (one CPU each) read, hash, decode and preprocess files
   with the indexer's own :func:`~sightline.indexer.decode.decode_one`;
   content the index already holds is not decoded at all;
2. ``_Embedder`` actors load the model once each (on a GPU where the cluster
   has them: ``num_gpus=1`` per actor) and embed the batches.

Weights must be readable on every node at the same path (a shared folder, or
the Hugging Face cache on each node), since each actor loads them itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import numpy as np

from sightline.indexer.decode import Decoded, DecodeTask, DecoderConfig, decode_one
from sightline.search.errors import SightlineError
from sightline.search.imageio import ImageInfo
from sightline.search.models import ModelSpec

log = logging.getLogger(__name__)


class RayUnavailableError(SightlineError):
    """Ray is not installed, or its cluster cannot be reached."""

    exit_code = 25


@dataclass(frozen=True)
class RayOptions:
    """Where and how to run: ``address`` is 'local' (a Ray instance on this machine),
    'auto' (the cluster this machine belongs to) or a cluster address (``ray://HOST:10001``
    or ``HOST:6379``)."""

    address: str = "local"
    #: Images per model call on each embedding actor.
    batch_size: int = 32
    #: Embedding actors; None: one per GPU in the cluster, or one on a CPU-only cluster.
    embedders: Optional[int] = None
    #: Decoding actors; None: the cluster's CPUs minus those the embedders use (at least one).
    decoders: Optional[int] = None


@dataclass(frozen=True)
class EncoderRecipe:
    """How each embedding actor builds the model (picklable, unlike a loaded model)."""

    spec: ModelSpec
    precision: str = "auto"
    device: Optional[str] = None  # None: cuda on a GPU actor, else cpu


def connect(options: RayOptions) -> dict:
    """Start or join Ray; returns the cluster's resources."""
    try:
        import ray
    except ImportError:
        raise RayUnavailableError("Ray is not installed: `pip install 'sightline[ray]'` (or `pip install "
                                  "'ray[data]'`), then run again with --ray.") from None
    if not ray.is_initialized():
        _probe(options.address)
        try:
            if options.address == "local":
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address=options.address, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError...: all mean "no cluster"
            raise RayUnavailableError(
                f"cannot reach the Ray cluster at {options.address!r}: {str(exc).splitlines()[0]}. Start one with "
                f"`ray start --head` (then --ray auto), or use --ray local.") from None
    _quiet_ray_data()
    return ray.cluster_resources()


def _probe(address: str, timeout: float = 3.0) -> None:
    """Fail at once when a HOST:PORT cluster address does not answer (ray.init would retry for minutes)."""
    if address in ("local", "auto"):
        return
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise RayUnavailableError(
            f"cannot reach the Ray cluster at {address!r} ({exc}). Start one with `ray start --head` on that "
            f"machine and pass its address (HOST:6379, or ray://HOST:10001), or use --ray local.") from None


def _quiet_ray_data() -> None:
    """Our progress bar counts the files; Ray Data's own bars and per-stage logs would
    interleave with it on stderr (``-v`` shows them)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    if not log.isEnabledFor(logging.INFO):
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)


class _Decoder:
    """Stage 1 (a Ray actor): files -> hashes, metadata and model input."""

    def __init__(self, config: DecoderConfig, known_hashes):
        import ray

        self.config = config
        self.known = ray.get(known_hashes) if isinstance(known_hashes, ray.ObjectRef) else known_hashes

    def __call__(self, batch: dict) -> dict:
        rows = [decode_one(DecodeTask(p, int(s), int(m)), self.config, self.known)
                for p, s, m in zip(batch["path"], batch["size"], batch["mtime_ns"])]
        return _columns(rows)


class _Embedder:
    """Stage 2 (a Ray actor holding the model): model input -> vectors."""

    def __init__(self, recipe: EncoderRecipe):
        from sightline.search.models import load_encoder

        device = recipe.device
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = load_encoder(recipe.spec, device, recipe.precision)

    def __call__(self, batch: dict) -> dict:
        pixels = [_unpack(b) for b in batch["pixels"]]
        todo = [i for i, p in enumerate(pixels) if p is not None]
        vectors = [b""] * len(pixels)
        if todo:
            for i, v in zip(todo, self.encoder.encode_preprocessed([pixels[i] for i in todo])):
                vectors[i] = _pack(v)
        batch["vector"] = _object_array(vectors)
        batch["pixels"] = _object_array([b""] * len(pixels))  # not needed past here: spare the transfer back
        return batch


def embed_on_ray(tasks: Iterable[DecodeTask], config: DecoderConfig, known_hashes: frozenset,
                 recipe: EncoderRecipe, options: RayOptions) -> Iterator[Decoded]:
    """Decode and embed ``tasks`` on Ray; yields :class:`Decoded` items with ``vector`` set
    (for files that decoded and need embedding), in completion order."""
    import ray

    resources = connect(options)
    tasks = list(tasks)
    if not tasks:
        return
    gpus = int(resources.get("GPU", 0))
    embedders = options.embedders or max(1, gpus)
    gpus_each = 1 if gpus else 0
    cpus = int(resources.get("CPU", 1))
    decoders = options.decoders or max(1, cpus - (0 if gpus else embedders))
    log.info("ray: %d decoder(s), %d embedder(s)%s", decoders, embedders, f" on {gpus_each} GPU each" if gpus else "")
    items = [{"path": t.path, "size": t.size, "mtime_ns": t.mtime_ns} for t in tasks]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // 8, 4 * decoders)))
    decoded = dataset.map_batches(_Decoder, fn_constructor_kwargs={"config": config,
                                                                   "known_hashes": ray.put(known_hashes)},
                                  batch_size=8, concurrency=decoders, num_cpus=1, batch_format="numpy")
    embedded = decoded.map_batches(_Embedder, fn_constructor_kwargs={"recipe": recipe}, batch_size=options.batch_size,
                                   concurrency=embedders, num_gpus=gpus_each, num_cpus=0 if gpus else 1,
                                   batch_format="numpy")
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
        yield from _rows(batch)


# Columns travel as numpy arrays of Python objects.  Arrays and dicts go as pickled bytes
# (b"" when missing): Ray turns same-shape arrays into tensor columns, and a block where
# some are missing into object columns, and then cannot join the two.
_FIELDS = ("sha256", "error", "known_content", "transient")


def _columns(rows: list[Decoded]) -> dict:
    out = {"path": [r.task.path for r in rows], "size": [r.task.size for r in rows],
           "mtime_ns": [r.task.mtime_ns for r in rows]}
    for name in _FIELDS:
        out[name] = [getattr(r, name) for r in rows]
    out["info"] = [_pack(dataclasses.asdict(r.info)) if r.info is not None else b"" for r in rows]
    out["pixels"] = [_pack(r.pixels) if r.pixels is not None else b"" for r in rows]
    return {k: _object_array(v) for k, v in out.items()}


def _object_array(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _rows(batch: dict) -> Iterator[Decoded]:
    # Ray may turn a column of all-missing values into floats (NaN): only real values count.
    for i in range(len(batch["path"])):
        info, vector = _unpack(batch["info"][i]), _unpack(batch["vector"][i])
        yield Decoded(DecodeTask(str(batch["path"][i]), int(batch["size"][i]), int(batch["mtime_ns"][i])),
                      sha256=_text(batch["sha256"][i]), info=ImageInfo(**info) if info is not None else None,
                      error=_text(batch["error"][i]), known_content=bool(batch["known_content"][i]),
                      transient=bool(batch["transient"][i]),
                      vector=vector)


def _pack(value) -> bytes:
    return pickle.dumps(value, protocol=5)


def _unpack(blob):
    # Only ever our own pickles, made by this pipeline's actors.
    return pickle.loads(blob) if isinstance(blob, (bytes, bytearray)) and blob else None


def _text(value) -> Optional[str]:
    return str(value) if isinstance(value, str) else None
