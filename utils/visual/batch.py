"""A training batch as the network receives it: the images after ``Transforms.train``, drawn
from the same RNG state training used, so the picture shows the augmentation that really ran.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from utils.errors import UserError
from utils.visual import plots
from utils.visual.common import PlotResult, model_name, norm_stats

if TYPE_CHECKING:
    from utils.data import DataBundle

MAX_BATCH_IMAGES = 64          # batch images drawn (an 8 x 8 grid stays readable at 150 px/cell)


def training_batch(cfg: dict, epoch: int = 1) -> tuple[np.ndarray, np.ndarray, DataBundle]:
    """The first training batch of epoch ``epoch`` (1-based) exactly as training drew it.

    Training reseeds every RNG with ``Global.seed + epoch index`` at each epoch start (see
    ``utils.training.callbacks.Progress``) and the loader draws its shuffle and augmentations from that
    state when its iterator starts, so reseeding the same way here gives the same images with
    the same crops and flips.

    Returns:
        (x float32 [N, C, H, W] as the network receives it, labels int [N], data bundle).
    """
    # imports paddle: deferred until the thread count is set
    from utils.data import build_datasets, build_loaders  # imports paddle: deferred until the thread count is set
    from utils.training.callbacks import seed_everything  # imports paddle: deferred until the thread count is set

    if epoch < 1:
        raise UserError(f"--epoch must be >= 1, got {epoch}")
    bundle = build_datasets(cfg)
    loader, _ = build_loaders(cfg, bundle)
    seed_everything(cfg["Global"]["seed"] + epoch - 1)
    if hasattr(loader, "set_epoch"):  # the batched loader's alternating flip follows the epoch
        loader.set_epoch(epoch - 1)
    x, y = next(iter(loader))
    return x.numpy(), y.numpy().reshape(-1), bundle


def plot_batch(cfg: dict, out: str, epoch: int = 1, max_images: int = MAX_BATCH_IMAGES) -> PlotResult:
    """The first training batch of epoch ``epoch`` as the network receives it (:func:`training_batch`).

    The images are de-normalized with the pipeline's mean/std for display and titled with
    their class names; one-channel images are drawn in gray.

    Args:
        cfg: resolved config.
        out: PNG path.
        epoch: 1-based epoch whose first batch to draw.
        max_images: draw at most this many images of the batch.

    Returns:
        :class:`PlotResult`, one panel per image drawn.
    """
    x, y, bundle = training_batch(cfg, epoch)
    n = min(max_images, len(x))
    mean, std = norm_stats(bundle.train_transform)
    cols = 8
    rows = math.ceil(n / cols)
    fig = plots.new_figure(cols * 150, rows * 150 + 70)
    axes = plots.grid(fig, rows, cols)
    for i, ax in enumerate(axes.ravel()):
        if i < n:
            plots.show_image(ax, plots.denormalize(x[i], mean, std), plots.short(bundle.class_names[int(y[i])]), fontsize=9)
        else:
            ax.set_axis_off()
    norm = f"de-normalized (mean {_fmt(mean)}, std {_fmt(std)})" if mean is not None else "no Normalize"
    fig.suptitle(f"{cfg['_meta']['config_path']} ({model_name(cfg)}): epoch {epoch}, batch 1 after Transforms.train, "
                 f"{n} of {len(x)} images, {x.shape[2]}x{x.shape[3]}, {norm}", fontsize=10)
    size = plots.save(fig, out)
    return PlotResult(out, size, n)


def _fmt(values: tuple) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"
