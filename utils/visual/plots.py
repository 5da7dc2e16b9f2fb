"""Matplotlib helpers for the pictures of :mod:`utils.visual`: exact-size figures, image panels, smoothing.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``), never pyplot:
no global figure registry to leak memory in a long test session, and no GUI backend is
needed; ``Figure.savefig`` renders PNGs with Agg. The Agg backend is still selected here
(when pyplot is not loaded yet) so that nothing a user imports later tries to open a window
on a headless server.

Sizes are given in pixels at a fixed :data:`DPI` and saved without ``bbox_inches='tight'``
(which would crop to the content), so a PNG's size is a known function of its layout.
"""
from __future__ import annotations

import os
import sys

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure, SubFigure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

DPI = 100
WRONG = "#d62728"      # red: wrong predictions
RIGHT = "#222222"      # near-black: right predictions
SMOOTHING = 0.6        # VisualDL's default smoothing weight for scalar curves


def new_figure(width_px: int, height_px: int, layout: str | None = "constrained") -> Figure:
    """A figure of exactly ``width_px`` x ``height_px`` pixels when saved with :func:`save`.

    Args:
        width_px, height_px: size of the PNG.
        layout: matplotlib layout engine (``constrained`` keeps titles from overlapping;
            None for manual placement).
    """
    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout=layout)


def save(fig: Figure, path: str) -> tuple[int, int]:
    """Write ``fig`` as a PNG at :data:`DPI` (parent folders created); returns (width, height) in pixels."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    w, h = fig.get_size_inches() * DPI
    return int(round(w)), int(round(h))


def smooth(values: np.ndarray | list[float], weight: float = SMOOTHING) -> np.ndarray:
    """Debiased exponential moving average, as VisualDL and TensorBoard smooth scalars.

    The running average starts at 0, so early points are divided by ``1 - weight ** (i + 1)``
    (the bias correction); without it the first ~5 points of a 0.6 average would sit far below the data.
    """
    values = np.asarray(values, np.float64)
    out = np.empty_like(values)
    last = 0.0
    for i, v in enumerate(values):
        last = last * weight + (1 - weight) * v
        out[i] = last / (1 - weight ** (i + 1))
    return out


def denormalize(chw: np.ndarray, mean: tuple | None = None, std: tuple | None = None) -> np.ndarray:
    """A network input [C, H, W] back to an HWC float image in [0, 1].

    Args:
        chw: float array as the pipeline outputs it.
        mean, std: per-channel values (1 or C) in [0, 1] units of the pipeline's Normalize;
            None when it had none (the input is then already in [0, 1]).
    """
    x = np.asarray(chw, np.float32)
    if mean is not None:
        c = x.shape[0]
        m = np.broadcast_to(np.asarray(mean, np.float32), (c,))[:, None, None]
        s = np.broadcast_to(np.asarray(std, np.float32), (c,))[:, None, None]
        x = x * s + m
    return np.clip(x.transpose(1, 2, 0), 0.0, 1.0)


def show_image(ax: Axes, img: np.ndarray, title: str | None = None, color: str | None = None, fontsize: int = 8) -> None:
    """Draw an HWC (or HW) image without axes: gray colormap for one channel, RGB otherwise.

    uint8 images are shown on 0..255, float images on 0..1, so a dark image stays dark
    instead of being stretched to full contrast.
    """
    img = np.asarray(img)
    vmax = 255 if img.dtype == np.uint8 else 1.0
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=fontsize, **({"color": color} if color else {}))


def show_map(ax: Axes, values: np.ndarray, title: str | None = None, cmap: str = "viridis", symmetric: bool = False,
             fontsize: int = 8, colorbar: bool = False) -> AxesImage:
    """Draw a 2-D array as a heatmap without ticks; ``symmetric`` centres a diverging map on 0."""
    values = np.asarray(values, np.float32)
    kw = {}
    if symmetric:
        vmax = float(np.abs(values).max()) or 1.0
        kw = {"vmin": -vmax, "vmax": vmax}
    im = ax.imshow(values, cmap=cmap, interpolation="nearest", **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=fontsize)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    return im


def off(axes: np.ndarray) -> None:
    """Hide unused axes of a grid."""
    for ax in np.ravel(axes):
        ax.set_axis_off()


def grid(fig: Figure | SubFigure, rows: int, cols: int) -> np.ndarray:
    """``rows`` x ``cols`` axes as a 2-D array (also for 1 x 1)."""
    return np.array(fig.subplots(rows, cols, squeeze=False))


def short(text: object, n: int = 14) -> str:
    """Truncate a label to ``n`` characters with an ellipsis (long class names overflow panels)."""
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def mosaic(tiles: np.ndarray, cols: int, gap: int = 2, min_side: int = 16) -> np.ndarray:
    """Tile same-size RGB images [N, h, w, 3] into one image with white gaps.

    Tiles smaller than ``min_side`` pixels are enlarged by an integer factor (nearest) first,
    so a 2 px gap does not dwarf a 2 x 2 filter.
    """
    tiles = np.asarray(tiles, np.float32)
    n, h, w = tiles.shape[:3]
    f = max(1, -(-min_side // max(h, w)))
    tiles = tiles.repeat(f, axis=1).repeat(f, axis=2)
    h, w = h * f, w * f
    rows = -(-n // cols)
    out = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tiles[i]
    return out


def evenly_spaced(items: list, k: int) -> list:
    """At most ``k`` items spread over the whole list, first and last included."""
    items = list(items)
    if len(items) <= k:
        return items
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]
