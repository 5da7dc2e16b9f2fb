"""Optimizer, learning-rate schedule and loss built from the ``Optimizer``, ``LRScheduler`` and
``Loss`` config sections.

Contract with the training engine:

* :func:`build_lr_scheduler` returns a :class:`ClosedFormLR` (a ``paddle.optimizer.lr.LRScheduler``)
  that is the optimizer's ``learning_rate``. The engine calls ``scheduler.step()`` exactly once
  after every training iteration and ``scheduler.eval_step(metrics)`` after every validation.
  ``scheduler.last_epoch`` is therefore the global iteration count (0 before the first step).
* :func:`build_optimizer` builds the Paddle optimizer (no parameter groups: hapi rejects them;
  per-parameter LR multipliers set with ``paddle.ParamAttr(learning_rate=m)`` keep working; the
  ``FineTune`` section sets them, and freezes, through ``utils/addons/finetune.py``). It gets every
  parameter, frozen ones included, so a parameter unfrozen later (two-stage fine-tuning) trains.
* :func:`schedule_warnings` returns human-readable warnings about a schedule that is probably
  not what the user meant; :func:`current_lr` returns the LR the optimizer uses next.

Schedule conventions (all LR values are functions of the global iteration ``t``):

* Epoch-based parameters are converted to iterations with ``steps_per_epoch``: step/multistep
  decay happen after exactly ``round(k * steps_per_epoch)`` iterations of the main schedule;
  exponential and inverse_time use the continuous epoch ``s / steps_per_epoch`` (so gamma is the
  per-epoch factor and the LR moves smoothly inside an epoch; at epoch boundaries it equals the
  per-epoch formula exactly); cosine/polynomial/onecycle are smooth per iteration.
* Warmup (``warmup_epochs`` > 0, W = round(warmup_epochs * steps_per_epoch) iterations, at least
  1) rises linearly from ``warmup_start_lr`` at t=0 to the main schedule's first value, reached at
  t=W. As in PaddleClas (``LinearWarmup`` around the main schedule, cosine ``T_max = (epochs -
  warmup_epoch) * step_each_epoch``), the main schedule's clock starts after warmup: it sees
  ``s = t - W`` and its length is ``total - W``. So with 1 warmup epoch, ``step_size: 2`` decays
  after epoch 3, milestones shift by the warmup too, and cosine still ends at ``eta_min`` exactly
  at the end of training.
* Past the end of training every schedule holds its final value (no exception, unlike Paddle's
  ``OneCycleLR``).
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable

import numpy as np
import paddle
from paddle import nn

from utils.errors import ConfigError
from utils.schedules import get_schedule, require
from utils.training.param_groups import decay_filter

__all__ = ["ClosedFormLR", "build_lr_scheduler", "schedule_warnings", "build_optimizer", "current_lr"]


# ----------------------------------------------------------------------------- validation helpers

def _check_schedule_cfg(s: dict, o: dict) -> None:
    require(o["lr"] >= 0, "Optimizer.lr", o["lr"], ">= 0")
    require(s["warmup_epochs"] >= 0, "LRScheduler.warmup_epochs", s["warmup_epochs"], ">= 0")
    require(s["warmup_start_lr"] >= 0, "LRScheduler.warmup_start_lr", s["warmup_start_lr"], ">= 0")
    check = get_schedule(s["name"]).check
    if check is not None:
        check(s)


def _scalar(value: object) -> float:
    """A metric value as float: hapi gives some metrics as one-element lists."""
    return float(np.asarray(value, dtype="float64").reshape(-1)[0])


# ----------------------------------------------------------------------------- the scheduler

class ClosedFormLR(paddle.optimizer.lr.LRScheduler):
    """Every schedule of the template as a closed-form function of the global iteration.

    Why not Paddle's built-in schedulers wrapped in ``LinearWarmup``: they are recursive or
    epoch-stepped (``ExponentialDecay`` multiplies per ``step()``), ``OneCycleLR`` raises once
    stepped past ``total_steps``, ``ReduceOnPlateau.step()`` needs metrics (which breaks the
    per-iteration stepping) and their warmup wrapper nests the state. Computing ``lr(t)`` directly
    from the iteration count is exact, clamps naturally past the end, and makes resuming trivial:
    the state is the iteration count plus, for ``plateau``, its reduction state.

    Attributes (read-only for users): ``name``, ``base_lr``, ``steps_per_epoch``, ``epochs``,
    ``total_steps`` (epochs * steps_per_epoch), ``warmup_steps``, ``main_steps`` (total - warmup).
    Use :meth:`lr_at` to query the LR at any iteration without stepping.
    """

    # State saved by state_dict(); Paddle's optimizer.state_dict() embeds it under 'LR_Scheduler'.
    STATE_KEYS = ("last_epoch", "last_lr", "plateau_scale", "best", "num_bad", "cooldown_counter")

    def __init__(self, name: str, base_lr: float, steps_per_epoch: int, epochs: int, params: dict) -> None:
        self.schedule = get_schedule(name)
        self.name = name
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.total_steps = self.epochs * self.steps_per_epoch
        p = dict(params)
        self.p = p
        w = p.get("warmup_epochs", 0.0)
        self.warmup_steps = max(1, int(round(w * self.steps_per_epoch))) if w > 0 else 0
        self.warmup_start_lr = float(p.get("warmup_start_lr", 0.0))
        self.main_steps = max(self.total_steps - self.warmup_steps, 1)
        # plateau state
        self.plateau_scale = 1.0
        self.best = None
        self.num_bad = 0
        self.cooldown_counter = 0
        super().__init__(learning_rate=float(base_lr), last_epoch=-1, verbose=False)

    # -- the schedule
    def _main(self, s: int) -> float:
        """LR of the main schedule ``s`` iterations after warmup (s >= 0)."""
        return self.schedule.lr(self, s)

    def lr_at(self, t: int) -> float:
        """LR used by training iteration ``t`` (0-based global iteration); pure, no side effects."""
        t = max(int(t), 0)
        w = self.warmup_steps
        if t < w:
            return self.warmup_start_lr + (self._main(0) - self.warmup_start_lr) * t / w
        return float(self._main(min(t - w, self.main_steps)))  # past the end: the final value

    def get_lr(self) -> float:
        """LR of the current iteration (``last_epoch``); Paddle's ``step()`` calls it."""
        return self.lr_at(self.last_epoch)

    def _get_closed_form_lr(self) -> float:  # used by step(epoch=...)
        return self.lr_at(self.last_epoch)

    # -- plateau
    def eval_step(self, metrics: dict | None) -> None:
        """Feed a validation result ``{'loss': .., 'acc': .., ...}``; only ``plateau`` reacts.

        Semantics (as Paddle's/PyTorch's ReduceOnPlateau, threshold relative): an evaluation
        improves when it beats the best by more than ``threshold * |best|``. After more than
        ``patience`` consecutive non-improving evaluations the LR is multiplied by ``factor``
        (never below ``min_lr``), then ``cooldown`` evaluations are ignored. The new LR is used
        from the next training iteration on.
        """
        if self.name != "plateau":
            return
        monitor, mode = self.p["monitor"], self.p["mode"]
        metrics = metrics or {}
        if monitor not in metrics:
            raise ConfigError(f"LRScheduler.monitor: metric {monitor!r} is not reported by validation; "
                              f"available metrics: {', '.join(sorted(metrics)) or '(none)'}")
        current = _scalar(metrics[monitor])
        thr = self.p["threshold"]
        if self.best is None:
            improved = not math.isnan(current)
        elif mode == "min":
            improved = current < self.best - abs(self.best) * thr
        else:
            improved = current > self.best + abs(self.best) * thr
        if improved:
            self.best = current
            self.num_bad = 0
        else:
            self.num_bad += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad = 0
        if self.num_bad > self.p["patience"]:
            old = self._main(0)
            new = max(old * self.p["factor"], self.p["min_lr"])
            if old - new > 1e-12:
                self.plateau_scale *= self.p["factor"]
                self.cooldown_counter = self.p["cooldown"]
            self.num_bad = 0
        # The optimizer reads last_lr at its next step: apply the reduction now.
        self.last_lr = self.lr_at(self.last_epoch)

    # -- state
    def state_dict(self) -> dict:
        """The iteration count, the last LR and the plateau state (:data:`STATE_KEYS`)."""
        state = {}
        for k in self.STATE_KEYS:
            v = getattr(self, k)
            state[k] = v if v is None or isinstance(v, (int, float)) else float(v)
        state["last_epoch"] = int(self.last_epoch)
        state["num_bad"] = int(self.num_bad)
        state["cooldown_counter"] = int(self.cooldown_counter)
        return state

    def set_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`state_dict` output (also accepts Paddle's plain {last_epoch, last_lr}).

        ``last_lr`` is recomputed from the restored iteration so that a config changed on
        resume (say a longer run) takes effect at once; with the same config it is identical.
        """
        if "last_epoch" not in state_dict:
            raise RuntimeError("LR scheduler state has no 'last_epoch': not a scheduler state dict")
        self.last_epoch = int(state_dict["last_epoch"])
        self.plateau_scale = float(state_dict.get("plateau_scale", 1.0))
        best = state_dict.get("best")
        self.best = None if best is None else float(best)
        self.num_bad = int(state_dict.get("num_bad", 0))
        self.cooldown_counter = int(state_dict.get("cooldown_counter", 0))
        self.last_lr = self.lr_at(self.last_epoch)

    set_dict = set_state_dict

    def __repr__(self) -> str:
        return (f"ClosedFormLR({self.name}, lr={self.base_lr}, steps_per_epoch={self.steps_per_epoch}, "
                f"epochs={self.epochs}, warmup_steps={self.warmup_steps}, iteration={self.last_epoch})")


def build_lr_scheduler(cfg: dict, steps_per_epoch: int, epochs: int) -> ClosedFormLR:
    """The LR schedule for ``epochs`` epochs of ``steps_per_epoch`` iterations.

    Args:
        cfg: validated config (uses ``Optimizer.lr`` and the ``LRScheduler`` section).
        steps_per_epoch: training iterations per epoch (>= 1).
        epochs: number of training epochs (>= 1).

    Returns:
        A :class:`ClosedFormLR`, to pass as the optimizer's ``learning_rate``.
    """
    s, o = cfg["LRScheduler"], cfg["Optimizer"]
    if int(steps_per_epoch) < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch} (empty training set?)")
    if int(epochs) < 1:
        raise ConfigError(f"Global.epochs: {epochs!r} is invalid, it must be >= 1")
    _check_schedule_cfg(s, o)
    params = dict(s)
    if s["name"] == "multistep":
        params["milestones"] = sorted(float(m) for m in s["milestones"])
    return ClosedFormLR(s["name"], o["lr"], steps_per_epoch, epochs, params)


def _fits(epochs: float, share: float) -> str:
    """``share`` of ``epochs`` written for a command line (3 significant digits): a value that fits the run."""
    return f"{epochs * share:.3g}"


def schedule_warnings(cfg: dict, epochs: int) -> list[str]:
    """Warnings about a schedule that probably does not do what the user meant (list of str).

    Each names the ``-o`` override that fixes it, with a value that fits ``epochs``: a warmup of
    a tenth of the run (the recipes warm up 1-2 of 30 epochs), milestones at half and three
    quarters of the schedule, a step of a third of it.
    """
    s, o = cfg["LRScheduler"], cfg["Optimizer"]
    name, warm, lr = s["name"], s["warmup_epochs"], o["lr"]
    out = []
    main = epochs - warm  # the main schedule's clock starts after warmup
    if warm > 0 and warm >= epochs:
        out.append(f"LRScheduler.warmup_epochs={warm:g} >= Global.epochs={epochs}: training ends during "
                   f"warmup and never reaches Optimizer.lr={lr:g}; fix: -o LRScheduler.warmup_epochs="
                   f"{_fits(epochs, 0.1)} (a tenth of the run; 0 = no warmup) or train longer")
    elif warm > 0 and name in ("cosine", "onecycle", "polynomial") and warm > 0.5 * epochs:
        out.append(f"LRScheduler.warmup_epochs={warm:g} takes more than half of the {epochs} epochs: "
                   f"the {name} schedule only runs over the last {main:g}; fix: "
                   f"-o LRScheduler.warmup_epochs={_fits(epochs, 0.1)} (a tenth of the run)")
    if name == "onecycle" and warm > 0:
        out.append("LRScheduler.warmup_epochs > 0 with onecycle: onecycle already rises from "
                   "lr/div_factor over pct_start; the warmup adds a second ramp before it; "
                   "fix: -o LRScheduler.warmup_epochs=0")
    if name == "step" and warm < epochs and s["step_size"] >= main:
        out.append(f"LRScheduler.step_size={s['step_size']:g} epochs >= the {main:g} epochs of the schedule "
                   f"(after {warm:g} warmup): the LR never decays; fix: -o LRScheduler.step_size={_fits(main, 1 / 3)}")
    if name == "multistep":
        ms = s["milestones"]
        late = [m for m in ms if isinstance(m, numbers.Real) and m + warm >= epochs]
        if late:
            shift = f" (+{warm:g} warmup epochs)" if warm else ""
            # with the warmup past the end, its own warning carries the fix
            fix = f"; fix: -o LRScheduler.milestones=[{_fits(main, 0.5)},{_fits(main, 0.75)}]" if main > 0 else ""
            out.append(f"LRScheduler.milestones {late}{shift} are at/after the last epoch ({epochs}): "
                       f"those decays never happen{fix}")
        in_order = sorted(ms, key=lambda m: m if isinstance(m, numbers.Real) else 0)
        if list(ms) != in_order:
            listed = ",".join(f"{m:g}" if isinstance(m, numbers.Real) else str(m) for m in in_order)
            out.append(f"LRScheduler.milestones {ms} are not sorted (they are applied in sorted order); "
                       f"fix: -o LRScheduler.milestones=[{listed}]")
    if name in ("step", "multistep", "exponential") and s["gamma"] >= 1:
        out.append(f"LRScheduler.gamma={s['gamma']:g} >= 1: the {name} schedule does not decay the LR; "
                   f"fix: -o LRScheduler.gamma={0.95 if name == 'exponential' else 0.1}")
    if name == "cosine" and s["eta_min"] > lr:
        out.append(f"LRScheduler.eta_min={s['eta_min']:g} > Optimizer.lr={lr:g}: cosine rises instead of decaying; "
                   "fix: -o LRScheduler.eta_min=0")
    if name in ("polynomial", "onecycle") and s["end_lr"] > lr:
        out.append(f"LRScheduler.end_lr={s['end_lr']:g} > Optimizer.lr={lr:g}: the LR rises instead of decaying; "
                   "fix: -o LRScheduler.end_lr=0")
    if name == "plateau":
        mon, mode = s["monitor"], s["mode"]
        if "acc" in mon and mode == "min":
            out.append(f"LRScheduler.monitor={mon} with mode=min: accuracy should use mode: max; "
                       "fix: -o LRScheduler.mode=max")
        if "loss" in mon and mode == "max":
            out.append(f"LRScheduler.monitor={mon} with mode=max: a loss should use mode: min; "
                       "fix: -o LRScheduler.mode=min")
        if s["min_lr"] >= lr:
            out.append(f"LRScheduler.min_lr={s['min_lr']:g} >= Optimizer.lr={lr:g}: plateau can never reduce the LR; "
                       "fix: -o LRScheduler.min_lr=0")
    if warm > 0 and s["warmup_start_lr"] > lr:
        out.append(f"LRScheduler.warmup_start_lr={s['warmup_start_lr']:g} > Optimizer.lr={lr:g}: warmup decreases "
                   "the LR; fix: -o LRScheduler.warmup_start_lr=0")
    out += early_collapse_warning(cfg, epochs)
    return out


# The LR curve is judged on this many steps per epoch (the real count is not known before the data
# loads; the schedules are defined in epochs, so 100 resolves a step or milestone to 1% of an epoch).
CURVE_STEPS_PER_EPOCH = 100
# Under this fraction of its peak the LR barely moves the weights ...
COLLAPSE_FRACTION = 0.01
# ... and reaching it within this share of the run wastes the rest (the recipes end their decay at the end).
COLLAPSE_BY = 0.10


def _collapse_keys(name: str, s: dict) -> str:
    """The LRScheduler keys that set how fast ``name`` decays, with their values."""
    keys = {"step": ("step_size", "gamma"), "multistep": ("milestones", "gamma"), "exponential": ("gamma",),
            "inverse_time": ("gamma",), "polynomial": ("power", "end_lr"), "onecycle": ("end_lr", "div_factor"),
            "cosine": ("eta_min",)}.get(name, ())
    return ", ".join(f"LRScheduler.{k}={s[k]}" for k in keys if k in s)


def _collapse_fix(name: str, s: dict, main: float) -> str:
    """An ``-o`` override that keeps the LR above 1% of its peak until the end of a ``main``-epoch schedule."""
    if name == "exponential" and main > 0:
        return f"-o LRScheduler.gamma={COLLAPSE_FRACTION ** (1 / main):.3g} (1% of the peak at the end)"
    if name == "inverse_time" and main > 0:
        return f"-o LRScheduler.gamma={(1 / COLLAPSE_FRACTION - 1) / main:.3g} (1% of the peak at the end)"
    if name == "step":
        return f"-o LRScheduler.step_size={_fits(main, 1 / 3)} -o LRScheduler.gamma=0.1"
    if name == "multistep":
        return f"-o LRScheduler.milestones=[{_fits(main, 0.5)},{_fits(main, 0.75)}] -o LRScheduler.gamma=0.1"
    if name == "polynomial":
        return "-o LRScheduler.power=1"
    return "-o LRScheduler.name=cosine"


def early_collapse_warning(cfg: dict, epochs: int) -> list[str]:
    """A schedule that sends the LR under COLLAPSE_FRACTION of its peak before COLLAPSE_BY of the run: most of
    the training would happen at a learning rate that changes nothing. Evaluates the closed-form curve
    (:meth:`ClosedFormLR.lr_at`) over the run; plateau (driven by the metrics) is not judged."""
    s = cfg["LRScheduler"]
    if s["name"] == "plateau" or epochs < 1:
        return []
    try:
        sch = build_lr_scheduler(cfg, CURVE_STEPS_PER_EPOCH, epochs)
    except (ConfigError, ValueError):
        return []  # an invalid schedule has its own error when training builds it
    total = sch.total_steps
    lrs = np.array([sch.lr_at(t) for t in range(total)], dtype=np.float64)
    peak = float(lrs.max()) if total else 0.0
    if peak <= 0:
        return []
    first_high = int(np.argmax(lrs >= 0.5 * peak))  # after warmup / onecycle's ramp: its low start is not a collapse
    low = np.nonzero(lrs[first_high:] < COLLAPSE_FRACTION * peak)[0]
    if not len(low):
        return []
    t = first_high + int(low[0])
    if t >= COLLAPSE_BY * total:
        return []
    at_epoch = t / CURVE_STEPS_PER_EPOCH
    keys = _collapse_keys(s["name"], s)
    return [f"LRScheduler.name={s['name']}" + (f" with {keys}" if keys else "") +
            f": the LR falls under {COLLAPSE_FRACTION:.0%} of its peak {peak:g} by epoch {at_epoch:.3g} of {epochs} "
            f"({t / total:.0%} of the run), so the remaining epochs barely train; fix: "
            f"{_collapse_fix(s['name'], s, epochs - s['warmup_epochs'])}"]


# ----------------------------------------------------------------------------- optimizer

def build_optimizer(cfg: dict, parameters: Iterable[paddle.Tensor],
                    scheduler: ClosedFormLR | float) -> paddle.optimizer.Optimizer:
    """The optimizer of ``Optimizer.name`` over ``parameters`` with ``scheduler`` as its LR.

    weight_decay: AdamW applies it decoupled (w -= lr * wd * w); the others add an L2Decay or
    L1Decay regularizer (``Optimizer.regularizer``) to the gradient; 0 = none. grad_clip: value ->
    ClipGradByValue(clip_value), norm -> ClipGradByNorm (per tensor), global_norm ->
    ClipGradByGlobalNorm. Clipping applies to the raw gradient, before the regularizer.
    ``scheduler`` may also be a float (constant LR).
    """
    o = cfg["Optimizer"]
    name = o["name"]
    parameters = list(parameters)
    if parameters and isinstance(parameters[0], dict):
        raise ValueError("parameter groups are not supported (hapi rejects them); use "
                         "paddle.ParamAttr(learning_rate=...) for per-parameter LR multipliers")
    require(o["weight_decay"] >= 0, "Optimizer.weight_decay", o["weight_decay"], ">= 0")
    require(o["epsilon"] > 0, "Optimizer.epsilon", o["epsilon"], "> 0")
    if name in ("Momentum", "RMSProp"):
        require(0 <= o["momentum"] < 1, "Optimizer.momentum", o["momentum"], "in [0, 1)")
    if name in ("Adam", "AdamW"):
        require(0 <= o["beta1"] < 1, "Optimizer.beta1", o["beta1"], "in [0, 1)")
        require(0 <= o["beta2"] < 1, "Optimizer.beta2", o["beta2"], "in [0, 1)")
    if name in ("RMSProp", "Adadelta"):
        require(0 < o["rho"] < 1, "Optimizer.rho", o["rho"], "in (0, 1)")

    clip = None
    if o["grad_clip"] is not None:
        require(o["clip_value"] > 0, "Optimizer.clip_value", o["clip_value"], "> 0")
        c = float(o["clip_value"])
        clip = {"value": lambda: nn.ClipGradByValue(max=c),
                "norm": lambda: nn.ClipGradByNorm(clip_norm=c),
                "global_norm": lambda: nn.ClipGradByGlobalNorm(clip_norm=c)}[o["grad_clip"]]()

    wd = float(o["weight_decay"])
    reg = None
    if wd > 0 and name != "AdamW":
        reg = (paddle.regularizer.L2Decay if o["regularizer"] == "L2" else paddle.regularizer.L1Decay)(wd)

    common = dict(learning_rate=scheduler, parameters=parameters, grad_clip=clip)
    if name == "SGD":
        return paddle.optimizer.SGD(weight_decay=reg, **common)
    if name == "Momentum":
        return paddle.optimizer.Momentum(momentum=o["momentum"], use_nesterov=o["nesterov"],
                                         weight_decay=reg, **common)
    if name == "Adam":
        return paddle.optimizer.Adam(beta1=o["beta1"], beta2=o["beta2"], epsilon=o["epsilon"],
                                     weight_decay=reg, **common)
    if name == "AdamW":
        return paddle.optimizer.AdamW(beta1=o["beta1"], beta2=o["beta2"], epsilon=o["epsilon"],
                                      weight_decay=wd, apply_decay_param_fun=decay_filter(parameters), **common)
    if name == "RMSProp":
        return paddle.optimizer.RMSProp(rho=o["rho"], epsilon=o["epsilon"], momentum=o["momentum"],
                                        weight_decay=reg, **common)
    if name == "Adadelta":
        return paddle.optimizer.Adadelta(rho=o["rho"], epsilon=o["epsilon"], weight_decay=reg, **common)
    raise ConfigError(f"Optimizer.name: unknown optimizer {name!r}")


def current_lr(optimizer: paddle.optimizer.Optimizer) -> float:
    """The LR the optimizer applies at its next step (before ParamAttr multipliers)."""
    return float(optimizer.get_lr())
