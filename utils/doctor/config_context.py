"""The :class:`~utils.doctor.series.RunContext` of a run, from its resolved config and, when at hand,
its data (class balance, regression targets) and network (dropout).

Shared by the live doctor (:func:`~utils.doctor.callback.build_doctor`) and the offline reader,
which rebuilds the context from a run's ``config.yml`` when ``diagnosis.json`` is missing.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from paddle import nn

from utils.doctor.series import RunContext
from utils.training.losses import regression_loss_np

# Transform names that count as augmentation besides every ``Random*`` one.
RANDOM_OPS = ("RandomCrop", "RandomHorizontalFlip", "RandomResizedCrop", "RandomRotation", "ColorJitter")


def max_dropout(network: nn.Layer) -> float:
    """The largest dropout probability among the network's ``nn.Dropout`` layers (0 without any)."""
    ps = [float(l.p) for l in network.sublayers() if isinstance(l, nn.Dropout) and isinstance(l.p, (int, float))]
    return max(ps, default=0.0)


def has_augmentation(ops: list | None) -> bool:
    """Whether a ``Transforms`` list holds a random transform."""
    names = [next(iter(op)) if isinstance(op, dict) else str(op) for op in ops or []]
    return any(n.startswith("Random") or n in RANDOM_OPS for n in names)


def run_context(cfg: dict, bundle: Any = None, network: nn.Layer | None = None, steps_per_epoch: int = 0) -> RunContext:
    """A :class:`RunContext` from the resolved config (and the data and network when at hand)."""
    num_classes = (bundle.num_classes if bundle is not None else cfg["Data"].get("num_classes")) or 10
    majority, n_val = None, 0
    ds = getattr(bundle, "val", None) if bundle is not None else None
    if ds is not None and getattr(ds, "labels", None) is not None and len(ds.labels):
        counts = np.bincount(np.asarray(ds.labels, dtype=np.int64))
        majority, n_val = float(counts.max() / counts.sum()), int(counts.sum())
    dropout = max_dropout(network) if network is not None else float(cfg.get("Arch", {}).get("dropout") or 0.0)
    o = cfg.get("Optimizer", {})
    epochs = int(cfg.get("Global", {}).get("epochs") or 0)
    ctx = RunContext(num_classes=int(num_classes), majority_rate=majority, n_val=n_val, dropout=dropout,
                     augmentation=has_augmentation(cfg.get("Transforms", {}).get("train")),
                     grad_clip=o.get("grad_clip"), clip_value=float(o.get("clip_value") or 1.0),
                     steps_per_epoch=int(steps_per_epoch), total_steps=int(steps_per_epoch) * epochs)
    head = int((cfg.get("FineTune") or {}).get("head_epochs") or 0)
    if 0 < head < epochs and steps_per_epoch:
        ctx.restart_step = head * int(steps_per_epoch)  # the body unfreezes: the loss curve starts over
    if cfg.get("Global", {}).get("task") == "regression":
        ctx.task, ctx.majority_rate = "regression", None
        ctx.target_normalized = bool(cfg.get("Data", {}).get("normalize_target", True))
        train = getattr(bundle, "train", None) if bundle is not None else None
        if train is not None and getattr(train, "targets", None) is not None and len(train.targets):
            # the targets as the loss sees them (normalized or not)
            y = (np.asarray(train.targets, np.float64) - train.target_mean) / train.target_std
            ctx.target_mean, ctx.target_std = float(y.mean()), float(y.std())
            ctx.baseline_loss = float(regression_loss_np(np.full_like(y, y.mean()), y,
                                                         cfg.get("Loss", {}).get("name", "mse")).mean())
            ctx.n_val = len(bundle.val) if getattr(bundle, "val", None) is not None else 0
    return ctx
