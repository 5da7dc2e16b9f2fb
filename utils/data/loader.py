"""Loaders over a :class:`~utils.data.bundle.DataBundle`: ``build_loaders`` (train + val, sharded for
data parallel) and ``build_eval_loader``, on a ``paddle.io.DataLoader`` that reports a worker's data
error as that error.

This module imports paddle; the package exposes its names lazily so importing :mod:`utils.data`
stays paddle-free.
"""
from __future__ import annotations

import gc
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*ccache.*")  # Paddle's import-time notice
    import paddle

from utils.data.batched import BatchedLoader, batched_loader, refuse_alternate
from utils.data.splits import shard_range
from utils.errors import ConfigError, UserError

if TYPE_CHECKING:
    from utils.data.bundle import DataBundle


def _check_loader_cfg(lc):
    for key in ("batch_size", "eval_batch_size"):
        if lc[key] <= 0:
            raise ConfigError(f"DataLoader.{key} must be > 0, got {lc[key]}")
    if lc["num_workers"] < 0:
        raise ConfigError(f"DataLoader.num_workers must be >= 0, got {lc['num_workers']}")


# Paddle pitfall: with num_workers > 0 an exception in a worker is re-raised in the loader's
# background thread (printed with a traceback by threading.excepthook) while the main thread
# only gets "SystemError: (Fatal) Blocking queue is killed". The hook below keeps UserErrors
# from that thread and the iterator re-raises them in the main thread as themselves.
_worker_errors = []
_worker_errors_seen = False
_hook_installed = False


def _install_worker_error_hook():
    global _hook_installed
    if _hook_installed:
        return
    previous = threading.excepthook

    def hook(args):
        if isinstance(args.exc_value, UserError) and str(args.exc_value).startswith("DataLoader worker("):
            lines = [ln for ln in str(args.exc_value).strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else ""
            prefix = f"{type(args.exc_value).__module__}.{type(args.exc_value).__name__}: "
            _worker_errors.append(type(args.exc_value)(last[len(prefix):] if last.startswith(prefix) else last))
            return
        previous(args)

    threading.excepthook = hook
    _hook_installed = True


class _CheckedIter:
    """Iterator wrapper that turns a dead worker's UserError back into that error."""

    def __init__(self, it):
        self._it = it

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._it)

    def _shutdown(self):
        global _worker_errors_seen
        _worker_errors_seen = True
        it, self._it = self._it, None
        thread = getattr(it, "_thread", None)
        if thread is not None:
            thread.join(timeout=10)  # lets the hook record the worker's error
        # Stop the workers now. Left to the garbage collector, the dead iterator can be
        # finalized inside a worker forked for the next epoch, which then deadlocks.
        try:
            it._try_shutdown_all()
        except Exception:
            pass

    def __next__(self):
        if self._it is None:
            raise StopIteration
        try:
            return next(self._it)
        except SystemError:
            self._shutdown()
            err = _worker_errors.pop() if _worker_errors else None
            _worker_errors.clear()
            if err is None:
                raise
        # Raised outside the except block (no __context__ pointing at Paddle's iterator) and
        # without a frame -> exception reference cycle, so nothing waits for the GC.
        try:
            raise err
        finally:
            del err


class DataLoader(paddle.io.DataLoader):
    """paddle.io.DataLoader whose worker processes report data errors as DataError."""

    def __iter__(self) -> Iterator:
        if self.num_workers > 0:
            if _worker_errors_seen:
                gc.collect()  # finalize dead iterators here, not in the workers about to be forked
            return _CheckedIter(super().__iter__())
        return super().__iter__()


def _loader(dataset, batch_size, shuffle, drop_last, lc, batch_sampler=None):
    if lc["num_workers"] > 0:
        _install_worker_error_hook()
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=lc["num_workers"],
                          use_shared_memory=lc["use_shared_memory"], return_list=True)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=lc["num_workers"], use_shared_memory=lc["use_shared_memory"],
                      return_list=True)


def build_loaders(cfg: dict, bundle: DataBundle, rank: int = 0,
                  world: int = 1) -> tuple[DataLoader | BatchedLoader, DataLoader | BatchedLoader | None]:
    """(train_loader, val_loader) over ``bundle``; val_loader is None when there is no val split.

    Shuffling uses Paddle's RandomSampler, which draws from ``np.random``; workers are seeded
    from ``np.random`` when each epoch's iterator starts. Reseeding numpy before an epoch
    therefore repeats its order and augmentations.

    Data parallel (``world`` > 1, this process being ``rank``): hapi's ``fit`` shards only a
    ``Dataset`` it is given, so the shard is made here. The train loader draws from a
    ``DistributedBatchSampler`` (``DataLoader.batch_size`` images per rank and step; it pads the
    set with up to ``world - 1`` repeated samples so every rank runs the same number of steps, and
    shuffles with its own ``RandomState(epoch)``: the trainer sets that epoch, see
    ``utils.addons.distributed.EpochShuffle``). The val loader covers this rank's contiguous block of the
    validation set (:func:`~utils.data.splits.shard_range`; no padding, so no sample is counted twice).

    ``DataLoader.batched``: :class:`~utils.data.batched.BatchedLoader` for train and val instead (one
    process only: data parallel is a ConfigError; the training loop calls its ``set_epoch``).
    """
    lc = cfg["DataLoader"]
    _check_loader_cfg(lc)
    per_rank = -(-len(bundle.train) // world)
    if lc["drop_last"] and per_rank < lc["batch_size"]:
        shard = f" per process ({world} processes)" if world > 1 else ""
        raise ConfigError(f"DataLoader.drop_last with batch_size {lc['batch_size']} and {per_rank} "
                          f"training samples{shard} gives no batch: lower batch_size or set drop_last false")
    if lc.get("batched"):
        if world > 1:
            raise ConfigError(f"DataLoader.batched does not support data parallel yet ({world} processes): "
                              f"set -o DataLoader.batched=false, or train in one process")
        train = batched_loader(bundle.train, lc["batch_size"], True, lc["shuffle"], lc["drop_last"],
                               cfg["Global"]["seed"])
        val = None if bundle.val is None else build_eval_loader(cfg, bundle.val)
        return train, val
    refuse_alternate(getattr(bundle.train, "transform", None))
    if world > 1:
        sampler = paddle.io.DistributedBatchSampler(bundle.train, batch_size=lc["batch_size"], num_replicas=world,
                                                    rank=rank, shuffle=lc["shuffle"], drop_last=lc["drop_last"])
        train = _loader(bundle.train, lc["batch_size"], lc["shuffle"], lc["drop_last"], lc, batch_sampler=sampler)
    else:
        train = _loader(bundle.train, lc["batch_size"], lc["shuffle"], lc["drop_last"], lc)
    val = None
    if bundle.val is not None:
        dataset = bundle.val
        if world > 1:
            lo, hi = shard_range(len(dataset), rank, world)
            dataset = dataset.subset(np.arange(lo, hi))
        val = build_eval_loader(cfg, dataset)
    return train, val


def build_eval_loader(cfg: dict, dataset: paddle.io.Dataset) -> DataLoader | BatchedLoader:
    """An ordered, complete loader over ``dataset`` with ``DataLoader.eval_batch_size`` (batched when
    ``DataLoader.batched``)."""
    lc = cfg["DataLoader"]
    _check_loader_cfg(lc)
    if lc.get("batched"):
        return batched_loader(dataset, lc["eval_batch_size"], False)
    refuse_alternate(getattr(dataset, "transform", None))
    return _loader(dataset, lc["eval_batch_size"], False, False, lc)
