"""The one shape in which optional parts plug into the training spine (``utils/trainer.py``).

An add-on (EMA, mixed precision, the doctor, fine-tuning, data parallel) is an :class:`AddOn`:
the spine asks each enabled one at four fixed points of a run and never names them otherwise.
Hooks are called in the order of the spine's ``ADDONS`` tuple; all are optional.

1. ``setup(run)``: the network is built, the optimizer not yet (fine-tuning freezes and sets
   LR multipliers here, before the optimizer sees the parameters).
2. ``prepare(run) -> dict``: optimizer, run directory and resumed weights exist; the returned
   keywords go to ``paddle.Model.prepare`` (mixed precision's ``amp_configs``).
3. ``callbacks(run) -> {slot: [callback, ...]}``: the checkpointer, the evaluation and the
   logger exist; an add-on may wrap ``run.eval_fn`` or replace ``run.checkpointer`` here and put
   objects to checkpoint in ``run.stateful``. The slots say where a callback runs among the
   spine's own (see :data:`SLOTS`).
4. ``finish(run, metrics)``: after ``fit`` and the restore of the best weights, before
   ``metrics.json`` is written.

``stop_reason()`` says why the add-on stopped the run (None if it did not).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

# Where an add-on's callbacks run in the list the spine hands to ``fit``:
#   first   right after Progress, before anything reads the step's loss (data parallel's loss sync)
#   step    each training step, after the NaN guard, before the evaluation (the weight average)
#   listen  listeners: they also receive every evaluation's metrics (doctor, two-stage fine-tuning)
#   last    after every callback that may ask to stop (data parallel's stop agreement)
SLOTS = ("first", "step", "listen", "last")


@dataclasses.dataclass
class TrainRun:
    """What the spine knows about the run in progress; phases fill it in order, add-ons read it."""

    cfg: dict
    print_fn: Callable[..., None]       # quiet on ranks other than 0
    rank_print: Callable[..., None] = print  # prints on every rank (the closing digest line)
    device: str = "cpu"
    rank: int = 0
    world: int = 1
    resume: str | None = None          # checkpoint prefix resumed from
    state: dict = dataclasses.field(default_factory=dict)  # that checkpoint's .pdstates
    bundle: Any = None
    train_loader: Any = None
    val_loader: Any = None
    steps_per_epoch: int = 0
    network: Any = None
    summary: dict = dataclasses.field(default_factory=dict)
    scheduler: Any = None
    optimizer: Any = None
    loss_fn: Any = None
    run_dir: str | None = None
    store: Any = None
    model: Any = None
    progress: Any = None
    stateful: dict = dataclasses.field(default_factory=dict)  # name -> object saved with every checkpoint
    checkpointer: Any = None
    eval_source: Any = None            # the evaluation pass itself (keeps its logits for the logger)
    eval_fn: Callable[[], dict] | None = None  # what PeriodicEval calls; add-ons may wrap it
    writer: Any = None                 # the VisualDL LogWriter (rank 0, VisualDL.enable)
    t_start: float = 0.0
    fit_time: float = 0.0
    lock: Any = None                   # the run directory's RunLock (rank 0)
    finishing: bool = False            # resumed only to write the final metrics of a run that ended
    evaluator: Any = None              # the PeriodicEval: its history is the run's evaluations
    stoppers: list = dataclasses.field(default_factory=list)  # (name, reason_fn): why the run stopped, in order
    local_stop_reason: Callable[[], str | None] = lambda: None  # this rank's reason to stop, set by the spine

    @property
    def main(self) -> bool:
        """Rank 0: the process that prints and writes the run directory."""
        return self.rank == 0


class AddOn:
    """Base of the add-ons; override the hooks you need (see the module docstring)."""

    name = "addon"

    @classmethod
    def create(cls, run: TrainRun) -> AddOn | None:
        """The add-on for this run, or None when its config section leaves it off."""
        return cls()

    def setup(self, run: TrainRun) -> None:
        """The network is built; the optimizer is not."""

    def prepare(self, run: TrainRun) -> dict:
        """Extra keyword arguments for ``paddle.Model.prepare``."""
        return {}

    def callbacks(self, run: TrainRun) -> dict[str, list]:
        """``{slot: [callbacks]}`` with slots from :data:`SLOTS`."""
        return {}

    def stop_reason(self) -> str | None:
        """Why this add-on stopped the run, or None."""
        return None

    def finish(self, run: TrainRun, metrics: dict) -> None:
        """Add to ``metrics`` (written to metrics.json after this) and print a closing line."""
