"""A pool of decode workers that survives a worker dying.

``concurrent.futures`` marks the whole pool broken when one worker dies (a
hostile file can crash a C decoder).  We then start a fresh pool and retry
the tasks that were in flight one at a time: the one that crashes alone is
reported as failed, and every other file is still indexed.  A decoder stuck
in an endless loop is handled the same way: when no decode finishes for
``DECODE_TIMEOUT_S`` seconds the workers are killed and the suspects retried.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

from sightline.indexer.decode import Decoded, DecodeTask, DecoderConfig, decode_in_worker, decode_one, init_worker

log = logging.getLogger(__name__)

#: Seconds without any decode finishing before the workers are declared stuck.
#: Generous: a legitimate 180-megapixel image decodes in a few seconds.
DECODE_TIMEOUT_S = 120.0


def decode_all(tasks: Iterable[DecodeTask], config: DecoderConfig, known_hashes: frozenset,
               workers: int, window: int) -> Iterator[Decoded]:
    """Decode ``tasks`` with ``workers`` processes (0: in this process), in completion order."""
    if workers <= 0:
        for task in tasks:
            yield decode_one(task, config, known_hashes)
        return
    yield from _PooledDecoder(config, known_hashes, workers, window).run(tasks)


class _PooledDecoder:
    def __init__(self, config: DecoderConfig, known_hashes: frozenset, workers: int, window: int):
        self.config = config
        self.known = known_hashes
        self.workers = workers
        self.window = max(window, workers)

    def _new_pool(self) -> ProcessPoolExecutor:
        # forkserver: workers start from a clean, torch-free process, never a
        # fork of the multi-threaded model process.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["sightline.indexer.decode"])
        return ProcessPoolExecutor(self.workers, mp_context=context, initializer=init_worker,
                                   initargs=(self.config, self.known))

    def run(self, tasks: Iterable[DecodeTask]) -> Iterator[Decoded]:
        pending_tasks = iter(tasks)
        # Tasks that were in flight when a worker died.  They are retried one
        # at a time, so a crash with a single task in flight names the culprit.
        suspects: deque[DecodeTask] = deque()
        pool = self._new_pool()
        in_flight: dict[Future, DecodeTask] = {}
        try:
            while True:
                self._fill(pool, in_flight, suspects, pending_tasks)
                if not in_flight:
                    return
                done, _ = wait(list(in_flight), timeout=DECODE_TIMEOUT_S, return_when=FIRST_COMPLETED)
                if not done:
                    yield from self._stalled(pool, in_flight, suspects)
                    pool = self._new_pool()
                    continue
                broken = False
                for future in done:
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    del in_flight[future]
                    yield result
                if broken:
                    pool.shutdown(wait=False, cancel_futures=True)
                    if len(in_flight) == 1:
                        (task,) = in_flight.values()
                        log.warning("the decoder crashed on %s; skipping it", task.path)
                        yield Decoded(task, error="the image decoder crashed on this file")
                    else:
                        suspects.extend(in_flight.values())
                    in_flight.clear()
                    pool = self._new_pool()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _stalled(self, pool, in_flight: dict, suspects: deque) -> Iterator[Decoded]:
        """Nothing finished in time: stop the workers, blame a lone task or retry the suspects."""
        _kill_workers(pool)
        pool.shutdown(wait=False, cancel_futures=True)
        if len(in_flight) == 1:
            (task,) = in_flight.values()
            log.warning("decoding %s took longer than %.0f s; skipping it", task.path, DECODE_TIMEOUT_S)
            yield Decoded(task, error=f"decoding took longer than {DECODE_TIMEOUT_S:.0f} s (a malformed file?)")
        else:
            suspects.extend(in_flight.values())
        in_flight.clear()

    def _fill(self, pool, in_flight: dict, suspects: deque, pending_tasks: Iterator[DecodeTask]) -> None:
        if suspects:
            if not in_flight:
                task = suspects.popleft()
                in_flight[pool.submit(decode_in_worker, task)] = task
            return
        while len(in_flight) < self.window:
            task = next(pending_tasks, None)
            if task is None:
                return
            in_flight[pool.submit(decode_in_worker, task)] = task


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    # shutdown() waits for running tasks to finish, which a stuck one never
    # does; Python 3.14 has kill_workers(), older versions only the private map.
    if hasattr(pool, "kill_workers"):
        pool.kill_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.kill()
        except (OSError, ValueError):  # already gone
            pass
