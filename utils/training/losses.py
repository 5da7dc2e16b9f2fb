"""The loss of the ``Loss`` section: cross-entropy with label smoothing, or mse / smooth_l1 for regression.

:func:`regression_loss_np` is the same regression loss in numpy, for the evaluation and the doctor,
so the validation loss is the training loss over the whole split.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from utils.errors import ConfigError
from utils.schedules import require

__all__ = ["build_loss", "SmoothedCrossEntropy", "RegressionLoss", "regression_loss_np"]


class SmoothedCrossEntropy(nn.Layer):
    """Softmax cross-entropy with label smoothing, for logits [N, C] and int labels [N, 1] or [N].

    loss = mean_n[(1 - eps) * (-log p[n, y_n]) + eps * mean_c(-log p[n, c])], i.e. cross-entropy
    against the target (1 - eps) * onehot + eps / C. Implemented here because in Paddle 3.3.1
    ``nn.CrossEntropyLoss(label_smoothing=...)`` fails on int64 labels of shape [N, 1]
    (no int64 ``label_smooth`` kernel); it only works with labels of shape [N].
    """

    def __init__(self, label_smoothing: float = 0.0, num_classes: int | None = None) -> None:
        super().__init__()
        self.eps = float(label_smoothing)
        self.num_classes = num_classes

    def forward(self, logits: paddle.Tensor, label: paddle.Tensor) -> paddle.Tensor:
        """Mean smoothed cross-entropy of the batch (a scalar tensor)."""
        c = logits.shape[-1]
        if self.num_classes and c is not None and c > 0 and c != self.num_classes:
            raise ValueError(f"the model outputs {c} logits per sample but the data has {self.num_classes} classes")
        logp = F.log_softmax(logits.astype("float32"), axis=-1)
        label = label.astype("int64").reshape([-1, 1])
        nll = -paddle.take_along_axis(logp, label, axis=1).squeeze(-1)
        if self.eps == 0:
            return nll.mean()
        smooth = -logp.mean(axis=-1)
        return ((1.0 - self.eps) * nll + self.eps * smooth).mean()


def regression_loss_np(pred: np.ndarray, target: np.ndarray, name: str) -> np.ndarray:
    """Per-sample regression loss in numpy (float64), as :class:`RegressionLoss` computes it."""
    d = np.asarray(pred, np.float64).reshape(-1) - np.asarray(target, np.float64).reshape(-1)
    if name == "mse":
        return d * d
    a = np.abs(d)  # smooth_l1 (Huber, delta 1)
    return np.where(a < 1.0, 0.5 * d * d, a - 0.5)


class RegressionLoss(nn.Layer):
    """Mean squared error (``mse``) or Huber / smooth L1 with delta 1 (``smooth_l1``) of one output.

    Prediction and target are both flattened to [N] first: a [N, 1] output against a [N] target
    would otherwise broadcast to an [N, N] difference.
    """

    def __init__(self, name: str = "mse") -> None:
        super().__init__()
        if name not in ("mse", "smooth_l1"):
            raise ConfigError(f"Loss.name: {name!r} is not a regression loss (mse, smooth_l1)")
        self.name = name

    def forward(self, pred: paddle.Tensor, target: paddle.Tensor) -> paddle.Tensor:
        """Mean loss of the batch (a scalar tensor)."""
        d = pred.astype("float32").reshape([-1]) - target.astype("float32").reshape([-1])
        if self.name == "mse":
            return (d * d).mean()
        a = d.abs()
        return paddle.where(a < 1.0, 0.5 * d * d, a - 0.5).mean()


def build_loss(cfg: dict, num_classes: int | None) -> nn.Layer:
    """The training/validation loss layer of ``Loss.name`` (CrossEntropy with ``label_smoothing``;
    mse / smooth_l1 for ``Global.task: regression``, see :class:`RegressionLoss`)."""
    lcfg = cfg["Loss"]
    if lcfg["name"] in ("mse", "smooth_l1"):
        return RegressionLoss(lcfg["name"])
    if lcfg["name"] != "CrossEntropy":
        raise ConfigError(f"Loss.name: unknown loss {lcfg['name']!r}")
    eps = lcfg["label_smoothing"]
    require(0 <= eps < 1, "Loss.label_smoothing", eps, "in [0, 1)")
    return SmoothedCrossEntropy(eps, num_classes)
