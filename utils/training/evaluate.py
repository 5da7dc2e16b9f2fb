"""Evaluation over a whole loader: mean loss, top-k, per-class accuracy, confusion matrix;
regression runs (``Global.task: regression``): loss, MAE, RMSE in target units (:class:`RegressionMetrics`).

hapi's ``Model.evaluate`` reports the *last batch's* loss as the eval loss (its
``_run_one_epoch`` overwrites ``logs['loss']`` every batch), so a 5,000-image val set
with a 256 batch would report the loss of the final 136 images. We average over all
samples instead, weighting each batch by its size.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import paddle

from utils.training.losses import regression_loss_np

if TYPE_CHECKING:
    from utils.data import DataBundle


@paddle.no_grad()
def predict(network: paddle.nn.Layer, loader: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """Run ``network`` in eval mode over ``loader``; return (logits [N,C], labels [N]) as numpy."""
    was_training = network.training
    network.eval()
    logits, labels = [], []
    try:
        for batch in loader:
            x, y = batch[0], batch[1]
            logits.append(network(x).numpy())
            labels.append((y.numpy() if hasattr(y, "numpy") else np.asarray(y)).reshape(-1))
    finally:
        if was_training:
            network.train()
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    labels = np.concatenate(labels)
    # regression targets stay real-valued; class labels are int64
    return np.concatenate(logits), labels if labels.dtype.kind == "f" else labels.astype(np.int64)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over axis 1 (numerically stable, in the dtype of ``logits``)."""
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (float64, numerically stable)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def metric_names(topk: Iterable[int]) -> list[str]:
    """Names of the accuracy metrics: top-1 is 'acc', others 'acc_topK'."""
    return ["acc" if k == 1 else f"acc_top{k}" for k in topk]


def summarize(logits: np.ndarray, labels: np.ndarray, topk: Sequence[int] = (1,), label_smoothing: float = 0.0) -> dict:
    """Loss and top-k accuracies from logits and integer labels.

    The loss matches the training loss (cross-entropy with the same label smoothing),
    so train and val loss curves are comparable.
    """
    n, c = logits.shape
    if n == 0:
        return {"loss": float("nan"), **{m: float("nan") for m in metric_names(topk)}, "samples": 0}
    logp = log_softmax(logits.astype(np.float64))
    nll = -logp[np.arange(n), labels]
    if label_smoothing > 0:
        nll = (1 - label_smoothing) * nll - label_smoothing * logp.mean(axis=1)
    out = {"loss": float(nll.mean())}
    order = np.argsort(-logits, axis=1)
    for k, name in zip(topk, metric_names(topk)):
        out[name] = float((order[:, :k] == labels[:, None]).any(axis=1).mean())
    out["samples"] = int(n)
    return out


class RegressionMetrics:
    """Loss, MAE and RMSE of a regression evaluation.

    Predictions and targets arrive in the units the network trains in (normalized when
    ``Data.normalize_target``); the loss is computed there, as in training, and MAE/RMSE after
    mapping both back with ``value * target_std + target_mean``: always in target units.
    """

    def __init__(self, loss: str = "mse", target_mean: float | None = None, target_std: float | None = None) -> None:
        self.loss = loss
        self.target_mean = 0.0 if target_mean is None else float(target_mean)
        self.target_std = 1.0 if target_std is None else float(target_std)

    @classmethod
    def from_bundle(cls, cfg: dict, bundle: DataBundle) -> RegressionMetrics:
        """The metrics of ``Loss.name`` with the bundle's target normalization."""
        return cls(cfg["Loss"]["name"], bundle.target_mean, bundle.target_std)

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        """Values in training units -> target units (float64, flattened)."""
        return np.asarray(values, np.float64).reshape(-1) * self.target_std + self.target_mean

    def __call__(self, preds: np.ndarray, targets: np.ndarray) -> dict:
        n = len(np.asarray(targets).reshape(-1))
        if n == 0:
            return {"loss": float("nan"), "mae": float("nan"), "rmse": float("nan"), "samples": 0}
        err = self.denormalize(preds) - self.denormalize(targets)
        return {"loss": float(regression_loss_np(preds, targets, self.loss).mean()),
                "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err * err).mean())), "samples": int(n)}


def confusion_matrix(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    pred = logits.argmax(axis=1)
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class (diagonal / row sum); NaN for a class with no samples."""
    rows = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(cm) / np.maximum(rows, 1), np.nan)


def evaluate(network: paddle.nn.Layer, loader: Iterable, topk: Sequence[int] = (1,), label_smoothing: float = 0.0) -> dict:
    """Mean loss and top-k accuracies of ``network`` over ``loader``."""
    logits, labels = predict(network, loader)
    return summarize(logits, labels, topk, label_smoothing)


class LastEval:
    """The evaluation ``PeriodicEval`` calls: metrics of one pass over the loader, logits kept.

    The VisualDL logger draws its prediction images, confidence histograms and PR curves from
    ``logits``/``labels`` of the pass that produced the metrics, so the validation set is run
    through the model once per evaluation, not twice.

    Args:
        network: the ``paddle.nn.Layer`` being trained.
        loader: the ordered validation loader (``build_eval_loader``).
        topk: top-k accuracies to report.
        label_smoothing: as in training, so the val loss is comparable to the train loss.
        regression: a :class:`utils.training.evaluate.RegressionMetrics` for ``Global.task: regression``
            (loss, mae, rmse in target units); ``logits``/``labels`` are then the predictions and
            targets in training units.
    """

    def __init__(self, network: paddle.nn.Layer, loader: Iterable, topk: Iterable[int] = (1,), label_smoothing: float = 0.0,
                 regression: RegressionMetrics | None = None) -> None:
        self.network = network
        self.loader = loader
        self.topk = tuple(topk)
        self.label_smoothing = label_smoothing
        self.regression = regression
        self.logits = None
        self.labels = None
        self.calls = 0

    def __call__(self) -> dict:
        """One pass over the loader: its metrics; ``logits``/``labels`` keep its outputs."""
        self.logits, self.labels = predict(self.network, self.loader)
        self.calls += 1
        if self.regression is not None:
            return self.regression(self.logits, self.labels)
        return summarize(self.logits, self.labels, self.topk, self.label_smoothing)
