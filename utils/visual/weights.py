"""Weights of a trained run: the first layer's filters as one image mosaic, and a histogram of
the weights of every layer that has parameters of its own.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps

from utils.build import network_input_side
from utils.visual import plots
from utils.visual.common import PlotResult, load_network, model_name

if TYPE_CHECKING:
    import paddle

    from utils.data import DataBundle

MAX_FILTERS = 64               # first-layer filters drawn (cnn: 32, googlenet stem: 16-64)
MAX_HISTOGRAMS = 24            # weight-histogram panels; deeper models get evenly spaced layers


def _first_layer_filters(network: paddle.nn.Layer, bundle: DataBundle) -> tuple[str, np.ndarray, str] | None:
    """(name, filters [N, C, k, k], kind) of the first Conv2D, or of the first Linear on the raw
    pixels (an MLP's hidden units reshaped to the image); None when there is neither."""
    import paddle.nn as nn  # deferred until the thread count is set

    for name, layer in network.named_sublayers():
        if isinstance(layer, nn.Conv2D):
            return name, layer.weight.numpy(), "Conv2D"
    side = network_input_side(bundle)
    pixels = bundle.in_channels * side * side
    for name, layer in network.named_sublayers():
        if isinstance(layer, nn.Linear) and layer.weight.shape[0] == pixels:
            # Paddle's Linear weight is [in, out]: column j is hidden unit j's view of the image.
            w = layer.weight.numpy().T.reshape(-1, bundle.in_channels, side, side)
            return name, w, "Linear"
    return None


def _filter_tiles(w: np.ndarray) -> tuple[np.ndarray, str]:
    """Filters [N, C, k, k] -> (RGB tiles [N, k, k, 3] in [0, 1], colour legend text).

    RGB filters (C = 3) are drawn in colour, each stretched to its own range (their sign is
    not visible, their colour pattern is); other filters (grayscale input, or the mean over C)
    on a diverging map centred on 0 with one scale for all, so sizes and signs compare.
    """
    if w.shape[1] == 3:
        lo = w.min(axis=(1, 2, 3), keepdims=True)
        hi = w.max(axis=(1, 2, 3), keepdims=True)
        return (w - lo).transpose(0, 2, 3, 1) / np.where(hi > lo, hi - lo, 1.0), "RGB, each filter stretched to its range"
    m = w.mean(axis=1)
    vmax = float(np.abs(m).max()) or 1.0
    tiles = colormaps["RdBu_r"]((m / vmax + 1) / 2)[..., :3]
    mean = f"mean over {w.shape[1]} input channels, " if w.shape[1] != 1 else ""
    return tiles, f"{mean}blue < 0 < red, |w| <= {vmax:.3g}"


def _histogram_layers(network: paddle.nn.Layer) -> list[tuple[str, str, np.ndarray, str]]:
    """[(name, type, values, what)] of every layer with parameters of its own, in order.

    Biases are left out when the layer has other parameters: they start at 0 (or 1) and
    would squeeze the weights' histogram into a spike.
    """
    out = []
    for name, layer in network.named_sublayers():
        # BatchNorm's running mean/variance are parameters with stop_gradient set: statistics, not weights.
        named = {k: p for k, p in layer.named_parameters(include_sublayers=False) if not p.stop_gradient}
        if not named:
            continue
        weights = [(k, p) for k, p in named.items() if "bias" not in k] or list(named.items())
        values = np.concatenate([p.numpy().ravel() for _, p in weights])
        what = "+".join(f"{k}{list(p.shape)}" for k, p in weights)
        out.append((name, type(layer).__name__, values, what))
    return out


def plot_weights(cfg: dict, checkpoint: str, out: str) -> PlotResult:
    """First-layer filters as an image grid, and a weight histogram per parameterized layer.

    Filters: the first Conv2D in the network's layer order (an MLP without one: its first
    Linear's hidden units reshaped to the image), at most 64, tiled into one mosaic panel. RGB
    filters are drawn in colour, each stretched to its own range; others on a diverging map
    centred on 0 (shared scale, so sizes compare). Histograms: one panel per layer with
    parameters, at most 24 (evenly spaced over the depth).

    Args:
        cfg: the run's config.
        checkpoint: checkpoint prefix.
        out: PNG path.

    Returns:
        :class:`PlotResult`; panels = 1 (the filter mosaic) + histograms drawn.
    """
    network, bundle = load_network(cfg, checkpoint)
    first = _first_layer_filters(network, bundle)
    layers = _histogram_layers(network)
    shown = plots.evenly_spaced(layers, MAX_HISTOGRAMS)
    notes = []

    n_filters = min(MAX_FILTERS, len(first[1])) if first else 0
    f_cols = 16 if n_filters > 32 else 8
    f_rows = max(1, math.ceil(n_filters / f_cols))
    h_cols = 6
    h_rows = max(1, math.ceil(len(shown) / h_cols))
    top_h, bottom_h = f_rows * 90 + 80, h_rows * 190 + 70
    fig = plots.new_figure(1500, top_h + bottom_h)
    top, bottom = fig.subfigures(2, 1, height_ratios=[top_h, bottom_h])

    ax = top.subplots()
    ax.set_axis_off()
    if first:
        # One mosaic image rather than one axes per filter: 64 axes cost ~1 s to lay out and draw.
        name, w, kind = first
        tiles, colour = _filter_tiles(w[:n_filters])
        ax.imshow(plots.mosaic(tiles, f_cols), interpolation="nearest")
        what = "filters" if kind == "Conv2D" else "hidden units' input weights as images"
        top.suptitle(f"first layer: {name} ({kind}), {n_filters} of {len(w)} {what} "
                     f"{w.shape[2]}x{w.shape[3]}x{w.shape[1]} ({colour})", fontsize=10)
    else:
        ax.text(0.5, 0.5, f"{model_name(cfg)} has no Conv2D and no Linear on the raw pixels", ha="center", va="center")
        notes.append(f"{model_name(cfg)}: no first-layer filters to draw")

    h_axes = plots.grid(bottom, h_rows, h_cols)
    for i, ax in enumerate(h_axes.ravel()):
        if i >= len(shown):
            ax.set_axis_off()
            continue
        name, kind, values, what = shown[i]
        counts, edges = np.histogram(values, bins=50)
        ax.stairs(counts, edges, fill=True, color="C0")  # one artist; ax.hist draws 50 bar patches
        ax.set_title(f"{plots.short(name, 26)} ({kind})\n{plots.short(what, 34)}  std {values.std():.3g}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    more = f", {len(shown)} of {len(layers)} layers evenly spaced over the depth" if len(shown) < len(layers) else ""
    bottom.suptitle(f"weight histograms per layer (biases left out){more}", fontsize=10)
    if len(shown) < len(layers):
        notes.append(f"histograms: {len(shown)} of {len(layers)} layers shown")
    size = plots.save(fig, out)
    return PlotResult(out, size, int(n_filters > 0) + len(shown), notes)
