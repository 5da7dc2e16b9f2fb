"""Evaluation over a whole loader: mean loss, top-k, per-class accuracy, confusion matrix;
regression runs (``Global.task: regression``): loss, MAE, RMSE in target units (:class:`RegressionMetrics`).

hapi's ``Model.evaluate`` reports the *last batch's* loss as the eval loss (its
``_run_one_epoch`` overwrites ``logs['loss']`` every batch), so a 5,000-image val set
with a 256 batch would report the loss of the final 136 images. We average over all
samples instead, weighting each batch by its size.

Test-time augmentation (``Eval.tta``, :func:`tta_views`) runs inside :func:`predict`: the logits of a
batch are the weighted mean of the logits of its views; labels are read once per batch, untouched.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import paddle
import paddle.nn.functional as F

from utils.config.schema import TTA_MODES
from utils.errors import ConfigError
from utils.training.losses import regression_loss_np

if TYPE_CHECKING:
    from utils.data import DataBundle

# predict's progress hook: (batches done, batches in the loader or None, samples done), after each batch.
OnBatch = Callable[[int, "int | None", int], None]


def check_tta(mode: str, regression: bool = False, input_shape: Sequence[int] | None = None,
              where: str = "Eval.tta") -> str:
    """``mode`` when it applies to this evaluation; a one-line ConfigError naming ``where`` otherwise.

    Flips and shifts need images: a regression run or inputs of side 1 (tabular features arrive as
    N x F x 1 x 1) take ``none``. ``input_shape``: one sample (C, H, W) or a batch (N, C, H, W).
    """
    if mode not in TTA_MODES:
        raise ConfigError(f"{where}: {mode!r} is not one of {list(TTA_MODES)}")
    if mode == "none":
        return mode
    if regression:
        raise ConfigError(f"{where}: {mode} flips and shifts images, but Global.task is regression "
                          f"(one real-valued target of tabular features): set Eval.tta: none")
    if input_shape is not None:
        shape = [int(d) for d in input_shape]
        if len(shape) < 3 or min(shape[-2:]) < 2:
            raise ConfigError(f"{where}: {mode} flips and shifts images, but the inputs are "
                              f"{' x '.join(map(str, shape))} (not images of at least 2 x 2 pixels, e.g. tabular "
                              f"features as F x 1 x 1): set Eval.tta: none")
    return mode


def tta_views(x: paddle.Tensor, mode: str) -> list[tuple[float, paddle.Tensor]]:
    """``[(weight, view)]`` of an NCHW batch for ``Eval.tta`` ``mode``; the weights sum to 1.

    flip: the batch and its horizontal mirror, 1/2 each. flip_translate: 1/2 for that flip pair of the
    batch, 1/4 for the flip pair of each 1-pixel diagonal shift (crops at offsets (0, 0) and (2, 2) of
    a 1-pixel reflect-padded copy, i.e. shifts by -1,-1 and +1,+1).
    """
    def flip_pair(v: paddle.Tensor, weight: float) -> list[tuple[float, paddle.Tensor]]:
        return [(weight / 2, v), (weight / 2, paddle.flip(v, axis=[3]))]

    if mode == "none":
        return [(1.0, x)]
    if mode == "flip":
        return flip_pair(x, 1.0)
    if mode == "flip_translate":
        h, w = x.shape[2], x.shape[3]
        padded = F.pad(x, [1, 1, 1, 1], mode="reflect", data_format="NCHW")  # [left, right, top, bottom]
        return [*flip_pair(x, 0.5), *flip_pair(padded[:, :, 0:h, 0:w], 0.25),
                *flip_pair(padded[:, :, 2:h + 2, 2:w + 2], 0.25)]
    raise ConfigError(f"Eval.tta: {mode!r} is not one of {list(TTA_MODES)}")


def tta_logits(network: paddle.nn.Layer, x: paddle.Tensor, mode: str = "none") -> np.ndarray:
    """Logits of ``x`` under ``Eval.tta`` ``mode``: the weighted mean of the views' logits.

    One forward pass per view, at the batch's own size (2 for flip, 6 for flip_translate); the sum runs
    in float64 and is returned in the network's output dtype (``none``: the output as it is).
    """
    if mode == "none":
        return network(x).numpy()
    check_tta(mode, input_shape=x.shape)
    total, dtype = None, None
    for weight, view in tta_views(x, mode):
        out = network(view).numpy()
        dtype = out.dtype
        total = weight * out.astype(np.float64) + (0.0 if total is None else total)
    return total.astype(dtype)


def _batches(loader: Iterable) -> int | None:
    try:
        return len(loader)
    except TypeError:  # an iterable without a length: no total in the progress hook
        return None


@paddle.no_grad()
def predict(network: paddle.nn.Layer, loader: Iterable, tta: str = "none",
            on_batch: OnBatch | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``network`` in eval mode over ``loader``; return (logits [N,C], labels [N]) as numpy.

    Args:
        tta: ``Eval.tta`` (:func:`tta_logits`); labels are never augmented or re-ordered.
        on_batch: called after each batch with (batches done, batches in the loader or None,
            samples done): the console's progress lines of a long evaluation.
    """
    was_training = network.training
    network.eval()
    logits, labels = [], []
    total, samples = _batches(loader), 0
    try:
        for i, batch in enumerate(loader, 1):
            x, y = batch[0], batch[1]
            logits.append(tta_logits(network, x, tta))
            labels.append((y.numpy() if hasattr(y, "numpy") else np.asarray(y)).reshape(-1))
            samples += len(labels[-1])
            if on_batch is not None:
                on_batch(i, total, samples)
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


def evaluate(network: paddle.nn.Layer, loader: Iterable, topk: Sequence[int] = (1,), label_smoothing: float = 0.0,
             tta: str = "none") -> dict:
    """Mean loss and top-k accuracies of ``network`` over ``loader`` (``tta``: ``Eval.tta``)."""
    logits, labels = predict(network, loader, tta)
    return summarize(logits, labels, topk, label_smoothing)


def first_input_shape(loader: Iterable) -> tuple[int, ...] | None:
    """The shape of the first sample of a loader's map-style dataset (C, H, W), or None when it has none.

    One sample is read (one image decoded), so a TTA that cannot apply fails at the run's start, not
    at its first evaluation; :func:`tta_logits` checks every batch anyway.
    """
    dataset = getattr(loader, "dataset", None)
    try:
        if dataset is None or len(dataset) == 0:
            return None
        x = dataset[0][0]
    except (TypeError, IndexError, KeyError, NotImplementedError):  # an iterable dataset: no random access
        return None
    return tuple(int(d) for d in np.shape(x))


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
        tta: ``Eval.tta``; checked here, at the run's start, against the task and the first
            validation sample (ConfigError for regression or tabular inputs).

    ``on_batch``: :func:`predict`'s progress hook for the next passes (the console sets it).
    """

    def __init__(self, network: paddle.nn.Layer, loader: Iterable, topk: Iterable[int] = (1,), label_smoothing: float = 0.0,
                 regression: RegressionMetrics | None = None, tta: str = "none") -> None:
        self.network = network
        self.loader = loader
        self.topk = tuple(topk)
        self.label_smoothing = label_smoothing
        self.regression = regression
        self.tta = check_tta(tta, regression is not None, first_input_shape(loader) if tta != "none" else None)
        self.on_batch: OnBatch | None = None
        self.logits = None
        self.labels = None
        self.calls = 0

    def __call__(self) -> dict:
        """One pass over the loader: its metrics; ``logits``/``labels`` keep its outputs."""
        self.logits, self.labels = predict(self.network, self.loader, self.tta, self.on_batch)
        self.calls += 1
        if self.regression is not None:
            return self.regression(self.logits, self.labels)
        return summarize(self.logits, self.labels, self.topk, self.label_smoothing)
