"""Processes of a run: rank and world size, small collectives, and the evaluation sharded across ranks.

Under ``python -m paddle.distributed.launch --nproc_per_node N`` the launcher starts N copies of
the script with ``PADDLE_TRAINER_ID`` (rank) and ``PADDLE_TRAINERS_NUM`` (world size) set; with
one process every function here is a no-op or the identity, so the training spine calls them
unconditionally. The data-parallel callbacks built on them are in ``utils/addons/distributed.py``.

* :func:`init` starts the parallel environment once; :func:`broadcast_object`,
  :func:`all_reduce_sum`, :func:`any_rank`, :func:`all_gather_object`, :func:`on_main` (rank 0
  runs a function, every rank gets its result or its ``UserError``);
* :func:`average_buffers`: BatchNorm running statistics averaged over ranks (``DataParallel``
  synchronises only gradients); :func:`broadcast_weights`, :func:`state_digest`;
* :class:`ShardedEval`: every rank evaluates its block of the validation set; the sums (samples,
  loss x samples, top-k correct counts) are all-reduced, so the metrics are those of the whole
  set and the same on every rank (early stopping and "best" decide the same everywhere).

Cost per evaluation with world > 1: one all-reduce of the sums, one of the running statistics,
and with VisualDL's prediction images, confidence histograms or PR curves on, an all-gather of
the logits (N x classes floats) for rank 0.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import paddle
import paddle.distributed as dist

from models.init import running_stats
from utils.errors import UserError
from utils.training.evaluate import LastEval, metric_names, predict, summarize

_ready = False


def world_size() -> int:
    """Number of training processes (``PADDLE_TRAINERS_NUM``; 1 without the launcher)."""
    return int(os.environ.get("PADDLE_TRAINERS_NUM") or 1)


def rank() -> int:
    """This process' rank (``PADDLE_TRAINER_ID``; 0 without the launcher)."""
    return int(os.environ.get("PADDLE_TRAINER_ID") or 0)


def local_size() -> int:
    """Training processes on this machine (``PADDLE_LOCAL_SIZE``): they share its CPU cores."""
    return int(os.environ.get("PADDLE_LOCAL_SIZE") or world_size())


def is_main() -> bool:
    """True on rank 0, the process that prints and writes."""
    return rank() == 0


def is_distributed() -> bool:
    """True when more than one process trains."""
    return world_size() > 1


def init() -> tuple[int, int]:
    """Start the parallel environment once (a no-op for one process); returns (rank, world size).

    ``paddle.Model`` calls ``init_parallel_env`` again when it wraps the network; a second call
    returns the existing default group.
    """
    global _ready
    if is_distributed() and not _ready:
        dist.init_parallel_env()
        _ready = True
    return rank(), world_size()


# ----------------------------------------------------------------------------- collectives

def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; for small values: a path, a flag, a message)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not is_distributed():
        return [obj]
    out = []
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Element-wise sum over ranks of a float vector, as float64 numpy (the same result on every rank)."""
    values = np.asarray(values, dtype=np.float64)
    if not is_distributed():
        return values
    t = paddle.to_tensor(values)
    dist.all_reduce(t)
    return t.numpy()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    if not is_distributed():
        return bool(flag)
    return bool(all_reduce_sum([1.0 if flag else 0.0])[0] > 0)


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` on rank 0 only; every rank returns its result, or raises the ``UserError`` it raised.

    For side effects that must happen once (creating the run directory) whose outcome every rank
    needs. Other exceptions on rank 0 propagate there; the launcher then stops the other ranks.
    """
    if not is_distributed():
        return fn()
    result = error = None
    if is_main():
        try:
            result = fn()
        except UserError as e:
            error = str(e)
    result, error = broadcast_object((result, error))
    if error is not None:
        raise UserError(error)
    return result


# ----------------------------------------------------------------------------- weights

_FLOATS = ("float16", "bfloat16", "float32", "float64")


def is_float(t: paddle.Tensor) -> bool:
    """True for a floating-point tensor (what averages and all-reduces apply to)."""
    return str(t.dtype).split(".")[-1] in _FLOATS


def changing_tensors(network: paddle.nn.Layer) -> list[paddle.Tensor]:
    """The floating tensors that change in training without a gradient: running statistics and buffers.

    Frozen weights are left out: they never change.
    """
    out = running_stats(network)
    seen = {id(t) for t in out}
    out += [b for b in network.buffers() if b is not None and id(b) not in seen]
    return [t for t in out if is_float(t)]


def average_buffers(network: paddle.nn.Layer) -> None:
    """Replace the running statistics (BatchNorm mean/variance, other buffers) by their mean over ranks.

    ``DataParallel`` averages gradients only: each rank's BatchNorm statistics follow its own shard.
    Averaging the running means is exact (an EMA of the global batch means); the averaged running
    variance leaves out the spread of the per-rank means (timm's ``distribute_bn`` does the same).
    The sum and division run in float64, so a tensor already equal on every rank (the statistics of a
    frozen BatchNorm) comes back bit for bit.
    """
    average_tensors(changing_tensors(network))


def average_tensors(tensors: list[paddle.Tensor]) -> None:
    """Replace each tensor by its mean over ranks, in place (float64 sums: equal tensors come back bit for bit)."""
    if not is_distributed() or not tensors:
        return
    w = world_size()
    with paddle.no_grad():
        flat = paddle.concat([t.astype("float64").reshape([-1]) for t in tensors])
        dist.all_reduce(flat)
        flat = flat / w
        offset = 0
        for t in tensors:
            n = int(np.prod(t.shape)) if len(t.shape) else 1
            t.set_value(flat[offset:offset + n].reshape(t.shape).astype(t.dtype))
            offset += n


def broadcast_weights(network: paddle.nn.Layer, src: int = 0) -> None:
    """Parameters and buffers of rank ``src`` on every rank (after rank 0 alone loaded a checkpoint)."""
    if not is_distributed():
        return
    with paddle.no_grad():
        for t in list(network.parameters()) + list(network.buffers()):
            if t is not None:
                dist.broadcast(t, src=src)


def state_digest(state: paddle.nn.Layer | dict) -> str:
    """SHA-256 (first 16 hex digits) of a network or a state dict: names, dtypes, shapes, bytes."""
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    h = hashlib.sha256()
    for name in sorted(state):
        a = np.ascontiguousarray(state[name].numpy() if hasattr(state[name], "numpy") else np.asarray(state[name]))
        h.update(f"{name}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- evaluation

def shard_sums(logits: np.ndarray, labels: np.ndarray, topk: Sequence[int] = (1,), label_smoothing: float = 0.0) -> np.ndarray:
    """[samples, loss x samples, top-k correct counts...] of one shard's logits (float64)."""
    n = len(labels)
    if n == 0:
        return np.zeros(2 + len(topk), np.float64)
    m = summarize(np.asarray(logits), np.asarray(labels), topk, label_smoothing)
    # summarize's accuracies are count / n: round(acc * n) is the count again (exact for n < 2**52)
    counts = [round(m[k] * n) for k in metric_names(topk)]
    return np.array([n, m["loss"] * n, *counts], np.float64)


def metrics_from_sums(sums: np.ndarray, topk: Sequence[int] = (1,)) -> dict:
    """The metrics dict of ``summarize`` from summed :func:`shard_sums`."""
    n = int(round(sums[0]))
    names = metric_names(topk)
    if n == 0:
        return {"loss": float("nan"), **{k: float("nan") for k in names}, "samples": 0}
    out = {"loss": float(sums[1] / n)}
    for k, c in zip(names, sums[2:]):
        out[k] = float(c / n)
    out["samples"] = n
    return out


class ShardedEval(LastEval):
    """:class:`utils.training.evaluate.LastEval` over this rank's validation block, metrics of the whole set.

    Every rank must call it (collectives). BatchNorm buffers are averaged first, so every rank
    evaluates the same network. With ``keep_logits`` (rank 0's VisualDL logger draws prediction
    images, confidence histograms and PR curves from them) the blocks' logits are gathered in
    rank order, which is the validation set's order; ``logits`` stays None otherwise. ``tta``
    (``Eval.tta``) applies on every rank, to its block.
    """

    def __init__(self, network: paddle.nn.Layer, loader: Iterable, topk: Iterable[int] = (1,), label_smoothing: float = 0.0,
                 keep_logits: bool = False, tta: str = "none") -> None:
        super().__init__(network, loader, topk, label_smoothing, tta=tta)
        self.keep_logits = keep_logits

    def __call__(self) -> dict:
        """Every rank evaluates its block; returns the metrics of the whole validation set."""
        average_buffers(self.network)
        logits, labels = predict(self.network, self.loader, self.tta, self.on_batch)
        sums = all_reduce_sum(shard_sums(logits, labels, self.topk, self.label_smoothing))
        if self.keep_logits:
            parts = all_gather_object((logits, labels))
            if is_main():
                parts = [p for p in parts if len(p[1])]
                self.logits = np.concatenate([p[0] for p in parts]) if parts else logits
                self.labels = np.concatenate([p[1] for p in parts]) if parts else labels
        self.calls += 1
        return metrics_from_sums(sums, self.topk)
