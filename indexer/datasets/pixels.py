"""Decoding a dataset's images in parallel, in batches of model input.

Reuses the indexer's crash-tolerant decode workers.  An image that cannot
be decoded is an error here (a benchmark or training set with holes is not
the benchmark any more), reported with every failing file.
"""

from __future__ import annotations

import os
import sys
from typing import Iterator, Sequence

import numpy as np

from sightline.indexer.decode import DecodeTask, DecoderConfig
from sightline.indexer.workers import decode_all
from sightline.search.errors import DatasetError
from sightline.search.imageio import DEFAULT_MAX_PIXELS
from sightline.search.preprocess import Preprocessor


def pixel_batches(paths: Sequence[str], preprocessor: Preprocessor, batch_size: int = 64,
                  workers: int | None = None, progress: bool = False, desc: str = "decoding",
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Yield ``(indices into paths, preprocessed arrays)`` batches, in completion order."""
    from tqdm import tqdm

    from sightline.indexer.pipeline import default_workers

    workers = default_workers() if workers is None else workers
    tasks = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DatasetError(f"cannot read image {path}: {exc.strerror or exc}") from None
        tasks.append(DecodeTask(path, st.st_size, st.st_mtime_ns))
    position = {path: i for i, path in enumerate(paths)}
    config = DecoderConfig(preprocessor, max_pixels, use_draft=True)
    failures: list[str] = []
    indices: list[int] = []
    arrays: list[np.ndarray] = []
    bar = tqdm(total=len(tasks), desc=desc, unit="img", file=sys.stderr, disable=not progress, leave=False)
    try:
        for item in decode_all(tasks, config, frozenset(), workers, window=max(2 * batch_size, 4 * workers)):
            bar.update(1)
            if item.error is not None:
                failures.append(f"{item.task.path}: {item.error}")
                continue
            indices.append(position[item.task.path])
            arrays.append(item.pixels)
            if len(arrays) == batch_size:
                yield np.asarray(indices), arrays
                indices, arrays = [], []
        if arrays:
            yield np.asarray(indices), arrays
    finally:
        bar.close()
    if failures:
        shown = "; ".join(failures[:5])
        raise DatasetError(f"{len(failures)} image(s) could not be decoded: {shown}"
                           + (" ..." if len(failures) > 5 else ""))


def input_shape(preprocessor: Preprocessor) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one preprocessed image (uint8 HWC, or float CHW on the fallback path)."""
    from PIL import Image

    probe = preprocessor(Image.new("RGB", (preprocessor.size, preprocessor.size)))
    return probe.shape, probe.dtype
