"""Fine-tuning: pretrained weights by name and shape, freezing by parameter name, per-parameter
learning-rate multipliers and a two-stage schedule (the head first, then the body at a lower rate).

Config: ``Global.pretrained_model`` and the ``FineTune`` section (configs/README.md). The trainer
calls :func:`setup_finetune` right after building the network and adds the callback it returns.

Patterns name parameters as ``network.named_parameters()`` does (``layer1.0.conv1.weight``,
``fc.bias``): a name without wildcards is that parameter or the whole layer (``layer1`` =
``layer1.*``), ``*?[]`` make an fnmatch glob over the full name (``*`` crosses dots), ``re:REGEX``
is a regular expression searched in the name. BatchNorm running statistics (``_mean``,
``_variance``) are parameters in Paddle but never patterns' targets here.

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

import fnmatch
import re
from typing import Callable, Iterable, Sequence

import paddle
import paddle.nn as nn
from paddle.callbacks import Callback

from models.init import running_stats
from models.pretrained import LoadReport, load_matching
from utils.errors import ConfigError, did_you_mean
from utils.training.addon import AddOn, TrainRun

REGEX_PREFIX = "re:"


# ----------------------------------------------------------------------------- patterns

def compile_pattern(pattern: str, key: str = "FineTune") -> Callable[[str], bool]:
    """A predicate on parameter names for one pattern (see the module docstring)."""
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{key}: patterns are non-empty strings, got {pattern!r}")
    if pattern.startswith(REGEX_PREFIX):
        try:
            rx = re.compile(pattern[len(REGEX_PREFIX):])
        except re.error as e:
            raise ConfigError(f"{key}: bad regular expression {pattern!r}: {e}") from None
        return lambda name: rx.search(name) is not None
    if any(ch in pattern for ch in "*?["):
        return lambda name: fnmatch.fnmatchcase(name, pattern)
    return lambda name: name == pattern or name.startswith(pattern + ".")


def _layers_of(names: Iterable[str]) -> list[str]:
    tops = []
    for n in names:
        top = n.split(".", 1)[0]
        if top not in tops:
            tops.append(top)
    return tops


def _no_match(key: str, pattern: str, names: Sequence[str], why: str = "matches no parameter") -> ConfigError:
    tops = _layers_of(names)
    hint = did_you_mean(pattern, tops + list(names))
    some = ", ".join(list(names)[:4])
    return ConfigError(f"{key}: pattern {pattern!r} {why}{hint}; top-level layers: {', '.join(tops)}; "
                       f"parameters look like {some}, ... ({len(names)} in all)")


def select(patterns: str | Iterable[str] | None, names: Sequence[str], key: str) -> list[str]:
    """Names matched by any of ``patterns``, in model order; a pattern matching nothing is a ConfigError."""
    if isinstance(patterns, str):
        patterns = [patterns]
    chosen = set()
    for pat in patterns or ():
        pred = compile_pattern(pat, key)
        hit = [n for n in names if pred(n)]
        if not hit:
            raise _no_match(key, pat, names)
        chosen.update(hit)
    return [n for n in names if n in chosen]


def resolve_lr_mult(mapping: dict | None, names: Sequence[str], key: str = "FineTune.lr_mult") -> dict[str, float]:
    """{name: multiplier} from ``{pattern: multiplier}``; the first pattern (in the order written) wins.

    A pattern that matches nothing, or only names earlier patterns already took, is a ConfigError.
    """
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{key}: expected a mapping {{pattern: multiplier}}, got {type(mapping).__name__}")
    out = {}
    for pat, m in mapping.items():
        if isinstance(m, bool) or not isinstance(m, (int, float)) or m < 0:
            raise ConfigError(f"{key}: the multiplier of {pat!r} must be a number >= 0, got {m!r}")
        pred = compile_pattern(pat, key)
        hit = [n for n in names if pred(n)]
        if not hit:
            raise _no_match(key, pat, names)
        new = [n for n in hit if n not in out]
        if not new:
            raise _no_match(key, pat, names, why=f"only matches parameters that earlier patterns took "
                                                 f"(first match wins: put {pat!r} before them)")
        for n in new:
            out[n] = float(m)
    return out


# ----------------------------------------------------------------------------- the model's parameters

def learnable(network: paddle.nn.Layer) -> list[tuple[str, paddle.Tensor]]:
    """[(name, param)] that train: not running statistics, not already stop_gradient."""
    stats = {id(t) for t in running_stats(network)}
    return [(n, p) for n, p in network.named_parameters() if id(p) not in stats and not p.stop_gradient]


def batchnorm_layers(network: paddle.nn.Layer) -> list[tuple[str, paddle.nn.Layer]]:
    """[(name, layer)] of the BatchNorm layers (anything with running stats and ``_use_global_stats``)."""
    return [(n, l) for n, l in network.named_sublayers(include_self=True)
            if hasattr(l, "_use_global_stats") and isinstance(getattr(l, "_mean", None), paddle.Tensor)]


def last_linear(network: paddle.nn.Layer) -> list[str]:
    """Parameter names of the network's last ``nn.Linear`` (definition order): the classifier head."""
    linears = [(n, l) for n, l in network.named_sublayers() if isinstance(l, nn.Linear)]
    if not linears:
        return []
    name, layer = linears[-1]
    ids = {id(p) for p in layer.parameters()}
    return [n for n, p in network.named_parameters() if id(p) in ids]


# ----------------------------------------------------------------------------- stand-alone helpers

def apply_freeze(network: paddle.nn.Layer, patterns: str | Iterable[str] | None, freeze_bn: bool = True,
                 key: str = "FineTune.freeze") -> list[str]:
    """Freeze the parameters matching ``patterns`` (stop_gradient); with ``freeze_bn`` the BatchNorm
    layers left without a trainable parameter use and keep their running statistics. Returns the names."""
    names = select(patterns, [n for n, _ in learnable(network)], key)
    params = dict(network.named_parameters())
    for n in names:
        params[n].stop_gradient = True
    if freeze_bn:
        freeze_bn_stats(network)
    return names


def apply_lr_mult(network: paddle.nn.Layer, mapping: dict | None, key: str = "FineTune.lr_mult") -> dict[str, float]:
    """Set ``optimize_attr['learning_rate']`` from ``{pattern: multiplier}`` (first match wins); returns {name: m}."""
    mult = resolve_lr_mult(mapping, [n for n, _ in learnable(network)], key)
    params = dict(network.named_parameters())
    for n, m in mult.items():
        params[n].optimize_attr["learning_rate"] = m
    return mult


def freeze_bn_stats(network: paddle.nn.Layer) -> list[str]:
    """BatchNorm layers whose weight and bias are all frozen: normalise with the running statistics
    and stop updating them (in train mode too). Returns their names."""
    done = []
    for name, layer in batchnorm_layers(network):
        ps = [p for p in (getattr(layer, "weight", None), getattr(layer, "bias", None)) if isinstance(p, paddle.Tensor)]
        if ps and all(p.stop_gradient for p in ps):
            layer._use_global_stats = True
            done.append(name)
    return done


# ----------------------------------------------------------------------------- the plan

class FineTunePlan:
    """Which parameters train, at which multiplier, in each stage; :meth:`apply` sets it on the model.

    Stages: 0 = no two-stage schedule; 1 = head only (epoch < head_epochs); 2 = body unfrozen.

    Args:
        network: the model.
        freeze: patterns frozen for the whole run.
        lr_mult: ``{pattern: multiplier}``, first match wins; 0 = frozen.
        head_epochs: length of stage 1 (0 = off).
        head: patterns of the head, or None for :func:`last_linear` plus ``not_loaded``.
        body_lr_mult: the body's multiplier in stage 2 (unless an lr_mult pattern matches).
        freeze_bn: frozen BatchNorm layers use and keep their running statistics.
        not_loaded: names the pretrained weights did not provide (part of the default head).
        hold_with_zero_lr: stage 1 holds the body with multiplier 0, not stop_gradient (DataParallel).
    """

    def __init__(self, network: paddle.nn.Layer, freeze: str | Iterable[str] = (), lr_mult: dict | None = None, head_epochs: int = 0,
                 head: str | Iterable[str] | None = None, body_lr_mult: float = 0.1, freeze_bn: bool = True,
                 not_loaded: Iterable[str] = (), hold_with_zero_lr: bool = False) -> None:
        self.params = learnable(network)
        names = [n for n, _ in self.params]
        if not names:
            raise ConfigError("FineTune: the model has no trainable parameter")
        # The model's own ParamAttr multipliers stay the base our multipliers scale.
        self.base = {n: float(p.optimize_attr.get("learning_rate", 1.0)) for n, p in self.params}
        self.frozen = set(select(freeze, names, "FineTune.freeze"))
        self.mult = resolve_lr_mult(lr_mult, names)
        self.frozen |= {n for n, m in self.mult.items() if m == 0}
        self.head_epochs = int(head_epochs)
        if self.head_epochs < 0:
            raise ConfigError(f"FineTune.head_epochs: {head_epochs} is invalid, it must be >= 0")
        if body_lr_mult < 0:
            raise ConfigError(f"FineTune.body_lr_mult: {body_lr_mult} is invalid, it must be >= 0")
        self.body_lr_mult = float(body_lr_mult)
        self.freeze_bn = freeze_bn
        self.hold_with_zero_lr = hold_with_zero_lr
        self.head, self.body = [], []
        if self.head_epochs > 0:
            if head is None:
                head_set = set(last_linear(network)) | set(not_loaded)
                if not head_set & set(names):
                    raise ConfigError("FineTune.head: the model has no Linear layer to take as its head; "
                                      "list the head's parameters, e.g. FineTune.head=[classifier]")
            else:
                head_set = set(select(head, names, "FineTune.head"))
            self.head = [n for n in names if n in head_set and n not in self.frozen]
            self.body = [n for n in names if n not in head_set and n not in self.frozen]
            if not self.head:
                raise ConfigError("FineTune.head: every head parameter is frozen (FineTune.freeze / lr_mult 0): "
                                  "nothing would train in the first stage")
            if not self.body:
                raise ConfigError("FineTune.head covers every trainable parameter: the two-stage schedule "
                                  "has no body to hold back (set FineTune.head, or head_epochs: 0)")
        self._body_set = set(self.body)
        self.bn = []  # (name, layer, param names, original _use_global_stats)
        ids = {id(p): n for n, p in self.params}
        for name, layer in batchnorm_layers(network):
            owned = [ids[id(p)] for p in (getattr(layer, "weight", None), getattr(layer, "bias", None))
                     if isinstance(p, paddle.Tensor) and id(p) in ids]
            if owned:
                self.bn.append((name, layer, owned, layer._use_global_stats))
        self.bn_frozen = []
        self.stage = None

    def stage_for(self, epoch: int) -> int:
        """The stage of 0-based global ``epoch``."""
        if self.head_epochs <= 0:
            return 0
        return 1 if epoch < self.head_epochs else 2

    def setting(self, name: str, stage: int) -> tuple[bool, float]:
        """(trainable, multiplier) of parameter ``name`` in ``stage``."""
        if name in self.frozen:
            return False, 0.0
        if stage == 1 and name in self._body_set:
            return (True, 0.0) if self.hold_with_zero_lr else (False, 0.0)
        default = self.body_lr_mult if stage == 2 and name in self._body_set else 1.0
        return True, self.mult.get(name, default)

    def apply(self, stage: int) -> FineTunePlan:
        """Set stop_gradient, the LR multipliers and the BatchNorm mode for ``stage``."""
        held = set()
        for n, p in self.params:
            trainable, m = self.setting(n, stage)
            p.stop_gradient = not trainable
            if trainable:
                p.optimize_attr["learning_rate"] = self.base[n] * m
            if not trainable or m == 0:
                held.add(n)
        self.bn_frozen = []
        for name, layer, owned, original in self.bn:
            if self.freeze_bn and all(n in held for n in owned):
                layer._use_global_stats = True
                self.bn_frozen.append(name)
            else:
                layer._use_global_stats = original
        self.stage = stage
        return self


def create_accumulators(optimizer: paddle.optimizer.Optimizer, params: Sequence[paddle.Tensor]) -> None:
    """Create the optimizer's accumulators (velocity, moments) of ``params`` now, at their initial values.

    Paddle creates them at a parameter's first update, and after ``optimizer.set_state_dict`` it
    asserts that every accumulator it creates is in the loaded state ("Optimizer set error,
    conv2d_0.w_0_velocity_0 should in state dict") until the loaded ones are used up. A checkpoint
    written while the body was frozen has none for the body, so resuming at or after the switch
    failed. Created up front, every checkpoint holds them (zero velocity / moments, untouched while
    frozen: a frozen parameter is not updated, its accumulators neither), which is exactly what
    creating them at the switch gives.
    """
    create = getattr(optimizer, "_create_accumulators", None)
    if create is None or not params:
        return
    create(paddle.static.default_main_program().global_block(), list(params))


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
