"""The LR range test's curve: the planned LRs, the loss smoothing, the result and the suggestions.

Pure NumPy (no Paddle), so the tools can check arguments before they set the thread count and the
suggestion rules can be tested on synthetic curves. Running the sweep is :mod:`utils.studies.lr_sweep`.

The LR grows exponentially from ``start_lr`` to ``end_lr``
(``lr_i = start_lr * (end_lr / start_lr) ** (i / (num_iters - 1))``, so the ratio of consecutive
LRs is constant and the last one is exactly ``end_lr``). The losses are smoothed with a
bias-corrected exponential moving average (``avg = beta * avg + (1 - beta) * loss``,
``smoothed = avg / (1 - beta ** (i + 1))``, beta 0.98 as fastai).

Suggestions (all read from the smoothed curve, skipping the first 10% of the planned iterations,
where the average has seen few batches, and any non-finite point):

* ``min_div10``: the LR at the smoothed minimum divided by 10 (the classic rule of thumb).
* ``valley``: fastai's "valley" rule, re-implemented: the longest strictly decreasing
  subsequence of the smoothed loss, of length L ending at index e, is read as a descending
  stretch of L points ending where the descent ends; the suggestion is its middle, index
  ``e - L // 2``. (fastai takes ``start + int(L/3) + int(L/6)`` with ``start = e - L``; the same
  point to within one iteration.)
* ``steepest``: where the smoothed loss falls fastest against log(LR) (minimum of ``np.gradient``).

``valley`` and ``steepest`` only look at the curve up to the smoothed minimum: with gradient
clipping the loss can climb, wobble and fall again short of the divergence factor, and a
steepest point read in that tail would be far too high (fastai reads the whole curve).

``min_div10`` is the recommended default (:data:`RECOMMENDED`). Measured with
``bench/bench_lr_find.py`` (3-epoch budget on digits, mlp/Adam, cnn/Momentum, gmlp/AdamW), its
accuracy was 1.000, 0.997 and 1.000 of the best of a 5-point LR grid; ``steepest`` 0.991, 0.997,
1.000; ``valley`` 0.966, 0.975, 0.968. On a linear-regression toy (tests/test_lr_find.py) it stays
within 0.25-1.5x of the analytic 1/lambda_max. Why valley lands low: with 100 iterations over
8 decades, the bias-corrected moving average keeps drifting down through the flat start of the
curve, so the "longest descending stretch" begins decades before the real descent and its middle
sits too low. ``steepest`` reads one point of a noisy derivative: on mini-batch toys it sometimes
picks a spike in the flat region. The minimum of the smoothed curve lags behind the raw loss
(about 10x above the raw loss's minimum on digits, near where the raw loss starts to blow up); the
division by 10 brings it back into the stable range.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Iterable, Sequence

import numpy as np

from utils.errors import UserError

SUGGESTIONS = ("min_div10", "valley", "steepest")
RECOMMENDED = "min_div10"
DESCRIPTIONS = {
    "min_div10": "LR at the smoothed minimum / 10",
    "valley": "middle of the longest descending stretch of the smoothed loss (fastai's valley)",
    "steepest": "steepest descent of the smoothed loss against log(LR)",
}


# ----------------------------------------------------------------------------- arguments

def check_sweep_args(start_lr: float, end_lr: float, num_iters: int, diverge_factor: float = 4.0,
                     beta: float = 0.98) -> None:
    """Raise :class:`UserError` (one line) on arguments the sweep cannot run with."""
    for name, v in (("start_lr", start_lr), ("end_lr", end_lr), ("diverge_factor", diverge_factor), ("beta", beta)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"{name}: {v!r} is not a finite number")
    if isinstance(num_iters, bool) or not isinstance(num_iters, int):
        raise UserError(f"num_iters: {num_iters!r} is not an integer")
    if start_lr <= 0:
        raise UserError(f"start_lr must be > 0 (the sweep is exponential), got {start_lr:g}")
    if start_lr >= end_lr:
        raise UserError(f"start_lr {start_lr:g} must be below end_lr {end_lr:g} (the LR grows from start to end), "
                        f"e.g. --start-lr 1e-7 --end-lr 10")
    if num_iters < 10:
        raise UserError(f"num_iters must be >= 10 to give a usable curve, got {num_iters} (100 is typical)")
    if diverge_factor <= 1:
        raise UserError(f"diverge_factor must be > 1 (stop when the smoothed loss exceeds factor x its best), "
                        f"got {diverge_factor:g}")
    if not 0 <= beta < 1:
        raise UserError(f"beta (loss smoothing) must be in [0, 1), got {beta:g}")


def exp_lrs(start_lr: float, end_lr: float, num_iters: int) -> np.ndarray:
    """The planned LRs: geometric from ``start_lr`` to exactly ``end_lr`` in ``num_iters`` values."""
    i = np.arange(num_iters, dtype=np.float64)
    lrs = start_lr * (end_lr / start_lr) ** (i / (num_iters - 1))
    lrs[0], lrs[-1] = start_lr, end_lr
    return lrs


def smooth_losses(losses: Iterable[float], beta: float = 0.98) -> list[float]:
    """Bias-corrected exponential moving average of ``losses`` (fastai's smoothing)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def format_lr(lr: float) -> str:
    """Two significant digits, as YAML reads back as a float (``0.0031``, ``3.1e-05``)."""
    s = f"{lr:.2g}"
    mant, _, exp = s.partition("e")
    if "." not in mant:
        mant += ".0"
    return mant + (f"e{exp}" if exp else "")


# ----------------------------------------------------------------------------- result

@dataclasses.dataclass
class LRFindResult:
    """The recorded curve and what was read from it.

    ``lrs[i]`` is the LR of iteration i, ``losses[i]`` that batch's loss (before the update),
    ``smoothed[i]`` the bias-corrected moving average. ``suggestions`` maps
    ``steepest``/``valley``/``min_div10`` to an LR (empty when the curve is too short);
    ``indices`` gives the curve index each one was read at (``min_div10``: the index of the
    minimum). ``stop_reason`` is ``completed``, ``diverged`` or ``non-finite loss``;
    ``stop_detail`` says it in words.
    """

    lrs: list
    losses: list
    smoothed: list
    suggestions: dict
    indices: dict
    recommended: str
    stop_reason: str
    stop_detail: str
    start_lr: float
    end_lr: float
    num_iters: int
    beta: float
    diverge_factor: float
    best_loss: float
    best_lr: float
    window: tuple
    warnings: list
    seconds: float = 0.0

    @property
    def iterations(self) -> int:
        """Iterations run (fewer than ``num_iters`` after an early stop)."""
        return len(self.lrs)

    @property
    def recommended_lr(self) -> float | None:
        """The LR of the ``recommended`` suggestion, or None when the curve gave none."""
        return self.suggestions.get(self.recommended)

    def to_dict(self) -> dict:
        """Every field plus ``iterations``, ``recommended_lr`` and ``descriptions``; non-finite floats as None (valid JSON)."""
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        d = dataclasses.asdict(self)
        d["iterations"] = self.iterations
        d["recommended_lr"] = self.recommended_lr
        d["descriptions"] = {k: DESCRIPTIONS[k] for k in self.suggestions}
        return clean(d)


# ----------------------------------------------------------------------------- suggestions

def _longest_decreasing(values: Iterable[float]) -> list[int]:
    """Length of the longest strictly decreasing subsequence ending at each index (O(n log n))."""
    tails = []  # tails[k]: the largest -value that ends an increasing run (of -values) of length k+1
    out = []
    for v in values:
        k = bisect.bisect_left(tails, -v)
        if k == len(tails):
            tails.append(-v)
        else:
            tails[k] = -v
        out.append(k + 1)
    return out


def suggest_lrs(lrs: Sequence[float], smoothed: Sequence[float], num_iters: int | None = None,
                skip_start: int | None = None) -> tuple[dict[str, float], dict[str, int], tuple[int, int]]:
    """Suggestions from a curve: ``(suggestions, indices, window)``.

    The window skips the first ``skip_start`` points (default 10% of ``num_iters``; fewer when the
    curve is short) and every point after the first non-finite value. Fewer than 3 usable points
    give empty dicts.
    """
    lrs = np.asarray(lrs, np.float64)
    sm = np.asarray(smoothed, np.float64)
    n = len(sm)
    finite = np.isfinite(sm)
    end = int(np.argmin(finite)) if not finite.all() else n
    planned = num_iters or n
    s = planned // 10 if skip_start is None else int(skip_start)
    if end - s < max(3, end // 2):  # a short curve (early stop): keep more of it
        s = max(0, min(s, end - 3, end // 4))
    if end - s < 3:
        return {}, {}, (s, end)
    w_lr, w_sm = lrs[s:end], sm[s:end]
    i_min = int(np.argmin(w_sm))
    # steepest and valley look at the descending side only (up to the minimum): past it, a loss held
    # back by gradient clipping can wobble down again on its way to divergence
    down = max(i_min + 1, 3)
    grads = np.gradient(w_sm[:down], np.log10(w_lr[:down]))
    i_steep = int(np.argmin(grads))
    lds = _longest_decreasing(w_sm[:down])
    length = max(lds)
    i_end = lds.index(length)  # the first index where the longest descent ends
    i_valley = max(i_end - length // 2, 0)
    sug = {
        "min_div10": float(max(w_lr[i_min] / 10.0, lrs[0])),
        "valley": float(w_lr[i_valley]),
        "steepest": float(w_lr[i_steep]),
    }
    idx = {"min_div10": s + i_min, "valley": s + i_valley, "steepest": s + i_steep}
    return sug, idx, (s, end)


def curve_warnings(lrs: Sequence[float], suggestions: dict, indices: dict, window: tuple[int, int],
                   stop_reason: str, stop_detail: str, end_lr: float) -> list[str]:
    """What the user should know about a curve: too short, still falling at the end, never falling, clamped."""
    warnings = []
    if not suggestions:
        warnings.append(f"only {len(lrs)} iterations before the sweep stopped ({stop_detail}): too few points to "
                        f"suggest an LR; lower the start LR or raise num_iters")
    else:
        if stop_reason == "completed" and indices["min_div10"] >= len(lrs) - 2:
            warnings.append(f"the smoothed loss was still falling at end_lr {end_lr:g}: raise end_lr to see "
                            f"where it diverges")
        if indices["min_div10"] <= window[0]:
            warnings.append("the smoothed loss never fell below its early values: the sweep starts too high "
                            "(lower start_lr), or the model does not learn (check the data and labels)")
        if lrs[indices["min_div10"]] / 10.0 < lrs[0]:
            warnings.append(f"min/10 would be below start_lr: clamped to {lrs[0]:g}")
    return warnings
