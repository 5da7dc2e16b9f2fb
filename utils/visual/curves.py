"""Training curves: loss, accuracy (regression: MAE) and learning rate of one or more runs.

Read from the runs' VisualDL logs, or from ``metrics.json`` when a run has none; drawn
without a network, so nothing here needs the run's data or checkpoint.
"""
from __future__ import annotations

import json
import os

import numpy as np
from matplotlib.lines import Line2D

from utils.config.load import saved_config_name
from utils.errors import UserError
from utils.runs import run_dir_of
from utils.training.vdl_log import log_files, read_scalars
from utils.visual import plots
from utils.visual.common import PlotResult

TRAIN_TAGS = {"loss": "train/loss", "acc": "train/acc", "lr": "train/lr"}
EVAL_TAGS = {"loss": "eval/loss", "acc": "eval/acc", "mae": "eval/mae"}  # mae: regression runs


def _read_vdl(files: list[str]) -> dict:
    """{tag: (steps, values)} of the curves this module draws, from VisualDL logs."""
    data = read_scalars(files, set(TRAIN_TAGS.values()) | set(EVAL_TAGS.values()))
    return {tag: (np.array([s for s, _ in pts]), np.array([v for _, v in pts])) for tag, pts in data.items()}


def read_curves(run_dir: str) -> dict:
    """The curves of one run.

    Args:
        run_dir: a run directory (or a checkpoint in one).

    Returns:
        dict with ``train`` and ``eval``: {metric: (steps, values)}, and ``source``:
        ``visualdl`` or ``metrics.json`` (eval points only: the file has no per-step values).

    Raises:
        UserError: no such directory, or no log in it.
    """
    run_dir = run_dir_of(run_dir)
    logs = log_files(run_dir)
    data = _read_vdl(logs) if logs else {}
    if data:
        return {"train": {k: data[t] for k, t in TRAIN_TAGS.items() if t in data},
                "eval": {k: data[t] for k, t in EVAL_TAGS.items() if t in data}, "source": "visualdl"}
    metrics = os.path.join(run_dir, "metrics.json")
    if os.path.isfile(metrics):
        with open(metrics, encoding="utf-8") as f:
            history = json.load(f).get("history") or []
        ev = {}
        for k in EVAL_TAGS:
            pts = [(h["step"], h[k]) for h in history if k in h and "step" in h]
            if pts:
                ev[k] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts], np.float64))
        return {"train": {}, "eval": ev, "source": "metrics.json"}
    if logs:
        raise UserError(f"{run_dir}: its VisualDL log has no train/ or eval/ scalars yet and there is no metrics.json; "
                        f"run this again once training has logged its first steps")
    inside = sorted(d for d in os.listdir(run_dir) if os.path.isdir(os.path.join(run_dir, d))
                    and any(f.startswith("vdlrecords.") or f == "metrics.json" for f in os.listdir(os.path.join(run_dir, d))))
    hint = (f"; runs inside it: {', '.join(os.path.join(run_dir, d) for d in inside[:5])}" + (" ..." if len(inside) > 5 else "")
            if inside else "; pass a run directory written by tools/train.py")
    raise UserError(f"{run_dir}: no training log here (no vdlrecords.* or metrics.json){hint}")


def config_name_of(run_dir: str) -> str:
    """The config a run was trained from: its ``config.yml``'s ``# config_name:`` line, else the
    config file named in ``metrics.json``, else the folder above the run (``output/<config>/<run>``)."""
    name = saved_config_name(os.path.join(run_dir, "config.yml"))
    if name:
        return name
    try:
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
            path = json.load(f).get("config")
        if isinstance(path, str) and path:
            return os.path.splitext(os.path.basename(path))[0]
    except (OSError, ValueError, AttributeError):
        pass  # no or damaged metrics.json: the folder name below still says where it was trained
    return os.path.basename(os.path.dirname(os.path.normpath(os.path.abspath(run_dir))))


def run_labels(run_dirs: list[str]) -> list[str]:
    """Legend names ``<config name>/<run name>`` (``cnn_digits/20261201-120000``, or the run_name);
    runs that would share a label are named by their directory instead."""
    dirs = [run_dir_of(d) for d in run_dirs]
    labels = [f"{config_name_of(d)}/{os.path.basename(os.path.normpath(os.path.abspath(d)))}" for d in dirs]
    return [lab if labels.count(lab) == 1 else os.path.normpath(d) for lab, d in zip(labels, dirs)]


def plot_curves(run_dirs: list[str], out: str) -> PlotResult:
    """Loss, accuracy and learning rate of one or more runs on the global-step axis.

    Train curves are drawn smoothed (debiased exponential average, weight 0.6, VisualDL's
    default) over the raw per-step values drawn faint; validation points are dashed with
    markers. Runs are told apart by colour (legend: ``<config name>/<run name>``).

    Args:
        run_dirs: run directories (or checkpoints in them).
        out: PNG path.

    Returns:
        :class:`PlotResult` with 3 panels.
    """
    if not run_dirs:
        raise UserError("curves: give at least one run directory")
    curves = [read_curves(d) for d in run_dirs]
    labels = run_labels(run_dirs)
    fig = plots.new_figure(1500, 500)
    axes = plots.grid(fig, 1, 3)[0]
    colors = [f"C{i % 10}" for i in range(len(curves))]
    notes = []
    for c, label, color in zip(curves, labels, colors):
        if not c["train"] and not c["eval"]:
            notes.append(f"{label}: the log has no loss, accuracy or LR values yet; nothing drawn for it")
        elif c["source"] != "visualdl":
            notes.append(f"{label}: no VisualDL log, validation points from metrics.json only")
        for ax, key in zip(axes[:2], ("loss", "mae" if "mae" in c["eval"] and "acc" not in c["eval"] else "acc")):
            if key in c["train"]:
                steps, values = c["train"][key]
                ax.plot(steps, values, color=color, alpha=0.2, lw=0.8)
                ax.plot(steps, plots.smooth(values), color=color, lw=1.6)
            if key in c["eval"]:
                steps, values = c["eval"][key]
                ax.plot(steps, values, color=color, ls="--", marker="o", ms=3.5, lw=1.2)
        if "lr" in c["train"]:
            axes[2].plot(*c["train"]["lr"], color=color, lw=1.6)
    regression = any("mae" in c["eval"] for c in curves)
    middle = "val MAE (target units)" if regression and not any("acc" in c["eval"] for c in curves) \
        else "accuracy (top-1)" + (" / val MAE" if regression else "")
    for ax, title in zip(axes, ("loss", middle, "learning rate")):
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    handles = [Line2D([], [], color=col, lw=2.5, label=lab) for col, lab in zip(colors, labels)]
    handles += [Line2D([], [], color="gray", lw=1.6, label=f"train (smoothed {plots.SMOOTHING})"),
                Line2D([], [], color="gray", lw=0.8, alpha=0.35, label="train (raw)"),
                Line2D([], [], color="gray", lw=1.2, ls="--", marker="o", ms=3.5, label="val")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize=9, frameon=False)
    size = plots.save(fig, out)
    return PlotResult(out, size, 3, notes)
