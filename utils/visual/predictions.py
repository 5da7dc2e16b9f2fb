"""Predictions on a split: images with their predicted classes, the highest-loss images, the
most confused class pairs, and the confusion matrix as a heatmap.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes

from utils.errors import UserError
from utils.visual import plots
from utils.visual.common import PlotResult, load_network, model_name

if TYPE_CHECKING:
    from utils.data import DataBundle

SAMPLE_IMAGES = 24             # predictions: random validation images (3 rows of 8)
TOP_LOSSES = 16                # predictions: highest-loss images (2 rows of 8)
TOP_PAIRS = 10                 # predictions: most confused (true, predicted) pairs
ANNOTATE_MAX_CLASSES = 20      # confusion: write the counts in the cells up to this many classes


def _split_predictions(cfg: dict, checkpoint: str, split: str) -> tuple[DataBundle, object, np.ndarray, np.ndarray]:
    """(bundle, dataset, logits, labels) of ``split`` under the checkpoint."""
    # imports paddle: deferred until the thread count is set
    from utils.data import build_datasets, build_eval_loader  # imports paddle: deferred until the thread count is set
    from utils.training.evaluate import predict  # imports paddle: deferred until the thread count is set

    bundle = build_datasets(cfg)
    dataset = {"val": bundle.val, "test": bundle.test, "train": bundle.train}[split]
    if dataset is None:
        have = [s for s in ("train", "val", "test") if getattr(bundle, s) is not None]
        raise UserError(f"--split {split}: this dataset has no {split} split ({cfg['Data']['name']} has: "
                        f"{', '.join(have)}); pick one of those with --split")
    network, _ = load_network(cfg, checkpoint, bundle)
    logits, labels = predict(network, build_eval_loader(cfg, dataset))
    return bundle, dataset, logits, labels


def _image_panel(ax: Axes, dataset: object, i: int, names: list[str], label: int, pred: int, conf: float,
                 extra: str = "") -> None:
    img, _ = dataset.raw(int(i))
    wrong = pred != label
    title = f"{extra}true {plots.short(names[label], 10)}\npred {plots.short(names[pred], 10)} {conf:.0%}"
    plots.show_image(ax, img, title, color=plots.WRONG if wrong else plots.RIGHT, fontsize=8)
    if wrong:
        for spine in ax.spines.values():
            spine.set_edgecolor(plots.WRONG)
            spine.set_linewidth(2)


def confused_pairs(cm: np.ndarray, k: int = TOP_PAIRS) -> list[tuple[int, int, int]]:
    """The ``k`` largest off-diagonal cells as (true, predicted, count), largest first, counts > 0."""
    off = np.array(cm, np.int64).copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    pairs = [(int(i // off.shape[1]), int(i % off.shape[1])) for i in flat]
    return [(t, p, int(off[t, p])) for t, p in pairs if off[t, p] > 0]


def plot_predictions(cfg: dict, checkpoint: str, out: str, split: str = "val", seed: int = 0) -> PlotResult:
    """Validation images with predictions, the highest-loss images and the most confused pairs.

    Args:
        cfg: the run's config.
        checkpoint: checkpoint prefix.
        out: PNG path.
        split: ``val``, ``test`` or ``train``.
        seed: seed of the random sample of images.

    Returns:
        :class:`PlotResult`; panels = sample images + top-loss images + 1 (confused pairs).
    """
    from utils.training.evaluate import confusion_matrix, softmax  # imports paddle: deferred until the thread count is set

    bundle, dataset, logits, labels = _split_predictions(cfg, checkpoint, split)
    names = bundle.class_names
    probs = softmax(logits.astype(np.float64))
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(pred)), pred]
    loss = -np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))
    n = len(labels)
    sample = np.sort(np.random.RandomState(seed).choice(n, min(SAMPLE_IMAGES, n), replace=False))
    worst = np.argsort(-loss, kind="stable")[:min(TOP_LOSSES, n)]
    cm = confusion_matrix(logits, labels, bundle.num_classes)
    pairs = confused_pairs(cm)

    cols = 8
    s_rows, w_rows = math.ceil(len(sample) / cols), math.ceil(len(worst) / cols)
    cell = 165
    heights = [s_rows * cell + 50, w_rows * cell + 50, 330]
    fig = plots.new_figure(cols * cell, sum(heights))
    f_sample, f_worst, f_pairs = fig.subfigures(3, 1, height_ratios=heights)
    acc = float((pred == labels).mean())
    for sub, idx, rows, head, top in ((f_sample, sample, s_rows, f"{len(sample)} random {split} images "
                                       f"({split} accuracy {acc:.1%} over {n}; wrong in red)", False),
                                      (f_worst, worst, w_rows, f"the {len(worst)} highest-loss {split} images", True)):
        axes = plots.grid(sub, rows, cols)
        for j, ax in enumerate(axes.ravel()):
            if j >= len(idx):
                ax.set_axis_off()
                continue
            i = idx[j]
            _image_panel(ax, dataset, i, names, int(labels[i]), int(pred[i]), float(conf[i]),
                         extra=f"loss {loss[i]:.2f}\n" if top else "")
        sub.suptitle(head, fontsize=10)
    ax = f_pairs.subplots()
    if pairs:
        text = [f"true {plots.short(names[t], 14)} → pred {plots.short(names[p], 14)}" for t, p, _ in pairs]
        counts = [c for _, _, c in pairs]
        y = np.arange(len(pairs))[::-1]
        ax.barh(y, counts, color=plots.WRONG, alpha=0.8)
        ax.set_yticks(y, text, fontsize=8)
        for yy, c, (t, _, _) in zip(y, counts, pairs):
            row = cm[t].sum()
            ax.text(c, yy, f" {c} ({c / row:.0%} of true {plots.short(names[t], 14)})", va="center", fontsize=8)
        ax.set_xlabel("images")
        ax.set_xlim(0, max(counts) * 1.35)
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no confusions: every image is classified right", ha="center", va="center")
    f_pairs.suptitle(f"most confused class pairs (from the {split} confusion matrix)", fontsize=10)
    size = plots.save(fig, out)
    return PlotResult(out, size, len(sample) + len(worst) + 1)


def plot_confusion(cfg: dict, checkpoint: str, out: str, split: str = "val", normalize: bool = False) -> PlotResult:
    """The confusion matrix (rows: true class, columns: predicted) as a heatmap.

    Args:
        cfg: the run's config.
        checkpoint: checkpoint prefix.
        out: PNG path.
        split: ``val``, ``test`` or ``train``.
        normalize: divide each row by its count (per-class recall on the diagonal).

    Returns:
        :class:`PlotResult` with 1 panel; cells are annotated up to 20 classes.
    """
    from utils.training.evaluate import confusion_matrix  # imports paddle: deferred until the thread count is set

    bundle, _, logits, labels = _split_predictions(cfg, checkpoint, split)
    c = bundle.num_classes
    cm = confusion_matrix(logits, labels, c)
    rows = cm.sum(axis=1, keepdims=True)
    values = cm / np.maximum(rows, 1) if normalize else cm
    # ~40 px per class keeps 20 annotated classes legible; 100 classes (CIFAR-100) reach the cap.
    side = int(min(2000, max(700, 40 * c + 260)))
    fig = plots.new_figure(side + 100, side)
    ax = fig.subplots()
    im = ax.imshow(values, cmap="Blues", interpolation="nearest", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="fraction of the true class" if normalize else "images")
    names = [plots.short(n, 14) for n in bundle.class_names]
    fs = max(4, min(10, int(400 / c)))
    ax.set_xticks(np.arange(c), names, rotation=45 if c > 5 else 0, ha="right" if c > 5 else "center", fontsize=fs)
    ax.set_yticks(np.arange(c), names, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if c <= ANNOTATE_MAX_CLASSES:
        vmax = float(values.max()) or 1.0
        for i in range(c):
            for j in range(c):
                v = values[i, j]
                if cm[i, j] == 0:
                    continue
                text = f"{v:.2f}" if normalize else str(int(v))
                ax.text(j, i, text, ha="center", va="center", fontsize=max(6, fs - 1),
                        color="white" if v > 0.6 * vmax else "black")
    acc = float(np.trace(cm) / max(cm.sum(), 1))
    ax.set_title(f"{model_name(cfg)} confusion matrix, {split} split: {int(cm.sum())} images, accuracy {acc:.1%}"
                 + (" (rows normalized)" if normalize else ""), fontsize=10)
    size = plots.save(fig, out)
    return PlotResult(out, size, 1)
