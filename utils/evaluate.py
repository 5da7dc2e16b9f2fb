"""Evaluation over a whole loader: mean loss, top-k, per-class accuracy, confusion matrix;
regression runs (``Global.task: regression``): loss, MAE, RMSE in target units (:class:`RegressionMetrics`).

hapi's ``Model.evaluate`` reports the *last batch's* loss as the eval loss (its
``_run_one_epoch`` overwrites ``logs['loss']`` every batch), so a 5,000-image val set
with a 256 batch would report the loss of the final 136 images. We average over all
samples instead, weighting each batch by its size.
"""
import numpy as np
import paddle


@paddle.no_grad()
def predict(network, loader):
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


def log_softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def metric_names(topk):
    """Names of the accuracy metrics: top-1 is 'acc', others 'acc_topK'."""
    return ["acc" if k == 1 else f"acc_top{k}" for k in topk]


def summarize(logits, labels, topk=(1,), label_smoothing=0.0):
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

    def __init__(self, loss="mse", target_mean=None, target_std=None):
        self.loss = loss
        self.target_mean = 0.0 if target_mean is None else float(target_mean)
        self.target_std = 1.0 if target_std is None else float(target_std)

    @classmethod
    def from_bundle(cls, cfg, bundle):
        return cls(cfg["Loss"]["name"], bundle.target_mean, bundle.target_std)

    def denormalize(self, values):
        return np.asarray(values, np.float64).reshape(-1) * self.target_std + self.target_mean

    def __call__(self, preds, targets):
        from utils.optim import regression_loss_np

        n = len(np.asarray(targets).reshape(-1))
        if n == 0:
            return {"loss": float("nan"), "mae": float("nan"), "rmse": float("nan"), "samples": 0}
        err = self.denormalize(preds) - self.denormalize(targets)
        return {"loss": float(regression_loss_np(preds, targets, self.loss).mean()),
                "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err * err).mean())), "samples": int(n)}


def confusion_matrix(logits, labels, num_classes):
    """Rows: true class, columns: predicted class."""
    pred = logits.argmax(axis=1)
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, pred), 1)
    return cm


def per_class_accuracy(cm):
    """Recall of each class (diagonal / row sum); NaN for a class with no samples."""
    rows = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(cm) / np.maximum(rows, 1), np.nan)


def evaluate(network, loader, topk=(1,), label_smoothing=0.0):
    """Mean loss and top-k accuracies of ``network`` over ``loader``."""
    logits, labels = predict(network, loader)
    return summarize(logits, labels, topk, label_smoothing)


def evaluate_run(cfg, checkpoint, split="val"):
    """Evaluate a checkpoint on a split of the config's data; returns a JSON-able report.

    Args:
        cfg: the resolved config the checkpoint was trained with.
        checkpoint: checkpoint prefix (``.../best_model``).
        split: ``val``, ``test`` or ``train``.
    """
    from utils.checkpoint import load_weights
    from utils.data import build_datasets, build_eval_loader
    from utils.errors import UserError
    from utils.trainer import build_network, topk_for

    bundle = build_datasets(cfg)
    dataset = {"val": bundle.val, "test": bundle.test, "train": bundle.train}.get(split)
    if dataset is None:
        raise UserError(f"--split {split}: this dataset has no {split} split "
                        f"({cfg['Data']['name']} has: " + ", ".join(s for s in ("train", "val", "test") if getattr(bundle, s) is not None) + ")")
    network = build_network(cfg, bundle)
    load_weights(network, checkpoint)
    logits, labels = predict(network, build_eval_loader(cfg, dataset))
    if bundle.task == "regression":
        metrics = RegressionMetrics.from_bundle(cfg, bundle)
        report = metrics(logits, labels)
        pred, true = metrics.denormalize(logits), metrics.denormalize(labels)
        err = pred - true
        report.update(split=split, checkpoint=checkpoint, task="regression", loss_name=metrics.loss,
                      target_mean=bundle.target_mean, target_std=bundle.target_std,
                      target_range=[float(true.min()), float(true.max())] if len(true) else None,
                      r2=float(1 - (err ** 2).sum() / max(((true - true.mean()) ** 2).sum(), 1e-12)) if len(true) else None,
                      abs_error_quantiles={q: float(np.quantile(np.abs(err), float(q))) for q in ("0.5", "0.9", "1.0")}
                      if len(err) else {})
        return report
    topk = topk_for(cfg, bundle.num_classes)
    report = summarize(logits, labels, topk, cfg["Loss"]["label_smoothing"])
    cm = confusion_matrix(logits, labels, bundle.num_classes)
    names = list(bundle.class_names)
    report.update(split=split, checkpoint=checkpoint,
                  per_class_accuracy={n: (None if np.isnan(a) else float(a)) for n, a in zip(names, per_class_accuracy(cm))},
                  confusion_matrix=cm.tolist(), class_names=names)
    return report


def format_report(report):
    """A plain-text table of an :func:`evaluate_run` report."""
    if report.get("task") == "regression":
        norm = ("targets normalized with mean {:.4g}, std {:.4g}".format(report["target_mean"], report["target_std"])
                if report.get("target_mean") is not None else "targets not normalized")
        q = report.get("abs_error_quantiles") or {}
        lines = [f"{report['split']} split, {report['samples']} samples, checkpoint {report['checkpoint']}",
                 f"loss ({report['loss_name']}, training units) {report['loss']:.4f}",
                 f"mae {report['mae']:.4f}  rmse {report['rmse']:.4f}  r2 {report['r2']:.4f}  (target units; {norm})"]
        if q:
            lines.append("absolute error: median {:.4f}, 90th percentile {:.4f}, max {:.4f}".format(q["0.5"], q["0.9"], q["1.0"]))
        if report.get("target_range"):
            lines.append("targets in [{:.4g}, {:.4g}]".format(*report["target_range"]))
        return "\n".join(lines)
    names = report["class_names"]
    w = max(8, max(len(n) for n in names))
    lines = [f"{report['split']} split, {report['samples']} images, checkpoint {report['checkpoint']}",
             "  ".join(f"{k} {v:.4f}" for k, v in report.items() if k == "loss" or k.startswith("acc")), "",
             f"{'class':<{w}}  accuracy"]
    for n in names:
        a = report["per_class_accuracy"][n]
        lines.append(f"{n:<{w}}  {'-' if a is None else f'{a:.4f}'}")
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    cm = report["confusion_matrix"]
    cw = max(4, max(len(str(v)) for row in cm for v in row) + 1)
    lines.append(" " * w + "".join(f"{i:>{cw}}" for i in range(len(names))))
    for i, row in enumerate(cm):
        lines.append(f"{names[i][:w]:<{w}}" + "".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)
