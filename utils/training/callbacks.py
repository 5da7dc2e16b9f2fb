"""hapi callbacks for the training loop.

We do not give ``eval_data`` to ``Model.fit``: hapi evaluates only at epoch ends, on
0-based ``epoch % eval_freq == 0`` (so epoch 0 but not the last), and reports the last
batch's loss. :class:`PeriodicEval` validates every N epochs and/or N iterations itself and
routes the metrics to the listeners' ``on_eval_end`` — the same hook hapi would call — so
each callback below keeps one job: it decides in one method and its hooks only route.

Stateful callbacks have ``state_dict``/``load_state_dict`` so a resumed run continues exactly.
"""
from __future__ import annotations

import math
import random
import time
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import paddle
from paddle.callbacks import Callback

from utils.errors import ConfigError, check_int

if TYPE_CHECKING:
    from utils.training.optim import ClosedFormLR


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and Paddle (data order, augmentation, dropout)."""
    seed = int(seed) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def request_stop(model: paddle.Model) -> None:
    """Stop ``fit`` after the current batch.

    ``model.stop_training`` alone is read only at the end of an epoch. hapi's
    ``_run_one_epoch`` also breaks out of the batch loop when its ``num_iters`` budget hits
    zero after ``on_batch_end``; a budget of one ends the epoch right after this batch.
    """
    model.stop_training = True
    model.num_iters = 1


class Progress(Callback):
    """Global epoch and step across resumes; reseeds every RNG at each epoch start.

    Reseeding with ``seed + epoch`` makes epoch k's shuffle, augmentation and dropout
    independent of whether epochs 0..k-1 ran in this process, so a resumed run repeats
    the uninterrupted one exactly. In data parallel, rank r reseeds with
    ``seed + epoch + r * RANK_SEED_STRIDE``: its shard gets augmentations and dropout masks of its
    own (rank 0's are those of a single process); the shards themselves come from the sampler's
    epoch, the same on every rank (``utils.addons.distributed.EpochShuffle``).
    """

    RANK_SEED_STRIDE = 1_000_003

    def __init__(self, seed: int, total_epochs: int, steps_per_epoch: int, epochs_done: int = 0, global_step: int = 0,
                 rank: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.rank = rank
        self.total_epochs = total_epochs
        self.steps_per_epoch = steps_per_epoch
        self.epochs_done = epochs_done
        self.global_step = global_step
        self.epoch = epochs_done
        self.epoch_step = 0
        self.resume_step = 0  # > 0: the first epoch continues a checkpoint taken inside it, after that many steps

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = self.epochs_done
        self.epoch_step, self.resume_step = self.resume_step, 0
        seed_everything(self.seed + self.epoch + self.rank * self.RANK_SEED_STRIDE)

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        self.global_step += 1
        self.epoch_step += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.epoch_step >= self.steps_per_epoch:
            self.epochs_done = self.epoch + 1

    @property
    def is_last_epoch(self) -> bool:
        """True during the run's last epoch."""
        return self.epoch + 1 >= self.total_epochs

    @property
    def mid_epoch(self) -> bool:
        """True between two steps of an epoch (not at its start or end)."""
        return 0 < self.epoch_step < self.steps_per_epoch

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done, "global_step": self.global_step, "epoch_step": self.epoch_step}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_done = int(state["epochs_done"])
        self.global_step = int(state["global_step"])
        self.epoch = self.epochs_done
        step = int(state.get("epoch_step", 0))
        self.resume_step = step if 0 < step < self.steps_per_epoch else 0


class PeriodicEval(Callback):
    """Validate every ``every_epochs`` epochs (and after the last) and every ``every_iters`` steps.

    Args:
        evaluate_fn: callable returning a metrics dict (loss, acc, ...).
        progress: the run's :class:`Progress`.
        every_epochs: period in epochs; 0 = only after the last epoch.
        every_iters: period in iterations; 0 = off.
        listeners: callbacks whose ``on_eval_end(logs)`` receives each result.
    """

    def __init__(self, evaluate_fn: Callable[[], dict], progress: Progress, every_epochs: int = 1, every_iters: int = 0,
                 listeners: Iterable[Callback] = ()) -> None:
        super().__init__()
        if every_epochs < 0 or every_iters < 0:
            raise ConfigError("Global.eval_every_epochs and Global.eval_every_iters must be >= 0")
        self.evaluate_fn = evaluate_fn
        self.progress = progress
        self.every_epochs = every_epochs
        self.every_iters = every_iters
        self.listeners = list(listeners)
        self.last_step = None
        self.history = []

    def due_after_epoch(self) -> bool:
        """True when the epoch that just ended is one to validate after."""
        p = self.progress
        return p.is_last_epoch or bool(self.every_epochs and (p.epoch + 1) % self.every_epochs == 0)

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        if self.every_iters and self.progress.global_step % self.every_iters == 0:
            self.run()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.model.stop_training or self.due_after_epoch():
            self.run()

    def run(self) -> dict:
        """Evaluate now (once per step) and hand the metrics to the listeners; returns them."""
        if self.last_step == self.progress.global_step:
            return self.history[-1]
        t0 = time.time()
        logs = dict(self.evaluate_fn())
        logs.update(epoch=self.progress.epoch + 1, step=self.progress.global_step, eval_time=time.time() - t0)
        self.last_step = self.progress.global_step
        self.history.append(logs)
        for cb in self.listeners:
            cb.on_eval_end(logs)
        return logs

    def state_dict(self) -> dict:
        """The evaluations so far: saved with each checkpoint, so a resumed run's history is whole."""
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history") or [])


class SetEpoch(Callback):
    """Tells an epoch-aware loader (``set_epoch``, e.g. the batched loader's alternating flip) which
    epoch starts, from :class:`Progress` (so a resumed run gives the epoch it resumes, not 0).

    Place it right after ``Progress``, which sets the epoch and reseeds in its own ``on_epoch_begin``.
    """

    def __init__(self, progress: Progress, loader: object) -> None:
        super().__init__()
        self.progress = progress
        self.loader = loader

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.loader.set_epoch(self.progress.epoch)


class OnEval(Callback):
    """Calls ``fn(logs)`` after each evaluation (a listener of :class:`PeriodicEval`)."""

    def __init__(self, fn: Callable[[dict], None]) -> None:
        super().__init__()
        self.fn = fn

    def on_eval_end(self, logs: dict | None = None) -> None:
        self.fn(logs or {})


def metric_value(logs: dict, name: str, key: str) -> float:
    """``logs[name]`` as float; a ConfigError naming ``key`` and the available metrics when it is missing."""
    if name not in logs:
        available = [k for k in logs if k not in ("epoch", "step", "samples", "eval_time")]
        raise ConfigError(f"{key}: no validation metric '{name}'; available: {', '.join(available)}")
    return float(logs[name])


class BestTracker:
    """Best value so far of a metric; ``update`` says whether a value improves on it."""

    def __init__(self, mode: str = "max", min_delta: float = 0.0) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.mode = mode
        self.min_delta = min_delta
        self.best = None

    def improves(self, value: float) -> bool:
        """True when ``value`` is finite and beats the best by more than ``min_delta``."""
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float) -> bool:
        """Take ``value`` as the best when it improves on it; returns whether it did."""
        if self.improves(value):
            self.best = value
            return True
        return False


class EarlyStopping(Callback):
    """Stop when a validation metric has not improved on its best for ``patience`` evaluations.

    Args:
        monitor: validation metric name (``acc``, ``loss``, ``acc_top5``).
        mode: ``max`` or ``min``; explicit, never guessed from the name.
        patience: evaluations without improvement before stopping (0 = stop at the first).
        min_delta: an improvement must beat the best by more than this.
    """

    def __init__(self, monitor: str = "acc", mode: str = "max", patience: int = 10, min_delta: float = 0.0) -> None:
        super().__init__()
        check_int("EarlyStopping.patience", patience, 0)
        if mode not in ("min", "max"):
            raise ConfigError(f"EarlyStopping.mode must be 'min' or 'max', got {mode!r}")
        if min_delta < 0:
            raise ConfigError(f"EarlyStopping.min_delta must be >= 0, got {min_delta}")
        self.monitor = monitor
        self.patience = patience
        self.tracker = BestTracker(mode, min_delta)
        self.wait = 0
        self.best_step = None
        self.stop_reason = None

    @property
    def best(self) -> float | None:
        """Best value of the monitored metric so far (None before the first evaluation)."""
        return self.tracker.best

    def check(self, value: float, step: int | None = None) -> tuple[bool, str]:
        """Update with a new value; return (should_stop, reason)."""
        if not math.isfinite(value):
            return True, f"{self.monitor} is {value}: training diverged"
        if self.tracker.update(value):
            self.wait, self.best_step = 0, step
            return False, f"{self.monitor} improved to {value:.4f}"
        self.wait += 1
        if self.wait >= self.patience:
            return True, (f"{self.monitor} did not improve on {self.best:.4f} (step {self.best_step}) "
                          f"for {self.wait} evaluations (patience {self.patience})")
        return False, f"{self.monitor} {value:.4f} not better than {self.best:.4f} ({self.wait}/{self.patience})"

    def on_eval_end(self, logs: dict | None = None) -> None:
        stop, reason = self.check(metric_value(logs, self.monitor, "EarlyStopping.monitor"), logs.get("step"))
        if stop:
            self.stop_reason = reason
            request_stop(self.model)

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "best_step": self.best_step, "stop_reason": self.stop_reason}

    def load_state_dict(self, state: dict) -> None:
        self.tracker.best = state["best"]
        self.wait = int(state["wait"])
        self.best_step = state["best_step"]
        self.stop_reason = state.get("stop_reason")


class LRStepper(Callback):
    """Steps the LR schedule once per training iteration and feeds it each validation result."""

    def __init__(self, scheduler: ClosedFormLR) -> None:
        super().__init__()
        self.scheduler = scheduler

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        self.scheduler.step()

    def on_eval_end(self, logs: dict | None = None) -> None:
        self.scheduler.eval_step(logs)


class StopOnNaN(Callback):
    """Stop at once when the training loss is NaN or Inf (Keras' TerminateOnNaN)."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress
        self.reason = None

    def check(self, loss: float) -> tuple[bool, str]:
        """Return (should_stop, reason) for a training loss value."""
        if math.isfinite(loss):
            return False, ""
        return True, (f"training loss is {loss} at step {self.progress.global_step} (epoch {self.progress.epoch + 1}): "
                      "lower Optimizer.lr, clip gradients (Optimizer.grad_clip) or check the inputs for NaN")

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        loss = logs.get("loss") if logs else None
        if loss is None:
            return
        stop, reason = self.check(float(np.asarray(loss).reshape(-1)[0]))
        if stop:
            self.reason = reason
            request_stop(self.model)


def weights_finite(network: paddle.nn.Layer) -> bool:
    """True when every parameter of ``network`` is finite (no NaN, no Inf)."""
    return all(bool(paddle.isfinite(p).all()) for p in network.parameters())

