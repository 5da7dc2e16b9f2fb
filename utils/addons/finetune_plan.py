"""Fine-tuning plans: which parameters a pattern names, freezing, LR multipliers, head and body.

Patterns name parameters as ``network.named_parameters()`` does (``layer1.0.conv1.weight``,
``fc.bias``): a name without wildcards is that parameter or the whole layer (``layer1`` =
``layer1.*``), ``*?[]`` make an fnmatch glob over the full name (``*`` crosses dots), ``re:REGEX``
is a regular expression searched in the name. BatchNorm running statistics (``_mean``,
``_variance``) are parameters in Paddle but never patterns' targets here. The Paddle behaviour
these rely on is listed in ``utils/addons/finetune.py``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import paddle
import paddle.nn as nn

from models.init import running_stats
from utils.config.patterns import compile_pattern, resolve_lr_mult, select  # noqa: F401  (shared with Optimizer.param_groups)
from utils.errors import ConfigError

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
