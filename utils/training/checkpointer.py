"""The checkpointer: best, latest (after every epoch, and every few minutes inside one) and every-N-epochs
checkpoints, written through :class:`utils.training.checkpoint.CheckpointStore`.

A checkpoint taken inside an epoch records the step and Paddle's RNG state; :class:`ResumeMidEpoch`
makes the resumed run's first epoch skip the batches already trained (the epoch's reseed gives
the same order and augmentations) and restores that RNG state, so the dropout masks of the steps
left are those of the uninterrupted run.
"""
from __future__ import annotations

import base64
import pickle
import time
from typing import Iterable, Iterator

import paddle
from paddle.callbacks import Callback

from utils.errors import UserError
from utils.training.callbacks import BestTracker, Progress, metric_value, weights_finite
from utils.training.checkpoint import CheckpointStore


def rng_state() -> str:
    """Paddle's RNG state (all generators of the current device) as text for the ``.pdstates`` JSON."""
    return base64.b64encode(pickle.dumps(paddle.get_rng_state())).decode("ascii")


def set_rng_state(text: str) -> None:
    """Restore :func:`rng_state`'s output."""
    paddle.set_rng_state(pickle.loads(base64.b64decode(text)))


class ResumeMidEpoch:
    """The training loader, whose first pass skips ``skip`` batches and then restores the RNG state.

    Skipping means loading them: the augmentations draw from the generators the epoch start
    reseeded, so the batches after the skipped ones are the uninterrupted run's. Later passes
    are the loader's own.
    """

    def __init__(self, loader: Iterable, skip: int, rng: str | None) -> None:
        self.loader, self.skip, self.rng = loader, int(skip), rng

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> object:
        if name == "loader":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)  # batch_sampler, batch_size, ... as hapi and the add-ons expect

    def __iter__(self) -> Iterator:
        it = iter(self.loader)
        if self.skip:
            for _ in range(self.skip):
                next(it)
            if self.rng:
                set_rng_state(self.rng)
            self.skip, self.rng = 0, None
        return it


class Checkpointer(Callback):
    """Writes best / latest / every-N-epochs checkpoints; never NaN weights, never half a file.

    Args:
        store: a :class:`utils.training.checkpoint.CheckpointStore` for the run directory.
        progress: the run's :class:`Progress`.
        stateful: name -> object with ``state_dict()`` saved with every checkpoint.
        monitor, mode: metric that defines "best".
        write: False on the data-parallel ranks other than 0: they track the best metrics
            (identical on every rank) but write nothing.
    """

    def __init__(self, store: CheckpointStore, progress: Progress, stateful: dict, monitor: str = "acc", mode: str = "max",
                 save_best: bool = True, save_last: bool = True, every_epochs: int = 0, write: bool = True,
                 every_minutes: float = 0.0) -> None:
        super().__init__()
        self.every_minutes = float(every_minutes)
        self._last_save = time.time()
        self.write = write
        self.store = store
        self.progress = progress
        self.stateful = stateful
        self.monitor = monitor
        self.tracker = BestTracker(mode)
        self.save_best = save_best
        self.save_last = save_last
        self.every_epochs = every_epochs
        self.best_metrics = None

    def training_state(self, finished: bool = False) -> dict:
        """The ``.pdstates`` content: every stateful object's state, this checkpointer's, ``finished``;
        inside an epoch also Paddle's RNG state (the dropout masks of the steps left)."""
        state = {name: obj.state_dict() for name, obj in self.stateful.items()}
        state["checkpointer"] = self.state_dict()
        state["finished"] = finished
        if self.progress.mid_epoch:
            state["rng"] = rng_state()
        return state

    def _save(self, name: str, finished: bool = False) -> bool:
        if not self.write or not weights_finite(self.model.network):
            return False
        self._last_save = time.time()
        try:
            self.store.save(name, self.model.network, self.model._optimizer, self.training_state(finished))
        except OSError as e:  # a full disk, a read-only or vanished run directory
            raise UserError(f"could not write checkpoint {self.store.prefix(name)} ({e.strerror or e}): the run's other "
                            f"checkpoints are whole; free space and continue with --resume {self.store.run_dir}") from e
        return True

    def forget_best(self) -> None:
        """Forget the best value so far, so the next evaluation writes ``best_model`` (called at resume
        when ``best_model`` is damaged: ``utils.training.checkpoint.check_best``)."""
        self.tracker.best = None
        self.best_metrics = None

    def on_eval_end(self, logs: dict | None = None) -> None:
        if self.tracker.update(metric_value(logs, self.monitor, "EarlyStopping.monitor")):
            self.best_metrics = {k: v for k, v in logs.items()}
            if self.save_best:
                self._save("best_model")

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        # Checkpoint.save_every_minutes: `latest` inside a long epoch too; the resume skips the
        # batches already trained (same order, same augmentations) and restores the RNG state.
        if (self.every_minutes and self.save_last and self.progress.mid_epoch
                and time.time() - self._last_save >= 60.0 * self.every_minutes):
            self._save("latest")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        p = self.progress
        if p.epoch_step < p.steps_per_epoch:
            return  # a stopped, partial epoch: on_train_end records it
        if self.save_last:
            self._save("latest")
        if self.every_epochs and (p.epoch + 1) % self.every_epochs == 0:
            self._save(f"epoch_{p.epoch + 1}")

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.save_last:
            self._save("latest", finished=True)

    def state_dict(self) -> dict:
        return {"best": self.tracker.best, "best_metrics": self.best_metrics}

    def load_state_dict(self, state: dict) -> None:
        self.tracker.best = state["best"]
        self.best_metrics = state.get("best_metrics")
