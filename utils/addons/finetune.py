"""Fine-tuning: pretrained weights by name and shape, freezing by parameter name, per-parameter
learning-rate multipliers and a two-stage schedule (the head first, then the body at a lower rate).

Config: ``Global.pretrained_model`` and the ``FineTune`` section (configs/README.md). The trainer
asks the :class:`FineTune` add-on right after building the network: :func:`setup_finetune`
loads, freezes and sets the multipliers, and the two-stage callback it returns joins the listeners.

Which parameters a pattern names, freezing and LR multipliers: ``utils/addons/finetune_plan.py``.

Paddle 3.3.1 behaviour this relies on (tests/test_finetune.py checks each):

* hapi rejects optimizer parameter groups, so per-parameter rates go through
  ``param.optimize_attr['learning_rate']`` (what ``ParamAttr(learning_rate=m)`` sets). The
  optimizer reads it at every step (``Optimizer._create_param_lr``), so a change takes effect at
  the next step. SGD moves by exactly lr * m * grad; Momentum, Adam and AdamW scale their update
  by m; L2 regularisation and AdamW's decoupled decay scale by m too, so m = 0 moves nothing.
* ``param.stop_gradient = True`` freezes: no gradient, so the parameter is not among the
  optimizer's (param, grad) pairs: no update, no weight decay, bit-identical. The optimizer keeps
  the parameter list it was built with, so a parameter unfrozen later trains from the next step
  (its velocity / moments are created then).
* BatchNorm's running mean/var change in every training-mode forward, frozen or not. hapi calls
  ``network.train()`` before every batch, so a layer put in eval mode by a callback is back in
  train mode at once; ``layer._use_global_stats = True`` (the constructor's ``use_global_stats``)
  normalises with the running statistics and leaves them untouched, in train mode too.
* ``paddle.DataParallel`` (hapi wraps the network in it when several processes train) all-reduces
  only the parameters that were trainable when it was built, i.e. at ``Model.prepare``. The
  two-stage schedule in a multi-process run therefore holds the body with multiplier 0 during the
  first stage instead of stop_gradient (no movement either; gradients are computed and synced).
"""
from __future__ import annotations

from typing import Callable, Iterable

import paddle
from paddle.callbacks import Callback

from models.pretrained import LoadReport, load_matching
from utils.addons.finetune_plan import FineTunePlan, create_accumulators, select
from utils.errors import ConfigError
from utils.training.addon import AddOn, TrainRun


def _names(names: Iterable[str], n: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


class TwoStage(Callback):
    """Applies the plan's stage at every epoch start: head only before ``head_epochs``, then the body.

    The stage is a function of the global epoch (``start_epoch`` + hapi's epoch index), so a run
    resumed before, at or after the switch is in the right stage with nothing else restored.
    ``state_dict`` reports it (``stage``, ``epochs_done``); ``load_state_dict`` resumes from it.
    """

    def __init__(self, plan: FineTunePlan, start_epoch: int = 0, print_fn: Callable[..., None] = print, verbose: int = 1,
                 epochs: int | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.epochs = epochs  # total epochs: a body that never unfreezes (linear probe) gets no accumulators
        self.start_epoch = int(start_epoch)
        self.epochs_done = self.start_epoch
        self.print = print_fn
        self.verbose = verbose
        self.switch_epoch = None  # 1-based epoch at which this process unfroze the body

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.plan.apply(self.plan.stage_for(self.epochs_done))
        optimizer = getattr(self.model, "_optimizer", None) if self.model is not None else None
        if optimizer is not None:
            probe = self.epochs is not None and self.plan.head_epochs >= self.epochs
            skip = self.plan.frozen | (set(self.plan.body) if probe else set())
            create_accumulators(optimizer, [p for n, p in self.plan.params if n not in skip])

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        g = self.start_epoch + epoch
        stage = self.plan.stage_for(g)
        if stage != self.plan.stage:
            self.plan.apply(stage)
            if stage == 2:
                self.switch_epoch = g + 1
                if self.verbose:
                    self.print(f"fine-tune: epoch {g + 1}: stage 2, the body trains too "
                               f"({len(self.plan.body)} tensors at lr x{self.plan.body_lr_mult:g})")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs_done = self.start_epoch + epoch + 1

    def state_dict(self) -> dict:
        return {"stage": self.plan.stage, "epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict) -> None:
        self.start_epoch = self.epochs_done = int(state["epochs_done"])
        self.plan.apply(self.plan.stage_for(self.start_epoch))


# ----------------------------------------------------------------------------- the trainer's entry

def _report(report: LoadReport, label: str, print_fn: Callable[..., None], verbose: int) -> None:
    if verbose >= 1:
        print_fn(report.summary(label))
    if verbose >= 2:
        for line in report.details():
            print_fn(line)


def require_trainable(plan: FineTunePlan, ft: dict) -> None:
    """ConfigError (one line) when ``FineTune.freeze`` / ``lr_mult`` leave nothing to train: such a run would
    spend every epoch computing a loss that no update can change."""
    if len(plan.frozen) < len(plan.params):
        return
    keys = [f"FineTune.{k}={ft[k]}" for k in ("freeze", "lr_mult") if ft.get(k)]
    raise ConfigError(f"{' and '.join(keys)} froze all {len(plan.params)} trainable tensors of the model: "
                      f"zero trainable parameters, nothing would learn. Leave at least the head trainable "
                      f"(e.g. FineTune.freeze=[{_first_pattern(plan)}]), or use FineTune.head_epochs for a head-first run")


def _first_pattern(plan: FineTunePlan) -> str:
    """A pattern freezing the first layer's tensors only (the example in the zero-trainable error)."""
    first = plan.params[0][0]
    return first.rsplit(".", 1)[0] + ".*" if "." in first else first


def setup_finetune(cfg: dict, network: paddle.nn.Layer, print_fn: Callable[..., None] = print,
                   resume_state: dict | None = None) -> TwoStage | None:
    """Pretrained weights and the ``FineTune`` section, applied to ``network`` before the optimizer is built.

    * ``Arch.pretrained`` (loaded by the model factory): its report is printed.
    * ``Global.pretrained_model``: loaded by name and shape (not on resume: the checkpoint has
      the weights), minus ``FineTune.pretrained_exclude``; one summary line, details at verbose 2.
    * ``freeze``, ``lr_mult``, ``head_epochs``: a :class:`FineTunePlan` applied for the current
      epoch (``resume_state``'s progress on resume).

    Returns:
        A :class:`TwoStage` callback when ``head_epochs`` > 0, else None.
    """
    g, ft = cfg["Global"], cfg["FineTune"]
    verbose = g["verbose"]
    resume = resume_state is not None
    reports = []
    arch_report = getattr(network, "pretrained_report", None)
    if arch_report is not None:
        reports.append(arch_report)
        if not resume:
            _report(arch_report, "Arch.pretrained", print_fn, verbose)

    exclude = ft["pretrained_exclude"] or []
    if exclude and not g["pretrained_model"]:
        raise ConfigError("FineTune.pretrained_exclude is set but Global.pretrained_model is not: "
                          "it says what not to load from that file")
    # On resume the checkpoint has the weights; the file is only read again when the default head
    # of the two-stage schedule needs to know what it did not provide.
    if g["pretrained_model"] and (not resume or (ft["head_epochs"] > 0 and ft["head"] is None)):
        excluded = set(select(exclude, list(network.state_dict()), "FineTune.pretrained_exclude"))
        report = load_matching(network, g["pretrained_model"], exclude=excluded.__contains__, apply=not resume)
        reports.append(report)
        if not resume:
            _report(report, "pretrained", print_fn, verbose)

    if not (ft["freeze"] or ft["lr_mult"] or ft["head_epochs"] > 0):
        return None
    not_loaded = set.intersection(*(set(r.not_loaded) for r in reports)) if reports else set()
    plan = FineTunePlan(network, ft["freeze"] or [], ft["lr_mult"] or {}, ft["head_epochs"], ft["head"],
                        ft["body_lr_mult"], ft["freeze_bn"], not_loaded,
                        hold_with_zero_lr=paddle.distributed.get_world_size() > 1)
    require_trainable(plan, ft)
    start = int((resume_state or {}).get("progress", {}).get("epochs_done", 0))
    plan.apply(plan.stage_for(start))

    if verbose >= 1:
        if plan.frozen:
            print_fn(f"fine-tune: {len(plan.frozen)} tensors frozen for the whole run "
                     f"({_names(n for n, _ in plan.params if n in plan.frozen)})")
        if plan.mult:
            per = {}
            for n, m in plan.mult.items():
                per[m] = per.get(m, 0) + 1
            print_fn("fine-tune: lr multipliers " + ", ".join(f"x{m:g} on {k} tensors" for m, k in per.items())
                     + " (first matching pattern wins; others x1)")
        if plan.head_epochs > 0:
            epochs = g["epochs"]
            tail = (f"from epoch {plan.head_epochs + 1} the body trains too, at lr x{plan.body_lr_mult:g}"
                    if plan.head_epochs < epochs else
                    f"the body stays frozen for all {epochs} epochs (head_epochs >= Global.epochs: a linear probe)")
            print_fn(f"fine-tune: two-stage: epochs 1-{min(plan.head_epochs, epochs)} train the head only "
                     f"({len(plan.head)} tensors: {_names(plan.head, 4)}), the body ({len(plan.body)} tensors) "
                     f"held; {tail}")
        if plan.bn_frozen:
            print_fn(f"fine-tune: {len(plan.bn_frozen)} BatchNorm layer(s) with frozen weights normalise with "
                     f"their running statistics and keep them (FineTune.freeze_bn)")
    if not_loaded and plan.frozen & not_loaded:
        cold = [n for n, _ in plan.params if n in plan.frozen and n in not_loaded]
        print_fn(f"warning: FineTune.freeze: {len(cold)} frozen tensor(s) were not loaded from the pretrained "
                 f"weights and stay at their random init: {_names(cold)}")
    if plan.head_epochs > 0:
        if not reports:
            print_fn("warning: FineTune.head_epochs without pretrained weights (Global.pretrained_model or "
                     "Arch.pretrained): the held body is at its random init")
        es = cfg["EarlyStopping"]
        evals_in_stage1 = plan.head_epochs // max(g["eval_every_epochs"], 1)
        if es["enable"] and plan.head_epochs < g["epochs"] and es["patience"] < evals_in_stage1:
            print_fn(f"warning: EarlyStopping.patience={es['patience']} < the {evals_in_stage1} evaluations of the "
                     f"head-only stage: the run may stop before the body is unfrozen")
        return TwoStage(plan, start, print_fn, verbose, epochs=g["epochs"])
    return None


class FineTune(AddOn):
    """``Global.pretrained_model``, ``FineTune.freeze`` / ``lr_mult`` before the optimizer sees the
    parameters, and the two-stage callback (it follows the global epoch, so resumes need no state)."""

    name = "finetune"

    def setup(self, run: TrainRun) -> None:
        self.callback = setup_finetune(run.cfg, run.network, run.print_fn,
                                       resume_state=run.state if run.resume else None)

    def callbacks(self, run: TrainRun) -> dict[str, list]:
        return {"listen": [self.callback]} if self.callback is not None else {}
