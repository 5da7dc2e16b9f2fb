"""The trial callback: :class:`TrialReporter` reports each validation to Optuna and prunes.

It runs inside an ordinary training run (a hapi callback), so this module imports paddle;
:func:`failure_reason` then decides whether the finished run counts as failed.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from paddle.callbacks import Callback

from utils.errors import ConfigError
from utils.training.callbacks import request_stop

if TYPE_CHECKING:
    import optuna


class TrialReporter(Callback):
    """hapi callback: reports each validation's monitored metric to an Optuna trial; prunes.

    Added to the run with ``train(cfg, callbacks=[reporter])``, it gets ``on_eval_end(logs)``
    after every validation. It reports ``logs[monitor]`` at step k (the k-th validation) and,
    when ``trial.should_prune()``, stops training after the current batch
    (:func:`utils.training.callbacks.request_stop`) and records where; the tuner then raises
    ``optuna.TrialPruned``. It also counts training steps and notes a non-finite loss or metric.

    Args:
        trial: an ``optuna.Trial`` (or anything with ``report`` and ``should_prune``).
        monitor: validation metric name (``EarlyStopping.monitor``).
    """

    def __init__(self, trial: optuna.Trial, monitor: str = "acc") -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.evals = 0
        self.steps = 0
        self.last = None
        self.pruned_at = None
        self.nonfinite = None

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        """Count the step; note the first non-finite training loss."""
        self.steps += 1
        loss = (logs or {}).get("loss")
        if loss is not None and self.nonfinite is None:
            value = float(np.asarray(loss).reshape(-1)[0])
            if not math.isfinite(value):
                self.nonfinite = f"training loss is {value} at step {self.steps}"

    def on_eval_end(self, logs: dict | None = None) -> None:
        """Report the monitored metric at the k-th validation; stop the run when the pruner says so."""
        logs = logs or {}
        if self.monitor not in logs:
            available = [k for k in logs if k not in ("epoch", "step", "samples", "eval_time")]
            raise ConfigError(f"EarlyStopping.monitor: no validation metric '{self.monitor}' to tune on; "
                              f"available: {', '.join(available)}")
        self.evals += 1
        value = float(logs[self.monitor])
        if not math.isfinite(value):
            # Optuna's pruners would treat NaN as "prune"; a diverged run is a failure, not a pruning.
            self.nonfinite = self.nonfinite or f"validation {self.monitor} is {value} at step {logs.get('step')}"
            request_stop(self.model)
            return
        self.last = value
        self.trial.report(value, self.evals)
        if self.trial.should_prune():
            self.pruned_at = {"eval": self.evals, "step": logs.get("step"), "epoch": logs.get("epoch"), "value": value}
            request_stop(self.model)


class TrialFailed(Exception):
    """A trial that diverged or failed on a user error; the study records FAIL and goes on."""


def failure_reason(metrics: dict[str, Any], reporter: TrialReporter) -> str | None:
    """Why a finished run counts as failed (None = it did not): NaN/Inf, or no validation result."""
    reason = metrics.get("stop_reason")
    if reporter.nonfinite:
        return reason or reporter.nonfinite
    if reason and str(reason).startswith("doctor:"):
        return reason  # the doctor stops on a non-finite input, gradient or weight
    if not metrics.get("best"):
        return reason or "no validation result (is there a validation set?)"
    return None
