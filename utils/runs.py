"""Open a finished (or running) training run from what a user types on the command line.

Tools that look at a run (``tools/eval.py``, ``tools/visualize.py``) accept a run directory
(``output/gmlp_digits/20260101-120000``), a checkpoint prefix in one (``RUN/best_model``) or a
checkpoint file (``RUN/best_model.pdparams``). :func:`open_run` turns any of these into the run
directory, the config the run was trained with and the checkpoint prefix, with one-line
:class:`~utils.errors.UserError` messages for every wrong path.

Paddle is not imported at module level: :func:`open_run` reads the config first and sets the
thread count from ``Global.num_threads``, which must happen before Paddle is imported.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from utils.build import build_network, configure_threads, topk_for
from utils.config import load_config
from utils.errors import UserError

CHECKPOINT_SUFFIXES = (".pdparams", ".pdopt", ".pdstates")


@dataclasses.dataclass
class Run:
    """A run opened by :func:`open_run`.

    Attributes:
        run_dir: the run directory.
        cfg: the resolved config (the run's ``config.yml``, or ``-c``), overrides applied.
        config_path: the file ``cfg`` was read from.
        checkpoint: checkpoint prefix (``RUN/best_model``), or None when not asked for.
    """
    run_dir: str
    cfg: dict
    config_path: str
    checkpoint: str | None = None


def _strip_suffix(path: str) -> str:
    for suffix in CHECKPOINT_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def run_dir_of(path: str) -> str:
    """The run directory of a run directory, checkpoint prefix or checkpoint file.

    Raises:
        UserError: nothing at ``path`` (neither a directory nor a checkpoint).
    """
    if os.path.isdir(path):
        return path
    prefix = _strip_suffix(path)
    if os.path.exists(path) or os.path.exists(prefix + ".pdparams"):
        # dirname of a bare 'best_model' is '' (the current directory).
        return os.path.dirname(prefix) or "."
    raise UserError(f"{path}: no such run directory or checkpoint (pass a run directory such as "
                    f"output/gmlp_digits/<timestamp>, or a checkpoint in one such as <run>/best_model)")


def open_config(path: str, overrides: Sequence[str] = ()) -> dict:
    """Load a config and set Paddle's CPU threads from its ``Global.num_threads``.

    The threads must be set before Paddle is imported (see ``utils.trainer.configure_threads``),
    so tools call this (or :func:`open_run`) first.

    Raises:
        UserError: no such file, or an invalid config.
    """
    if not os.path.isfile(path):
        raise UserError(f"-c {path}: no such config file (configs are in configs/, e.g. configs/cnn_digits.yml)")
    cfg = load_config(path, overrides)
    configure_threads(cfg["Global"]["num_threads"])
    return cfg


def open_run(path: str, checkpoint: str = "best_model", config: str | None = None, overrides: Sequence[str] = (),
             need_checkpoint: bool = True) -> Run:
    """Resolve a run directory or checkpoint path into a :class:`Run`.

    Sets Paddle's CPU threads from the config's ``Global.num_threads`` (a no-op once Paddle is
    imported), so a tool calls this before anything that imports Paddle.

    Args:
        path: run directory, checkpoint prefix (``RUN/best_model``) or checkpoint file
            (``RUN/best_model.pdparams``).
        checkpoint: checkpoint name used when ``path`` is a directory (``best_model``,
            ``latest``, ``epoch_N``); ignored when ``path`` names a checkpoint itself.
        config: config file to use instead of ``RUN/config.yml``.
        overrides: ``Section.key=value`` strings applied to the config.
        need_checkpoint: resolve the checkpoint (a UserError when it is missing); False for
            tools that only need the config.

    Returns:
        A :class:`Run`.

    Raises:
        UserError: no such path, no config.yml (and no ``-c``), no such checkpoint, or a damaged one
            (the message names the run's whole checkpoints to use instead).
    """
    run_dir = run_dir_of(path)
    cfg_path = config or os.path.join(run_dir, "config.yml")
    if not config and not os.path.isfile(cfg_path):
        raise UserError(f"{run_dir}: no config.yml; pass the training config with -c")
    cfg = open_config(cfg_path, overrides)
    prefix = None
    if need_checkpoint:
        from utils.training.checkpoint import open_checkpoint  # imports paddle: deferred until the thread count is set

        prefix = open_checkpoint(path, checkpoint)  # its weights verified: a damaged file is one line, not a traceback
    return Run(run_dir=run_dir, cfg=cfg, config_path=cfg_path, checkpoint=prefix)


def open_weights(config: str, overrides: Sequence[str] = ()) -> Run:
    """``-c CONFIG -o Global.pretrained_model=WEIGHTS`` (PaddleClas's eval): those weights with that config.

    Sets Paddle's CPU threads like :func:`open_run`. ``WEIGHTS`` is a ``.pdparams`` file, its prefix
    or a run directory (its best_model); the Run's directory is the one holding the weights.

    Raises:
        UserError: no config, no ``Global.pretrained_model``, or weights that are missing or damaged.
    """
    cfg = open_config(config, overrides)
    weights = cfg["Global"]["pretrained_model"]
    if not weights:
        raise UserError(f"-c {config}: no weights to evaluate: pass a run directory (tools/eval.py RUN), or "
                        f"-o Global.pretrained_model=PATH (a .pdparams file, its prefix or a run directory)")
    from utils.training.checkpoint import open_checkpoint  # imports paddle: deferred until the thread count is set

    try:
        prefix = open_checkpoint(weights, "best_model")
    except UserError as e:
        raise UserError(f"Global.pretrained_model: {e}") from None
    return Run(run_dir=os.path.dirname(prefix) or ".", cfg=cfg, config_path=config, checkpoint=prefix)


def evaluate_run(cfg: dict, checkpoint: str, split: str = "val", tta: str | None = None) -> dict:
    """Evaluate a checkpoint on a split of the config's data; returns a JSON-able report.

    Args:
        cfg: the resolved config the checkpoint was trained with.
        checkpoint: checkpoint prefix (``.../best_model``).
        split: ``val``, ``test`` or ``train``.
        tta: test-time augmentation (``--tta``); None = the config's ``Eval.tta``. The report's
            ``tta`` says which one ran.

    Raises:
        ConfigError: a TTA other than none for a regression run or non-image inputs.
    """
    from utils.data import build_datasets, build_eval_loader  # imports paddle: deferred until the thread count is set
    from utils.training.checkpoint import load_weights  # imports paddle: deferred until the thread count is set
    from utils.training.evaluate import (  # imports paddle: deferred until the thread count is set
        RegressionMetrics,
        check_tta,
        confusion_matrix,
        first_input_shape,
        per_class_accuracy,
        predict,
        summarize,
    )

    where = f"--tta {tta}" if tta else "Eval.tta"
    tta = tta or cfg["Eval"]["tta"]
    check_tta(tta, cfg["Global"]["task"] == "regression", where=where)  # before the data is read
    bundle = build_datasets(cfg)
    dataset = {"val": bundle.val, "test": bundle.test, "train": bundle.train}.get(split)
    if dataset is None:
        raise UserError(f"--split {split}: this dataset has no {split} split "
                        f"({cfg['Data']['name']} has: " + ", ".join(s for s in ("train", "val", "test") if getattr(bundle, s) is not None) + ")")
    network = build_network(cfg, bundle)
    load_weights(network, checkpoint)
    loader = build_eval_loader(cfg, dataset)
    check_tta(tta, bundle.task == "regression", first_input_shape(loader) if tta != "none" else None, where)
    logits, labels = predict(network, loader, tta)
    if bundle.task == "regression":
        metrics = RegressionMetrics.from_bundle(cfg, bundle)
        report = metrics(logits, labels)
        pred, true = metrics.denormalize(logits), metrics.denormalize(labels)
        err = pred - true
        report.update(split=split, checkpoint=checkpoint, task="regression", tta=tta, loss_name=metrics.loss,
                      target_mean=bundle.target_mean, target_std=bundle.target_std,
                      target_range=[float(true.min()), float(true.max())] if len(true) else None,
                      r2=float(1 - (err ** 2).sum() / max(((true - true.mean()) ** 2).sum(), 1e-12)) if len(true) else None,
                      abs_error_quantiles={q: float(np.quantile(np.abs(err), float(q))) for q in ("0.5", "0.9", "1.0")}
                      if len(err) else {})
        return report
    topk = topk_for(cfg, bundle.num_classes)
    report = summarize(logits, labels, topk, cfg["Loss"]["label_smoothing"])
    cm = confusion_matrix(logits, labels, bundle.num_classes)
    names = list(bundle.class_names)
    report.update(split=split, checkpoint=checkpoint, tta=tta,
                  per_class_accuracy={n: (None if np.isnan(a) else float(a)) for n, a in zip(names, per_class_accuracy(cm))},
                  confusion_matrix=cm.tolist(), class_names=names)
    return report


def format_report(report: dict) -> str:
    """A plain-text table of an :func:`evaluate_run` report."""
    if report.get("task") == "regression":
        norm = ("targets normalized with mean {:.4g}, std {:.4g}".format(report["target_mean"], report["target_std"])
                if report.get("target_mean") is not None else "targets not normalized")
        q = report.get("abs_error_quantiles") or {}
        lines = [f"{report['split']} split, {report['samples']} samples, checkpoint {report['checkpoint']}",
                 f"loss ({report['loss_name']}, training units) {report['loss']:.4f}",
                 f"mae {report['mae']:.4f}  rmse {report['rmse']:.4f}  r2 {report['r2']:.4f}  (target units; {norm})"]
        if q:
            lines.append("absolute error: median {:.4f}, 90th percentile {:.4f}, max {:.4f}".format(q["0.5"], q["0.9"], q["1.0"]))
        if report.get("target_range"):
            lines.append("targets in [{:.4g}, {:.4g}]".format(*report["target_range"]))
        return "\n".join(lines)
    names = report["class_names"]
    w = max(8, max(len(n) for n in names))
    lines = [f"{report['split']} split, {report['samples']} images, checkpoint {report['checkpoint']}",
             "  ".join(f"{k} {v:.4f}" for k, v in report.items() if k == "loss" or k.startswith("acc"))
             + f"  (test-time augmentation: {report.get('tta', 'none')})", "",
             f"{'class':<{w}}  accuracy"]
    for n in names:
        a = report["per_class_accuracy"][n]
        lines.append(f"{n:<{w}}  {'-' if a is None else f'{a:.4f}'}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    cm = report["confusion_matrix"]
    cw = max(4, max(len(str(v)) for row in cm for v in row) + 1)
    lines.append(" " * w + "".join(f"{i:>{cw}}" for i in range(len(names))))
    for i, row in enumerate(cm):
        lines.append(f"{names[i][:w]:<{w}}" + "".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)
