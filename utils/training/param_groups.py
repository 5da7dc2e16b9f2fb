"""``Optimizer.param_groups``: per-parameter LR and weight-decay multipliers set on the model.

Why per parameter and not Paddle's parameter groups: hapi's ``Model.prepare`` calls ``minimize()``,
which rejects a list of group dicts. Paddle honours two per-parameter attributes instead, in every
optimizer: ``optimize_attr['learning_rate']`` (what ``ParamAttr(learning_rate=m)`` sets: the LR is
multiplied) and ``regularizer`` (an ``L2Decay``/``L1Decay`` that replaces the optimizer's
``weight_decay`` for that parameter; Momentum fuses it, checked on Paddle 3.3.1). AdamW decays
decoupled through ``apply_decay_param_fun``, which can only switch the decay on or off. Patterns:
:mod:`utils.config.patterns`.
"""
from __future__ import annotations

from typing import Callable, Iterable

import paddle

from utils.config.patterns import check_param_groups, no_match, select
from utils.errors import ConfigError


def apply_param_groups(network: paddle.nn.Layer, groups: object, weight_decay: float, regularizer: str = "L2",
                       decoupled: bool = False, where: str = "Optimizer.param_groups") -> list[str]:
    """Set each group's LR and weight-decay multipliers on the parameters it matches; lines describing them.

    The first group (in the order written) that matches a parameter decides for it. ``lr_mult``
    multiplies the parameter's LR multiplier (so a ``FineTune.lr_mult`` set before stays in effect).
    ``weight_decay_mult`` multiplies the decay coefficient (``Optimizer.weight_decay``): an
    ``L2Decay``/``L1Decay`` regularizer on the parameter; with ``decoupled`` (AdamW) only 0 and 1 are
    possible and 0 marks it ``no_weight_decay`` for the optimizer's ``apply_decay_param_fun``.
    """
    groups = check_param_groups(groups, where)
    named = [(n, p) for n, p in network.named_parameters() if not p.stop_gradient]
    names = [n for n, _ in named]
    taken: dict[str, int] = {}
    for i, g in enumerate(groups):
        hit = select(g["params"], names, f"{where}[{i}].params")
        new = [n for n in hit if n not in taken]
        if not new:
            raise no_match(f"{where}[{i}].params", g["params"][0], names,
                           why="only matches parameters that earlier groups took (first match wins)")
        if decoupled and g["weight_decay_mult"] not in (0.0, 1.0):
            raise ConfigError(f"{where}[{i}].weight_decay_mult: {g['weight_decay_mult']:g} with AdamW, whose "
                              f"decoupled decay is either on (1) or off (0) per parameter; use 0 or 1, or "
                              f"-o Optimizer.name=Momentum")
        for n in new:
            taken[n] = i
    params = dict(named)
    lines = []
    for i, g in enumerate(groups):
        members = [n for n, gi in taken.items() if gi == i]
        for n in members:
            p = params[n]
            p.optimize_attr["learning_rate"] = float(p.optimize_attr.get("learning_rate", 1.0)) * g["lr_mult"]
            if decoupled:
                p.no_weight_decay = g["weight_decay_mult"] == 0.0
            elif weight_decay > 0 and g["weight_decay_mult"] != 1.0:
                decay = paddle.regularizer.L2Decay if regularizer == "L2" else paddle.regularizer.L1Decay
                p.regularizer = decay(weight_decay * g["weight_decay_mult"])
        count = sum(int(params[n].numel()) for n in members)
        lines.append(f"param group {i} ({', '.join(map(str, g['params']))}): {len(members)} tensors, {count:,} values, "
                     f"lr x{g['lr_mult']:g}, weight decay x{g['weight_decay_mult']:g}")
    return lines


def decay_filter(parameters: Iterable[paddle.Tensor]) -> Callable[[str], bool] | None:
    """AdamW's ``apply_decay_param_fun``: False for parameters a group marked ``no_weight_decay``; None when none is."""
    excluded = {p.name for p in parameters if getattr(p, "no_weight_decay", False)}
    if not excluded:
        return None
    return lambda name: name not in excluded
