"""What the tuner prints while a study runs: one line per trial, or every trial's training log.

By default a trial is one line: ``[k/N] trial 3 COMPLETE acc 0.9361 [params] 46 steps 1.8s; best ...;
12s elapsed, ~24s left``. The trainer's own lines (about 10 per epoch) are kept in memory: a
failed trial prints its last ones under its line, and on a terminal the running trial's latest
line is shown in place on one status line, erased when the trial ends. ``verbose`` prints every
trainer line, indented, as a training run would.
"""
from __future__ import annotations

import collections
import shutil
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from utils.tune.results import format_value

if TYPE_CHECKING:
    import optuna

# Lines of a failed trial's training log shown under its line: the traceback's tail or the
# last epochs (a trainer prints ~10 lines per epoch at Global.verbose 1).
FAIL_TAIL = 12


def trial_line(study: optuna.Study, t: optuna.trial.FrozenTrial, monitor: str) -> str:
    """One console line per finished trial: number, state, result, parameters, steps, time, best so far."""
    attrs = t.user_attrs
    params = " ".join(f"{k}={format_value(v)}" for k, v in attrs.get("config_params", t.params).items())
    head = f"trial {t.number} {t.state.name}"
    if t.state.name == "COMPLETE":
        head += f" {monitor} {t.value:.4f}"
    elif attrs.get("fail_reason"):
        head += f": {attrs['fail_reason']}"
    try:
        best = study.best_trial
        tail = f"; best {best.value:.4f} (trial {best.number})"
    except ValueError:
        tail = ""
    secs = t.duration.total_seconds() if t.duration else 0.0
    return f"{head} [{params}] {attrs.get('steps', 0)} steps {secs:.1f}s{tail}"


def _duration(secs: float) -> str:
    if secs < 90:
        return f"{secs:.0f}s"
    if secs < 5400:
        return f"{secs / 60:.0f}min"
    return f"{secs / 3600:.1f}h"


class TrialConsole:
    """Prints the tuner's per-trial lines and routes the trainer's lines (see the module doc).

    Args:
        print_fn: where lines go.
        total: trials this process will run (the ``N`` of ``[k/N]``).
        monitor: the metric named in the trial lines.
        verbose: print every trainer line, indented, instead of keeping them.
        live: a terminal stream for the one-line status of the running trial (None: no status line).
    """

    def __init__(self, print_fn: Callable[..., Any], total: int, monitor: str, verbose: bool = False,
                 live: TextIO | None = None) -> None:
        self.print = print_fn
        self.total = total
        self.monitor = monitor
        self.verbose = verbose
        self.live = live
        self.done = 0
        self.number: int | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=FAIL_TAIL)
        self.start = time.monotonic()
        self._shown = False

    def trial_started(self, number: int) -> None:
        """A trial begins: forget the previous one's lines."""
        self.number = number
        self.lines.clear()

    def train_line(self, *args: Any, **_: Any) -> None:
        """The trainer's ``print_fn``."""
        text = " ".join(str(a) for a in args)
        if self.verbose:
            self.print("    " + text)
            return
        self.lines.extend(text.splitlines() or [""])
        if self.live is not None:
            width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
            status = f"[{self.done + 1}/{self.total}] trial {self.number}: {self.lines[-1].strip()}"
            self._write_live("\r" + status[:width] + "\x1b[K")

    def trial_finished(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna's callback: the trial's line with the progress, and a failed trial's last lines."""
        self._write_live("\r\x1b[K")
        self.done += 1
        elapsed = time.monotonic() - self.start
        progress = f"{_duration(elapsed)} elapsed"
        if self.done < self.total:
            progress += f", ~{_duration(elapsed / self.done * (self.total - self.done))} left"
        self.print(f"[{self.done}/{self.total}] {trial_line(study, trial, self.monitor)}; {progress}")
        if not self.verbose and trial.state.name == "FAIL":
            for line in self.lines:
                self.print("    " + line)
        self.lines.clear()

    def _write_live(self, text: str) -> None:
        if self.live is None or (not self._shown and text == "\r\x1b[K"):
            return
        try:
            self.live.write(text)
            self.live.flush()
            self._shown = text != "\r\x1b[K"
        except (OSError, ValueError):  # a closed or broken terminal: drop the status line, keep the study
            self.live = None


def terminal() -> TextIO | None:
    """sys.stdout when it is a terminal (for the status line), else None."""
    try:
        return sys.stdout if sys.stdout.isatty() else None
    except (AttributeError, ValueError):
        return None
