"""What a run prints: PaddleClas-style progress lines and the ``<run>/train.log`` copy of them.

:class:`ConsoleLogger` prints, at ``Global.verbose`` >= 1 (each line starts with a timestamp)::

    [Train][Epoch 3/30][Iter 120/352] lr: 0.05, loss: 0.4123, top1: 0.8750, batch_cost: 0.410s,
        reader_cost: 0.0020s, ips: 312.2 samples/s, eta: 1:12:40 (epoch 0:01:35)
    [Train][Epoch 3/30][Avg] loss: 0.4301, top1: 0.8650, batch_cost: 0.405s, reader_cost: 0.0021s,
        ips: 316.0 samples/s, epoch_time: 0:02:23
    [Eval][Epoch 3/30] evaluating 5,000 samples ...
    [Eval][Epoch 3/30][Iter 10/20] batch_cost: 0.650s, ips: 393.8 samples/s, eta: 0:00:07
    [Eval][Epoch 3/30] loss: 0.3012, top1: 0.9012, best top1: 0.9012 (epoch 3), eval_cost: 13.2s

A ``[Train]`` line every ``Global.log_every_iters`` steps of an epoch: loss and top1 are means over
the steps since the previous line (hapi's ``acc`` is a running average over the epoch; the window's
own accuracy is recovered from two running averages and their sample counts). ``reader_cost`` is the
time a step waited for its batch, ``batch_cost`` the whole step (reader included), both window means
with evaluations taken out. The ``[Avg]`` line closes every epoch, however short. ``eta`` is the
run's: wall time per step in this process (evaluations included once some have run) times the steps
left; in parentheses the epoch's.

An evaluation that runs longer than ``EVAL_PROGRESS_EVERY_S`` gets ``[Eval][Iter]`` lines (at most
one per period, none for a shorter one) from :class:`EvalProgress`, the progress hook of
:func:`utils.training.evaluate.predict`: its batches, ``batch_cost`` and ``ips`` are the pass's
means so far, ``eta`` the pass's batches left at that mean.
"""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
from paddle.callbacks import Callback

from utils.training.callbacks import Progress

# Logged keys that are not metrics of the batch.
NOT_METRICS = ("loss", "batch_size", "step", "epoch", "samples", "eval_time")
# PaddleClas' names for hapi's accuracy metrics (the config still calls them acc / acc_top5).
DISPLAY = {"acc": "top1", "acc_top5": "top5"}
# An evaluation announces itself ("evaluating N samples ...") when it is the first one of the
# process or the one before took at least this long: a 5,000-image eval takes 13-43 s on 2 cores.
ANNOUNCE_AFTER_S = 5.0
# Progress lines of a running evaluation: the first after this long, then at most one per period.
# With Eval.tta flip_translate (6 forward passes) that 5,000-image eval takes ~1.3-4.3 minutes.
EVAL_PROGRESS_EVERY_S = 5.0


def hms(seconds: float) -> str:
    """``h:mm:ss`` of a duration (negative and non-finite values as ``0:00:00`` / ``?``)."""
    if not np.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def display_name(key: str) -> str:
    """How a metric is named on the console (``acc`` -> ``top1``)."""
    return DISPLAY.get(key, key)


class Window:
    """Sums over a stretch of steps: loss, step and reader time, samples, running-metric marks."""

    def __init__(self, marks: dict[str, tuple[float, int]] | None = None) -> None:
        self.steps = 0
        self.loss = 0.0
        self.batch = 0.0
        self.reader = 0.0
        self.samples = 0
        self.marks = dict(marks or {})  # metric -> (running value, epoch samples) at the window's start

    def add(self, loss: float, batch: float, reader: float, samples: int) -> None:
        self.steps += 1
        self.loss += loss
        self.batch += batch
        self.reader += reader
        self.samples += samples

    def metrics(self, running: dict[str, float], seen: int) -> dict[str, float]:
        """Each running-average metric over this window's samples (``seen``: the epoch's samples so far)."""
        out = {}
        for k, v in running.items():
            a0, n0 = self.marks.get(k, (0.0, 0))
            out[k] = (v * seen - a0 * n0) / (seen - n0) if seen > n0 else v
        return out

    def fields(self, running: dict[str, float], seen: int) -> str:
        """``loss: ..., top1: ..., batch_cost: ..., reader_cost: ..., ips: ...`` of this window."""
        n = max(self.steps, 1)
        parts = [f"loss: {self.loss / n:.4f}"]
        parts += [f"{display_name(k)}: {v:.4f}" for k, v in self.metrics(running, seen).items()]
        ips = self.samples / self.batch if self.batch > 0 else float("nan")
        parts += [f"batch_cost: {self.batch / n:.3f}s", f"reader_cost: {self.reader / n:.4f}s", f"ips: {ips:.1f} samples/s"]
        return ", ".join(parts)


class ConsoleLogger(Callback):
    """``[Train]`` lines every ``log_every`` steps of an epoch, ``[Avg]`` at each epoch end, ``[Eval]`` lines.

    Args:
        progress: the run's :class:`Progress` (epoch, step, totals).
        lr_fn: the current learning rate.
        log_every: ``Global.log_every_iters``.
        verbose: ``Global.verbose``; 0 prints nothing.
        print_fn: where lines go.
        monitor: the metric whose best is shown on ``[Eval]`` lines (``EarlyStopping.monitor``).
        best_fn: the best evaluation's metrics so far (None before one); read after each evaluation.
        clock: monotonic seconds (durations); wall: epoch seconds (timestamps). Tests pass fakes.
    """

    def __init__(self, progress: Progress, lr_fn: Callable[[], float], log_every: int = 20, verbose: int = 1,
                 print_fn: Callable[..., None] = print, monitor: str = "acc",
                 best_fn: Callable[[], dict | None] = lambda: None, clock: Callable[[], float] = time.perf_counter,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.progress = progress
        self.lr_fn = lr_fn
        self.log_every = max(1, log_every)
        self.verbose = verbose
        self.print = print_fn
        self.monitor = monitor
        self.best_fn = best_fn
        self.clock = clock
        self.wall = wall
        self.last_eval_s = None
        self._t_train = None  # clock at on_train_begin
        self._steps_here = 0  # steps run in this process
        self._paused = 0.0  # evaluation time inside the current step, taken out of its batch_cost

    # ------------------------------------------------------------------ output
    def say(self, text: str) -> None:
        """Print one timestamped line (nothing at verbose 0)."""
        if self.verbose:
            stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(self.wall()))
            self.print(f"[{stamp}] {text}")

    def tag(self) -> str:
        p = self.progress
        return f"[Epoch {p.epoch + 1}/{p.total_epochs}]"

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, logs: dict | None = None) -> None:
        self._t_train, self._steps_here = self.clock(), 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        now = self.clock()
        if self._t_train is None:
            self._t_train = now
        self._t_epoch = self._t_prev = self._t_begin = now
        self._paused = 0.0  # an evaluation after the last epoch's end is behind this epoch's clock
        self._epoch_train = 0.0
        self._epoch_steps = 0
        self._seen = 0
        self._running: dict[str, float] = {}
        self._window, self._epoch = Window(), Window()
        self._avg_done = False

    def on_train_batch_begin(self, step: int, logs: dict | None = None) -> None:
        self._t_begin = self.clock()

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        logs = logs or {}
        now = self.clock()
        reader = max(self._t_begin - self._t_prev, 0.0)  # an evaluation in this step came after its batch
        batch = max(now - self._t_prev - self._paused, 0.0)
        self._t_prev, self._paused = now, 0.0
        samples = int(logs.get("batch_size", 0))
        loss = float(np.asarray(logs.get("loss", np.nan), dtype=np.float64).reshape(-1)[0])
        for w in (self._window, self._epoch):
            w.add(loss, batch, reader, samples)
        self._seen += samples
        self._running = {k: float(v) for k, v in logs.items()
                         if k not in NOT_METRICS and np.ndim(v) == 0 and isinstance(v, (int, float, np.floating))}
        self._epoch_train += batch
        self._epoch_steps += 1
        self._steps_here += 1
        p = self.progress
        if p.epoch_step % self.log_every == 0:
            self.say(f"[Train]{self.tag()}[Iter {p.epoch_step}/{p.steps_per_epoch}] lr: {self.lr_fn():.6g}, "
                     f"{self._window.fields(self._running, self._seen)}, eta: {self.eta(now)}")
            self._window = Window({k: (v, self._seen) for k, v in self._running.items()})
        if p.epoch_step >= p.steps_per_epoch:  # before the epoch-end evaluation prints
            self.epoch_summary()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_summary()  # an epoch cut short (early stop, a stop request) still gets its line

    def on_eval_end(self, logs: dict | None = None) -> None:
        logs = logs or {}
        spent = float(logs.get("eval_time", 0.0))
        self.last_eval_s = spent
        self._paused += spent  # an evaluation inside a step is not that step's training time
        p = self.progress
        where = self.tag()
        if 0 < p.epoch_step < p.steps_per_epoch:
            where += f"[Iter {p.epoch_step}/{p.steps_per_epoch}]"
        shown = [f"{display_name(k)}: {float(v):.4f}" for k, v in logs.items()
                 if (k not in NOT_METRICS or k == "loss") and isinstance(v, (int, float, np.number))]
        best = self.best_fn()
        if best and self.monitor in best:
            shown.append(f"best {display_name(self.monitor)}: {float(best[self.monitor]):.4f} (epoch {best.get('epoch')})")
        self.say(f"[Eval]{where} {', '.join(shown)}, eval_cost: {spent:.1f}s")

    # ------------------------------------------------------------------ parts
    def epoch_summary(self) -> None:
        """The ``[Avg]`` line of the epoch (once)."""
        if self._avg_done or not self._epoch_steps:
            return
        self._avg_done = True
        # the epoch's window starts with no marks: its metrics are the running (epoch) averages
        self.say(f"[Train]{self.tag()}[Avg] {self._epoch.fields(self._running, self._seen)}, "
                 f"epoch_time: {hms(self.clock() - self._t_epoch)}")

    def eta(self, now: float) -> str:
        """``h:mm:ss`` left in the run, and in parentheses in the epoch."""
        p = self.progress
        left_run = p.total_epochs * p.steps_per_epoch - p.global_step
        per_step = (now - self._t_train) / max(self._steps_here, 1)
        left_epoch = p.steps_per_epoch - p.epoch_step
        epoch_step_s = self._epoch_train / max(self._epoch_steps, 1)
        return f"{hms(per_step * left_run)} (epoch {hms(epoch_step_s * left_epoch)})"

    def announce(self, eval_fn: Callable[[], dict], samples: int, source: object = None) -> Callable[[], dict]:
        """``eval_fn`` that first prints ``[Eval] evaluating N samples ...`` when it may take a while.

        ``source``: the evaluation pass (:class:`~utils.training.evaluate.LastEval`); while ``eval_fn``
        runs, its ``on_batch`` hook is an :class:`EvalProgress` printing this logger's progress lines.
        """
        def evaluate() -> dict:
            if self.last_eval_s is None or self.last_eval_s >= ANNOUNCE_AFTER_S:
                tta = getattr(source, "tta", "none")
                with_tta = f" with test-time augmentation {tta}" if tta != "none" else ""
                self.say(f"[Eval]{self.tag()} evaluating {samples:,} samples{with_tta} ...")
            if source is None:
                return eval_fn()
            source.on_batch = EvalProgress(self.say, self.tag(), self.clock)
            try:
                return eval_fn()
            finally:
                source.on_batch = None
        return evaluate


class EvalProgress:
    """``on_batch(done, total, samples)`` hook of ``predict``: ``[Eval][Iter done/total]`` lines of a long evaluation.

    The first line comes ``every`` seconds after the evaluation started, then at most one per
    ``every`` seconds; none at the last batch (the result line follows). An evaluation of several
    passes (EMA evaluates the averaged weights, then the raw ones) shows each pass's own counts.

    Args:
        say: prints one line (:meth:`ConsoleLogger.say`: timestamped, to train.log too).
        tag: ``[Epoch e/E]``.
        clock: monotonic seconds; tests pass a scripted one.
    """

    def __init__(self, say: Callable[[str], None], tag: str, clock: Callable[[], float] = time.perf_counter,
                 every: float = EVAL_PROGRESS_EVERY_S) -> None:
        self.say = say
        self.tag = tag
        self.clock = clock
        self.every = every
        self.t_last_line = self.t_pass = self.t_prev = clock()
        self.prev_done = 0

    def __call__(self, done: int, total: int | None, samples: int) -> None:
        now = self.clock()
        if done <= self.prev_done:  # a new pass began where the previous one's last batch ended
            self.t_pass = self.t_prev
        self.prev_done, self.t_prev = done, now
        if now - self.t_last_line < self.every or (total is not None and done >= total):
            return
        self.t_last_line = now
        spent = max(now - self.t_pass, 1e-9)
        batch_cost = spent / max(done, 1)
        where = f"[Iter {done}/{total}]" if total is not None else f"[Iter {done}]"
        eta = f", eta: {hms(batch_cost * (total - done))}" if total is not None else ""
        self.say(f"[Eval]{self.tag}{where} batch_cost: {batch_cost:.3f}s, ips: {samples / spent:.1f} samples/s{eta}")


class RunLog:
    """A ``print_fn`` that also appends every line to ``<run dir>/train.log``.

    Lines printed before the run directory is known (``dir_fn()`` returns None) are kept and
    written when it is. A failed write is reported once through the wrapped ``print_fn`` and the
    file is left alone from then on: the run goes on.
    """

    NAME = "train.log"

    def __init__(self, print_fn: Callable[..., None], dir_fn: Callable[[], str | None] = lambda: None) -> None:
        self.print_fn = print_fn
        self.dir_fn = dir_fn
        self.pending: list[str] = []
        self.failed = False

    def __call__(self, *args, **kwargs) -> None:
        if not self.failed:
            self.pending.append(kwargs.get("sep", " ").join(map(str, args)))
            self.flush()
        self.print_fn(*args, **kwargs)

    def flush(self) -> None:
        """Append the kept lines to the run's train.log once its directory is known."""
        run_dir = self.dir_fn()
        if self.failed or not run_dir or not self.pending:
            return
        path = os.path.join(run_dir, self.NAME)
        try:
            # opened per write: nothing to close on any exit path; ~20 us a line, one line per log period
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in self.pending))
        except Exception as e:  # a full disk or a read-only directory: the run goes on without its log
            self.failed = True
            self.print_fn(f"warning: could not write {path} ({type(e).__name__}: {e}); train.log is off for this run")
        self.pending = []
