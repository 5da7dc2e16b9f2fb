"""Activation statistics of one tensor, shared by both modes of the init study.

Mean, population std, min, max; the saturation of tanh/sigmoid-like units; the fractions of
exact zeros and of dead units after ReLU; histogram counts. The lecture's experiment
(:mod:`utils.studies.init_classic`) and the per-layer statistics of any model
(:mod:`utils.studies.init_study`) both read their rows from here.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import paddle

HIST_BINS = 50

SATURATING = {"Tanh": "tanh", "Sigmoid": "sigmoid", "Hardtanh": "tanh", "Hardsigmoid": "sigmoid",
              "Softsign": "tanh"}
RECTIFIERS = ("ReLU", "ReLU6")
ACTIVATION_TYPES = tuple(SATURATING) + RECTIFIERS + ("GELU", "LeakyReLU", "ELU", "SELU", "Silu", "Swish",
                                                   "Hardswish", "Mish", "Softplus", "PReLU", "CELU")


def _saturation(y: paddle.Tensor, kind: str) -> float:
    """Fraction of saturated outputs of a tanh-like (|y| > 0.99) or sigmoid-like (y < 0.01 or y > 0.99) unit."""
    # imports paddle: deferred until the thread count is set
    import paddle

    if kind == "tanh":
        sat = paddle.abs(y) > 0.99
    else:
        sat = paddle.logical_or(y < 0.01, y > 0.99)
    return float(sat.astype("float32").mean())


def _zero_stats(y: paddle.Tensor, channel_axis: int) -> tuple[float, float]:
    """(fraction of exact zeros, fraction of units that are zero for the whole batch)."""
    # imports paddle: deferred until the thread count is set
    import paddle

    zero = (y == 0)
    zero_frac = float(zero.astype("float32").mean())
    axis = channel_axis % y.ndim
    other = [a for a in range(y.ndim) if a != axis]
    dead = paddle.all(zero, axis=other) if other else zero
    return zero_frac, float(dead.astype("float32").mean())


def tensor_stats(y: paddle.Tensor, activation: str | None = None, channel_axis: int = 1) -> dict[str, float | None]:
    """Mean, std (population), min, max of ``y``; saturation or zero/dead fractions for ``activation``.

    Args:
        y: a Paddle tensor.
        activation: ``tanh``/``sigmoid`` (saturation), ``relu`` (zeros, dead units) or None.
        channel_axis: the axis of the units for the dead-unit count (1 for NCHW, -1 for tokens).
    """
    # imports paddle: deferred until the thread count is set
    import paddle

    y = y.astype("float32")
    # Population std (N), like np.std and the lecture, in float64. Not Tensor.std: it is
    # unbiased (N - 1) by default, and in paddle 3.3.1 std(unbiased=False) on float32 logs a
    # "Got different data type, run type promotion automatically" warning on every process.
    y64 = y.astype("float64")
    mean = y64.mean()
    stats = {"mean": float(mean), "std": float(paddle.sqrt(paddle.square(y64 - mean).mean())),
             "min": float(y.min()), "max": float(y.max()),
             "saturated": None, "zero_frac": None, "dead_frac": None}
    if activation in ("tanh", "sigmoid"):
        stats["saturated"] = _saturation(y, activation)
    elif activation == "relu":
        stats["zero_frac"], stats["dead_frac"] = _zero_stats(y, channel_axis)
    return stats


def histogram(values: np.ndarray, lo: float, hi: float, bins: int = HIST_BINS) -> tuple[list[int], list[float]]:
    """(counts, edges) of the finite ``values`` over [lo, hi] (their own range when lo/hi are not finite)."""
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return counts.tolist(), edges.tolist()

