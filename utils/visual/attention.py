"""Attention: SpatialAttention maps over an image (``*_sa`` models), or gMLP's token-mixing
weights (its Spatial Gating Units) as heatmaps and on the patch grid.
"""
from __future__ import annotations

import math
import os

import numpy as np
from matplotlib.axes import Axes
from PIL import Image

from utils.build import network_input_side
from utils.errors import UserError
from utils.visual import plots
from utils.visual.common import PlotResult, forward, load_image, load_network, model_name


def attention_models() -> list[str]:
    """Registered models with something to draw for ``attention``: spatial attention or gMLP."""
    from models import list_models  # imports paddle (and registers the models): deferred until the thread count is set

    return [m for m in list_models() if "_sa" in m or "gmlp" in m]


def _upsample(m: np.ndarray, side: int) -> np.ndarray:
    """Bilinear resize of a [h, w] map to side x side (PIL float mode keeps the values)."""
    return np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((side, side), Image.BILINEAR))


def _overlay(ax: Axes, picture: np.ndarray, heat: np.ndarray, title: str, alpha: float = 0.5, vmin: float = 0.0,
             vmax: float = 1.0, cmap: str = "jet") -> None:
    gray = picture.mean(axis=2) if picture.shape[2] == 3 else picture[:, :, 0]
    ax.imshow(gray if picture.shape[2] == 1 else picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax, interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def plot_attention(cfg: dict, checkpoint: str, out: str, image: str | None = None) -> PlotResult:
    """What the model's attention looks at.

    * SpatialAttention models (``*_sa``): each layer's ``last_map`` after a forward pass on
      ``image``, at its own resolution and upsampled over the image.
    * gMLP: each Spatial Gating Unit's token-mixing weights ``spatial_weight`` [L, L] as a
      heatmap, the centre token's row on the patch grid (which patches feed it), and that row
      upsampled over the image when one is given.

    Args:
        cfg: the run's config.
        checkpoint: checkpoint prefix.
        out: PNG path.
        image: image file; required for spatial attention (the maps depend on the input).

    Returns:
        :class:`PlotResult`. Spatial attention: panels = 1 + 2 x layers; gMLP: 2 or 3 per SGU.

    Raises:
        UserError: a model with neither, or no image for spatial attention.
    """
    # imports paddle: deferred until the thread count is set
    from models.gmlp import SpatialGatingUnit  # imports paddle: deferred until the thread count is set
    from models.spatial_attention import SpatialAttention  # imports paddle: deferred until the thread count is set
    from utils.training.evaluate import softmax  # imports paddle: deferred until the thread count is set

    network, bundle = load_network(cfg, checkpoint)
    subs = list(network.named_sublayers())
    sa = [(n, l) for n, l in subs if isinstance(l, SpatialAttention)]
    sgu = [(n, l) for n, l in subs if isinstance(l, SpatialGatingUnit)]
    if not sa and not sgu:
        raise UserError(f"attention: {model_name(cfg)} has no attention layers to draw; models with attention: "
                        f"{', '.join(attention_models())} (e.g. train configs/cnn_sa_digits.yml)")
    if sa and image is None:
        raise UserError(f"attention: {model_name(cfg)}'s spatial attention depends on the input: "
                        f"pass an IMAGE after the checkpoint")
    notes = []
    picture = None
    if image is not None:
        x, picture, notes = load_image(image, bundle)
    side = network_input_side(bundle)
    title = f"{model_name(cfg)} attention" + (f" on {os.path.basename(image)}" if image else "")

    if sa:
        logits = forward(network, x)
        probs = softmax(logits[0])
        pred = int(probs.argmax())
        per_band = 5
        bands = math.ceil(len(sa) / per_band)
        cols = 1 + min(len(sa), per_band)
        cell = 220
        fig = plots.new_figure(cols * cell, 2 * bands * cell + 60)
        axes = plots.grid(fig, 2 * bands, cols)
        plots.off(axes)
        axes[0, 0].set_axis_on()
        plots.show_image(axes[0, 0], picture, f"input, predicted {plots.short(bundle.class_names[pred])} "
                                              f"({probs[pred]:.0%})", fontsize=8)
        for i, (name, layer) in enumerate(sa):
            m = layer.last_map.numpy()[0, 0]
            r, c = 2 * (i // per_band), 1 + i % per_band
            for ax in (axes[r, c], axes[r + 1, c]):
                ax.set_axis_on()
            _overlay(axes[r, c], picture, _upsample(m, side), f"{plots.short(name, 26)}\nover the image")
            plots.show_map(axes[r + 1, c], m, f"{m.shape[0]}x{m.shape[1]} map, {m.min():.2f}..{m.max():.2f}",
                           cmap="jet", fontsize=8)
            axes[r + 1, c].images[0].set_clim(0, 1)
        fig.suptitle(f"{title}: SpatialAttention maps (sigmoid, 0 blue .. 1 red; the input is multiplied by them)",
                     fontsize=10)
        size = plots.save(fig, out)
        return PlotResult(out, size, 1 + 2 * len(sa), notes)

    cols = 3 if picture is not None else 2
    cell = 280 if cols == 3 else 330  # two columns at 280 px clipped the titles
    fig = plots.new_figure(cols * cell, len(sgu) * cell + 60)
    axes = plots.grid(fig, len(sgu), cols)
    for r, (name, layer) in enumerate(sgu):
        w = layer.spatial_weight.numpy()
        seq = w.shape[0]
        g = int(round(math.sqrt(seq)))
        center = (g // 2) * g + g // 2
        plots.show_map(axes[r, 0], w, f"{plots.short(name, 28)}: spatial_weight [{seq}x{seq}]\n"
                                      f"row = output token, column = input token", cmap="RdBu_r",
                       symmetric=True, fontsize=8, colorbar=True)
        row = w[center].reshape(g, g)
        plots.show_map(axes[r, 1], row, f"row of token {center} (centre, marked)\non the {g}x{g} patch grid",
                       cmap="RdBu_r", symmetric=True, fontsize=8, colorbar=True)
        axes[r, 1].plot([g // 2], [g // 2], marker="x", color="black", ms=8, mew=2)
        if picture is not None:
            vmax = float(np.abs(row).max()) or 1.0
            _overlay(axes[r, 2], picture, _upsample(row, side), "centre token's row over the image",
                     alpha=0.55, vmin=-vmax, vmax=vmax, cmap="RdBu_r")
    fig.suptitle(f"{title}: gMLP token mixing\n(Spatial Gating Units; red: positive weight, blue: negative)",
                 fontsize=10)
    size = plots.save(fig, out)
    return PlotResult(out, size, cols * len(sgu), notes)
