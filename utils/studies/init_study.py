"""Weight-init study of any model: how activations evolve through depth at initialisation.

:func:`model_activation_stats` runs one real batch through a network with forward post-hooks on
every conv/linear layer and every activation layer, and records the mean, std, saturation
(fraction of |y| > 0.99 after tanh; y < 0.01 or y > 0.99 after sigmoid) and, after ReLU, the
fraction of exact zeros and of dead units (channels that are zero for every sample and position
of the batch). :func:`model_study` does it for a config's model on its training data.

:func:`plot_histograms` draws the activation histograms (one panel per layer) to a PNG and
:func:`save_table` writes the rows as CSV and JSON, for this mode and for the lecture's
experiment on a plain fully connected net (:mod:`utils.studies.init_classic`, whose names are
importable from here too). Everything runs on Paddle tensors with a fixed seed.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import warnings
from typing import TYPE_CHECKING

import numpy as np

from utils.build import build_network
from utils.data import build_datasets
from utils.errors import UserError
from utils.studies.init_classic import (
    CLASSIC_ACTIVATIONS,
    CLASSIC_INITS,
    classic_experiment,
    classic_panels,
    classic_scale,
    classic_table,
    format_classic,
)
from utils.studies.init_stats import (
    ACTIVATION_TYPES,
    HIST_BINS,
    RECTIFIERS,
    SATURATING,
    histogram,
    tensor_stats,
)

if TYPE_CHECKING:
    import paddle

    from utils.data import DataBundle

__all__ = ["CLASSIC_ACTIVATIONS", "CLASSIC_INITS", "HIST_BINS", "MODEL_INITS", "classic_experiment",
           "classic_panels", "classic_scale", "classic_table", "findings", "format_classic", "format_model_rows",
           "hooked_layers", "load_batch", "model_activation_stats", "model_panels", "model_study",
           "plot_histograms", "prepare_for_study", "save_table", "tensor_stats"]


# --------------------------------------------------------------------------- any model

def _activation_kind(layer: paddle.nn.Layer) -> str | None:
    """``tanh``/``sigmoid`` for saturating activation layers, ``relu`` for rectifiers, else None."""
    name = type(layer).__name__
    if name in SATURATING:
        return SATURATING[name]
    if name in RECTIFIERS:
        return "relu"
    return None


def hooked_layers(model: paddle.nn.Layer) -> list[tuple[str, paddle.nn.Layer, str]]:
    """(name, layer, kind) of the layers the study hooks: conv/linear (``kind='linear'``) and activations."""
    # imports paddle: deferred until the thread count is set
    import paddle.nn as nn

    weighted = (nn.Conv1D, nn.Conv2D, nn.Conv3D, nn.Conv2DTranspose, nn.Linear)
    out = []
    for name, layer in model.named_sublayers(include_self=False):
        if isinstance(layer, weighted):
            out.append((name, layer, "linear"))
        elif type(layer).__name__ in ACTIVATION_TYPES:
            out.append((name, layer, "activation"))
    return out


def prepare_for_study(model: paddle.nn.Layer) -> paddle.nn.Layer:
    """Training mode (BatchNorm normalises with the batch's statistics, as at the first step), dropout off."""
    model.train()
    for layer in model.sublayers(include_self=True):
        if type(layer).__name__ in ("Dropout", "Dropout2D", "Dropout3D", "AlphaDropout", "DropPath"):
            layer.eval()
    return model


def model_activation_stats(model: paddle.nn.Layer, images: paddle.Tensor | np.ndarray, max_layers: int = 0, bins: int = HIST_BINS) -> list[dict]:
    """Per-layer activation statistics of ``model`` on one batch.

    Forward post-hooks on every conv/linear and activation layer (removed afterwards, also on
    error) record the output of each call in forward order; a layer called twice gives two
    rows (``name#2``). The model is put in study mode by :func:`prepare_for_study` first
    (BatchNorm on batch statistics, dropout off) and run without gradients.

    Args:
        model: a ``paddle.nn.Layer``.
        images: a float tensor or array [N, C, H, W].
        max_layers: keep at most this many rows, evenly spaced from the first to the last
            hooked call (0 = all).
        bins: histogram bins per layer.

    Returns:
        Rows ``{"index", "name", "type", "kind", "shape", "mean", "std", "min", "max",
        "saturated", "zero_frac", "dead_frac", "hist"}`` in forward order.
    """
    # imports paddle: deferred until the thread count is set
    import paddle

    rows, calls, handles = [], {}, []

    def make_hook(name, kind):
        def hook(layer, inputs, output):
            if not isinstance(output, paddle.Tensor):
                return None
            calls[name] = calls.get(name, 0) + 1
            label = name if calls[name] == 1 else f"{name}#{calls[name]}"
            act = _activation_kind(layer) if kind == "activation" else None
            channel_axis = 1 if output.ndim == 4 else -1
            stats = tensor_stats(output.detach(), act, channel_axis)
            v = output.detach().astype("float32").numpy().ravel()
            if act == "relu":
                v = v[v > 0]  # the zeros are in zero_frac; their spike would hide the shape
            stats["hist"] = histogram(v, 0.0 if act == "relu" else stats["min"], stats["max"], bins)
            rows.append({"index": len(rows), "name": label, "type": type(layer).__name__, "kind": kind,
                         "shape": list(output.shape), **stats})
            return None
        return hook

    prepare_for_study(model)
    try:
        for name, layer, kind in hooked_layers(model):
            handles.append(layer.register_forward_post_hook(make_hook(name, kind)))
        x = images if isinstance(images, paddle.Tensor) else paddle.to_tensor(np.asarray(images, dtype="float32"))
        with paddle.no_grad(), warnings.catch_warnings():
            # BatchNorm in training mode warns that it tracks global statistics: expected here.
            warnings.filterwarnings("ignore", message=".*always track global mean and variance.*")
            model(x)
    finally:
        for h in handles:
            h.remove()
    if max_layers and len(rows) > max_layers:
        keep = sorted({int(round(i)) for i in np.linspace(0, len(rows) - 1, max_layers)})
        rows = [rows[i] for i in keep]
    return rows


def format_model_rows(rows: list[dict]) -> str:
    """Fixed-width table of :func:`model_activation_stats` rows."""
    def pct(v):
        return "" if v is None else f"{100 * v:.1f}%"

    width = max([len("layer")] + [len(r["name"]) for r in rows])
    head = (f"{'#':>3} {'layer':<{width}} {'type':<10} {'shape':<16} {'mean':>10} {'std':>10} "
            f"{'saturated':>9} {'zeros':>7} {'dead':>7}")
    lines = [head]
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        lines.append(f"{r['index']:>3} {r['name']:<{width}} {r['type']:<10} {shape:<16} {r['mean']:>10.4g} "
                     f"{r['std']:>10.4g} {pct(r['saturated']):>9} {pct(r['zero_frac']):>7} {pct(r['dead_frac']):>7}")
    return "\n".join(lines)


def findings(rows: list[dict], std_low: float = 1e-3, std_high: float = 1e3, saturated_high: float = 0.5,
             dead_high: float = 0.1) -> list[str]:
    """Plain-language warnings for vanishing/exploding stds, saturation and dead ReLUs."""
    out = []
    for r in rows:
        if not (math.isfinite(r["mean"]) and math.isfinite(r["std"])):
            out.append(f"{r['name']}: non-finite activations (mean {r['mean']}, std {r['std']})")
        elif r["std"] < std_low:
            out.append(f"{r['name']}: std {r['std']:.2g} < {std_low:g}: activations vanish (init too small?)")
        elif r["std"] > std_high:
            out.append(f"{r['name']}: std {r['std']:.2g} > {std_high:g}: activations explode (init too large?)")
        if r["saturated"] is not None and r["saturated"] > saturated_high:
            out.append(f"{r['name']}: {100 * r['saturated']:.0f}% of the {r['type']} outputs are saturated "
                       f"(gradients vanish there; use Xavier init or normalise the input)")
        if r["dead_frac"] is not None and r["dead_frac"] > dead_high:
            out.append(f"{r['name']}: {100 * r['dead_frac']:.0f}% dead ReLU units (zero for the whole batch; "
                       f"check biases, init scale and learning rate)")
    return out


# --------------------------------------------------------------------------- output

def plot_histograms(panels: list[list[tuple[str, tuple]]], path: str, title: str | None = None,
                    ncols: int = 10) -> int:
    """Draw histogram panels to ``path`` (PNG); returns the number of panels (the figure's axes).

    Args:
        panels: a list of rows, each a list of ``(label, (counts, edges))``: one figure row per
            list (wrapped at ``ncols``), one panel per layer.
        path: output PNG.
        title: figure title.
        ncols: panels per figure row.
    """
    # imports matplotlib: heavy, and only this output needs it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = []
    for row in panels:
        for s in range(0, max(len(row), 1), ncols):
            grid.append(row[s:s + ncols])
    nrows = len(grid)
    ncols = max(len(r) for r in grid)
    height = 1.6 * nrows + 0.9
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, height), squeeze=False)
    drawn = 0
    for i, row in enumerate(grid):
        for k in range(ncols):
            ax = axes[i][k]
            if k >= len(row):
                fig.delaxes(ax)
                continue
            label, (counts, edges) = row[k]
            ax.stairs(counts, edges, fill=True, color="tab:blue")
            ax.set_title(label, fontsize=6)
            ax.tick_params(labelsize=5)
            ax.set_yticks([])
            ax.locator_params(axis="x", nbins=4)
            drawn += 1
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.12 / height, va="top")
    # Fixed margins: tight_layout and few-tick axes cut the time of an 80-panel grid from ~5 s to ~1.5 s.
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.3 / height, top=1 - 0.8 / height, wspace=0.15,
                        hspace=0.75)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    n_axes = len(fig.axes)  # == drawn: unused grid cells were deleted
    plt.close(fig)
    return n_axes


def model_panels(rows: list[dict]) -> list[list[tuple[str, tuple]]]:
    """Histogram panels of :func:`model_activation_stats`: one panel per row."""
    return [[(f"{r['name']} ({r['type']})\nstd {r['std']:.3g}", r["hist"]) for r in rows]]


def save_table(rows: list[dict], prefix: str) -> tuple[str, str]:
    """Write ``rows`` (histograms left out) to ``prefix.csv`` and ``prefix.json``; returns both paths."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    clean = [{k: v for k, v in r.items() if k != "hist"} for r in rows]
    keys = list(clean[0]) if clean else []
    with open(prefix + ".csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in clean:
            w.writerow({k: ("x".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v))
                        for k, v in r.items()})
    with open(prefix + ".json", "w", encoding="utf-8") as f:
        json.dump(clean, f, indent=1)
    return prefix + ".csv", prefix + ".json"


# --------------------------------------------------------------------------- config-driven study

MODEL_INITS = ("default", "xavier", "kaiming", "normal")


def load_batch(cfg: dict, bundle: DataBundle, batch_size: int | None = None, seed: int = 0) -> np.ndarray:
    """One batch [N, C, H, W] (float32 numpy) of the training images, eval transform, fixed random pick.

    The eval pipeline (normalisation, resize/crop, no random augmentation) keeps the batch
    deterministic; the samples are a seeded random subset so every class is represented.
    """
    ds = bundle.train.with_transform(bundle.eval_transform)
    n = min(int(batch_size or cfg["DataLoader"]["batch_size"]), len(ds))
    idx = np.random.RandomState(seed).choice(len(ds), n, replace=False)
    return np.stack([np.asarray(ds[int(i)][0], dtype="float32") for i in idx])


def model_study(cfg: dict, init: str | None = None, init_std: float | None = None, batch_size: int | None = None,
                max_layers: int = 0, seed: int | None = None, bins: int = HIST_BINS,
                bundle: DataBundle | None = None) -> dict:
    """Build the config's model with ``init`` and collect :func:`model_activation_stats` on one batch.

    Args:
        cfg: a loaded config.
        init: ``default``/``xavier``/``kaiming``/``normal``, or None for ``Arch.init``.
        init_std: std for ``normal`` (None: ``Arch.init_std``).
        batch_size: images in the batch (None: ``DataLoader.batch_size``).
        max_layers: rows kept, evenly spaced (0 = all).
        seed: seeds the model init and the batch pick (None: ``Global.seed``).
        bundle: an already built data bundle (else :func:`utils.data.build_datasets`).

    Returns:
        ``{"model", "rows", "init", "init_std", "batch_shape"}``.
    """
    # imports paddle: deferred until the thread count is set
    import paddle


    init = cfg["Arch"]["init"] if init is None else init
    if init not in MODEL_INITS:
        raise UserError(f"--init {init}: unknown init, choose one of {', '.join(MODEL_INITS)}")
    cfg = copy.deepcopy(cfg)
    cfg["Arch"]["init"] = init
    if init_std is not None:
        cfg["Arch"]["init_std"] = float(init_std)
    seed = cfg["Global"]["seed"] if seed is None else seed
    bundle = bundle or build_datasets(cfg)
    images = load_batch(cfg, bundle, batch_size, seed)
    paddle.seed(seed)
    model = build_network(cfg, bundle)
    rows = model_activation_stats(model, images, max_layers=max_layers, bins=bins)
    return {"model": model, "rows": rows, "init": init, "init_std": cfg["Arch"]["init_std"],
            "batch_shape": list(images.shape)}
