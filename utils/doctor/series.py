"""What the rules read: the run's curves (:class:`RunSeries`), its setting (:class:`RunContext`), and
the small series helpers the rules share (interval means, smoothing, a line's change).

Plain Python data only, no Paddle: the live doctor fills a :class:`RunSeries` step by step, the
offline reader rebuilds one from a run directory, and the tests script one by hand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from utils.doctor.thresholds import LOSS_SMOOTHING

# (step, value) pairs, oldest first.
Points = list[tuple[int, float]]


@dataclass
class RunContext:
    """What the rules need to know about the run besides its curves."""

    num_classes: int = 10
    majority_rate: float | None = None  # share of the largest class in the val set; None = 1 / num_classes
    n_val: int = 0                      # val images (0 = unknown)
    dropout: float = 0.0                # largest dropout probability in the network
    augmentation: bool = False          # random train transforms
    grad_clip: str | None = None        # value | norm | global_norm | None
    clip_value: float = 1.0
    steps_per_epoch: int = 0            # 0 = unknown
    total_steps: int = 0                # planned training steps (0 = unknown)
    task: str = "classification"        # Global.task
    target_normalized: bool = True      # regression: Data.normalize_target
    target_mean: float | None = None    # regression: training targets in the units the loss sees
    target_std: float | None = None
    baseline_loss: float | None = None  # regression: loss of predicting the training mean (the "chance level")
    restart_step: int = 0               # FineTune.head_epochs: the step the body unfreezes (0 = none)

    @property
    def init_loss(self) -> float:
        """Cross-entropy of a uniform prediction, ln(num_classes): the loss expected at init.

        Regression: the loss of predicting the training targets' mean (``baseline_loss``)."""
        if self.task == "regression":
            return float(self.baseline_loss) if self.baseline_loss else 1.0
        return math.log(max(int(self.num_classes), 2))

    @property
    def chance(self) -> float:
        """The accuracy of always predicting the majority class (1 / num_classes when unknown)."""
        return self.majority_rate if self.majority_rate is not None else 1.0 / max(int(self.num_classes), 1)

    def epoch_of(self, step: int | None) -> int | None:
        """The 1-based epoch a global step falls in; None when the step or the epoch length is unknown."""
        if step is None or not self.steps_per_epoch:
            return None
        return (int(step) - 1) // int(self.steps_per_epoch) + 1

    def to_dict(self) -> dict:
        """Every field by name (the ``context`` of diagnosis.json)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class RunSeries:
    """The curves and statistics of one run, as plain Python data.

    train_loss, grad_norm, confidence: lists of (step, value). evals: dicts with step, epoch, loss,
    acc and train_loss (the mean training loss since the previous evaluation). layers: the latest
    sampled layer statistics (name, type, rms, absmax, dead), with layers_step and input_rms.
    grads: the latest sampled per-parameter gradient statistics (name, rms, ndim), with grads_step.
    batch_purity: (step, share of the most common label, batch size) of sampled training batches.
    clip: {samples, clipped}. nonfinite: where the first non-finite value came from, or None.
    finished: the run is over (False while the live doctor watches it).
    """

    train_loss: Points = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    grad_norm: Points = field(default_factory=list)
    confidence: Points = field(default_factory=list)
    batch_purity: list[tuple[int, float, int]] = field(default_factory=list)
    clip: dict = field(default_factory=dict)
    layers: list[dict] = field(default_factory=list)
    layers_step: int | None = None
    input_rms: float | None = None
    grads: list[dict] = field(default_factory=list)
    grads_step: int | None = None
    nonfinite: dict | None = None
    finished: bool = True


def series_stats(series: RunSeries) -> dict:
    """The parts of a RunSeries that only the live doctor can measure, for diagnosis.json."""
    return {"grad_norm": [[s, v] for s, v in series.grad_norm], "confidence": [[s, v] for s, v in series.confidence],
            "batch_purity": [list(p) for p in series.batch_purity],
            "clip": series.clip, "layers": series.layers, "layers_step": series.layers_step,
            "input_rms": series.input_rms, "grads": series.grads, "grads_step": series.grads_step,
            "nonfinite": series.nonfinite, "evals": series.evals}


def interval_mean(train_loss: Points, lo: int, hi: int) -> float | None:
    """Mean training loss over steps ``lo < step <= hi`` (finite values only); None if there are none."""
    vals = [v for s, v in train_loss if lo < s <= hi and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def attach_train_means(evals: list[dict], train_loss: Points) -> list[dict]:
    """Fill each evaluation's ``train_loss`` (where missing) with the mean since the previous one."""
    prev = 0
    for e in evals:
        if e.get("train_loss") is None:
            e["train_loss"] = interval_mean(train_loss, prev, e["step"])
        prev = e["step"]
    return evals


def smooth(values: list[float], beta: float = LOSS_SMOOTHING) -> list[float]:
    """The bias-corrected exponentially weighted average of ``values`` at each point."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** i))
    return out


def line_change(values: list[float]) -> tuple[float, float]:
    """(absolute, relative) change of the least-squares line over the series.

    The line's start and end are held within the range of the values, so a fitted line that
    overshoots (a loss that fell fast, then flattened: the line ends below zero) cannot report a
    change no value made: a positive series never changes by less than -100%. Relative to the
    line's start (to the mean level if that start is <= 0).
    """
    y = np.asarray(values, dtype=np.float64)
    if len(y) < 2:
        return 0.0, 0.0
    x = np.arange(len(y), dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    lo, hi = float(y.min()), float(y.max())
    start = min(max(float(intercept), lo), hi)
    end = min(max(float(intercept + slope * (len(y) - 1)), lo), hi)
    change = end - start
    level = start if start > 0 else float(np.mean(np.abs(y)))
    return change, (change / level if level > 0 else 0.0)
