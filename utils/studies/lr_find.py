"""LR range test (Leslie Smith's "LR range test", as popularised by fastai's ``lr_find``) from a config.

:func:`run_lr_find` builds the config's data, model, optimizer and loss, runs the sweep and writes
its files; the plot and the VisualDL log are drawn here too. The curve's math (planned LRs,
smoothing, suggestions, the result) is in :mod:`utils.studies.lr_curve`, pure NumPy; running the
sweep on a Paddle network and restoring it afterwards is in :mod:`utils.studies.lr_sweep`. The
names of both are importable from here, the tools' one entry point.

Nothing here imports Paddle at module level, so :func:`check_sweep_args` works before the tools
set the thread count.
"""
from __future__ import annotations

import datetime
import math
import os
from collections.abc import Callable

import numpy as np

from utils.build import build_network, select_device
from utils.errors import UserError
from utils.studies.lr_curve import (
    DESCRIPTIONS,
    RECOMMENDED,
    SUGGESTIONS,
    LRFindResult,
    check_sweep_args,
    exp_lrs,
    format_lr,
    smooth_losses,
    suggest_lrs,
)
from utils.studies.lr_sweep import lr_range_test

__all__ = ["LRFindResult", "lr_range_test", "suggest_lrs", "check_sweep_args", "plot_lr_find", "write_visualdl",
           "run_lr_find", "exp_lrs", "smooth_losses", "format_lr", "default_out_dir", "sweeps_dir", "inside", "RECOMMENDED", "SUGGESTIONS",
           "DESCRIPTIONS"]


# ----------------------------------------------------------------------------- outputs

def plot_lr_find(result: LRFindResult, path: str, title: str | None = None) -> str:
    """Save loss vs LR (log x axis; raw and smoothed; suggestions marked) as a PNG at ``path``; returns ``path``."""
    # imports matplotlib: heavy, and only this output needs it
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    lrs = np.asarray(result.lrs, np.float64)
    raw = np.asarray(result.losses, np.float64)
    sm = np.asarray(result.smoothed, np.float64)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        ok = np.isfinite(raw)
        ax.plot(lrs[ok], raw[ok], color="0.7", lw=1, label="loss (raw)")
        ok = np.isfinite(sm)
        ax.plot(lrs[ok], sm[ok], color="C0", lw=2, label=f"loss (smoothed, beta {result.beta:g})")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        finite = sm[np.isfinite(sm)]
        if len(finite):
            best = float(finite.min())
            lo = min(best, float(raw[np.isfinite(raw)].min()))
            # the y range covers the curve up to its minimum; the explosion leaves the plot at the top
            upto = int(np.argmin(finite)) + 1
            top = max(float(finite[:upto].max()), best * 1.05)
            span = top - lo
            ax.set_ylim(lo - 0.05 * span, top + 0.25 * span)
        styles = {"valley": ("C3", "o"), "steepest": ("C2", "v"), "min_div10": ("C1", "s")}
        for name, lr in result.suggestions.items():
            colour, marker = styles[name]
            star = " (recommended)" if name == result.recommended else ""
            ax.axvline(lr, color=colour, ls="--", lw=1)
            y = float(np.interp(np.log10(lr), np.log10(lrs[np.isfinite(sm)]), sm[np.isfinite(sm)])) if len(finite) else 0
            ax.plot([lr], [y], marker=marker, color=colour, ms=9, ls="none",
                    label=f"{name}: {lr:.2e}{star}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=9)
        ax.set_title(title or f"LR range test: {result.iterations} iterations, {result.stop_reason}")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def write_visualdl(result: LRFindResult, log_dir: str) -> None:
    """Log the curve in ``log_dir`` (one LogWriter, one file): ``lr_find/loss_smoothed``,
    ``lr_find/loss_raw`` and ``lr_find/lr`` against the step (iteration + 1); non-finite values skipped."""
    # imports visualdl: heavy, and only this output needs it
    from visualdl import LogWriter

    with LogWriter(logdir=log_dir) as writer:
        for i, (lr, raw, sm) in enumerate(zip(result.lrs, result.losses, result.smoothed)):
            step = i + 1
            writer.add_scalar("lr_find/lr", lr, step)
            if math.isfinite(raw):
                writer.add_scalar("lr_find/loss_raw", raw, step)
            if math.isfinite(sm):
                writer.add_scalar("lr_find/loss_smoothed", sm, step)
        lines = [f"{k}: {v:.3g}" + (" (recommended)" if k == result.recommended else "")
                 for k, v in result.suggestions.items()]
        writer.add_text("lr_find/suggestions", "  \n".join(lines + [f"stop: {result.stop_detail}"]), 0)


# ----------------------------------------------------------------------------- from a config


def default_out_dir(cfg: dict) -> str:
    """``lr_find/<config name>/<timestamp>`` beside ``Global.output_dir`` (``output`` -> ``lr_find/...``).

    Not inside it: VisualDL lists every folder under ``--logdir`` that holds a log, so a sweep
    under ``output/`` showed up among the training runs of ``visualdl --logdir output``.
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(sweeps_dir(cfg), cfg["_meta"]["config_name"], stamp)


def sweeps_dir(cfg: dict) -> str:
    """The folder of every LR sweep: ``lr_find`` beside ``Global.output_dir``."""
    return os.path.join(os.path.dirname(os.path.normpath(cfg["Global"]["output_dir"])), "lr_find")


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it."""
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([path, folder]) == folder


def run_lr_find(cfg: dict, out_dir: str | None = None, start_lr: float = 1e-7, end_lr: float = 10.0,
                num_iters: int = 100, diverge_factor: float = 4.0, beta: float = 0.98,
                recommended: str = RECOMMENDED,
                print_fn: Callable[..., None] = print) -> tuple[LRFindResult, str]:
    """Config -> data (training loader, with its augmentation) -> model -> optimizer -> sweep -> files.

    Writes ``lr_find.png``, ``lr_find.json`` and a VisualDL log into ``out_dir`` (default
    :func:`default_out_dir`, beside ``Global.output_dir`` so VisualDL does not list the sweep among
    the training runs; an existing non-empty directory is refused).

    Returns:
        ``(result, out_dir)``.
    """
    check_sweep_args(start_lr, end_lr, num_iters, diverge_factor, beta)

    # imports paddle: deferred until the thread count is set
    from utils.data import build_datasets, build_loaders  # imports paddle: deferred until the thread count is set
    from utils.training.callbacks import seed_everything  # imports paddle: deferred until the thread count is set
    from utils.training.files import save_json  # imports paddle: deferred until the thread count is set
    from utils.training.losses import build_loss  # imports paddle: deferred until the thread count is set
    from utils.training.optim import build_optimizer  # imports paddle: deferred until the thread count is set

    out_dir = out_dir or default_out_dir(cfg)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise UserError(f"output directory {out_dir} already exists and is not empty: choose another --out")
    g = cfg["Global"]
    device = select_device(g["device"])
    seed_everything(g["seed"])
    bundle = build_datasets(cfg)
    loader, _ = build_loaders(cfg, bundle)
    network = build_network(cfg, bundle)
    optimizer = build_optimizer(cfg, network.parameters(), float(cfg["Optimizer"]["lr"]))
    loss_fn = build_loss(cfg, bundle.num_classes)
    sched = cfg["LRScheduler"]
    note = f"LRScheduler {sched['name']}"
    if sched["warmup_epochs"] > 0:
        note += f" with {sched['warmup_epochs']:g} warmup epochs"
    print_fn(f"lr_find: {cfg['Arch']['name']} with {cfg['Optimizer']['name']} on {bundle.name} "
             f"({len(bundle.train)} train images, batch {cfg['DataLoader']['batch_size']}, {len(loader)} steps/epoch, "
             f"{device}): lr {start_lr:g} -> {end_lr:g} over {num_iters} iterations")
    print_fn(f"  ({note} is ignored during the sweep: the LR follows the sweep; weight decay, momentum and "
             f"clipping are as configured)")

    result = lr_range_test(network, optimizer, loss_fn, loader, start_lr, end_lr, num_iters,
                           diverge_factor, beta, recommended)

    os.makedirs(out_dir, exist_ok=True)
    png = plot_lr_find(result, os.path.join(out_dir, "lr_find.png"),
                       title=f"LR range test: {cfg['_meta']['config_name']} ({cfg['Optimizer']['name']}), "
                             f"{result.stop_reason} after {result.iterations} iterations")
    data = result.to_dict()
    data.update({"config": cfg["_meta"]["config_path"], "model": cfg["Arch"]["name"],
                 "optimizer": cfg["Optimizer"]["name"], "config_lr": cfg["Optimizer"]["lr"],
                 "schedule_ignored": note})
    if result.recommended_lr is not None:
        data["override"] = f"-o Optimizer.lr={format_lr(result.recommended_lr)}"
    save_json(data, os.path.join(out_dir, "lr_find.json"))
    write_visualdl(result, out_dir)

    print_fn(f"  stopped: {result.stop_reason} ({result.stop_detail}); {result.seconds:.1f}s")
    print_fn(f"  best smoothed loss {result.best_loss:.4g} at lr {result.best_lr:.3g}")
    for w in result.warnings:
        print_fn(f"warning: {w}")
    for name in SUGGESTIONS:
        if name in result.suggestions:
            star = "  <- recommended" if name == result.recommended else ""
            print_fn(f"  {name:<10} {result.suggestions[name]:<9.3g} {DESCRIPTIONS[name]}{star}")
    print_fn(f"  config's lr {cfg['Optimizer']['lr']:g}")
    print_fn(f"wrote {out_dir}: {os.path.basename(png)}, lr_find.json and its VisualDL log "
             f"(visualdl --logdir {out_dir})")
    runs_dir = g["output_dir"]
    if inside(out_dir, runs_dir):
        print_fn(f"note: {out_dir} is inside Global.output_dir {runs_dir}: `visualdl --logdir {runs_dir}` lists it "
                 f"as a run (without --out, sweeps go to {sweeps_dir(cfg)})")
    return result, out_dir
