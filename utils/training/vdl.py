"""VisualDL logging of a training run: scalars, histograms, prediction images, PR curves, hparams.

What goes into the run's VisualDL log (each switch is a key of the ``VisualDL`` config section):

* ``train/loss``, ``train/acc``, ``train/lr`` every step and ``eval/<metric>`` at each
  evaluation, on one step axis (always, with ``VisualDL.enable``).
* ``weights/<param>`` and ``grads/<param>`` histograms of every parameter on the last step of
  every ``histograms_every_epochs``-th epoch (and of the last epoch).
* ``eval/predictions``: at each evaluation, a grid of ``sample_images`` fixed validation images
  with the predicted class and confidence, framed green (right) or red (wrong, true class shown).
* ``eval/confidence`` (and ``_correct`` / ``_wrong``): histograms of the max softmax
  probability over the validation set at each evaluation.
* ``pr_curve/<class>``: one-vs-rest precision-recall curve per class at each evaluation.
* ``add_hparams`` at the end of training with the run's key settings, and ``hparam/final_*`` /
  ``hparam/best_*`` scalars, so runs compare in VisualDL's HParams view.

Gradients: hapi's ``train_batch`` runs backward, the optimizer step and ``clear_gradients`` in
one call, so no callback hook sees a gradient (after the step they are zeros). The optimizer
hands its ``_grad_clip`` the ``(param, grad)`` list right before the update, so on a histogram
step :class:`GradCapture` is installed there for that one step (around whatever clip is
already installed, the doctor's included), copies the gradients and delegates. These are the
loss gradients before clipping and before weight decay (Paddle adds the regularizer after the
clip).

A logging failure never ends a run: each part (scalars, histograms, prediction images,
confidence histograms, PR curves, hparams) runs under :meth:`VisualDLLogger.guarded`; its first
error is one warning line and switches that part off for the rest of the run.

No second pass over the validation set: :class:`~utils.training.evaluate.LastEval` is the
evaluation function the trainer gives ``PeriodicEval``; it keeps the logits of its last pass and
the logger reads them.
"""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import paddle
from paddle.callbacks import Callback
from paddle.nn.clip import ClipGradBase

from utils.config import model_kwargs
from utils.errors import check_int
from utils.training.evaluate import softmax
from utils.training.vdl_images import draw_predictions, pick_samples

if TYPE_CHECKING:
    from visualdl import LogWriter

    from utils.data import DataBundle
    from utils.training.callbacks import Progress
    from utils.training.evaluate import LastEval

# VisualDL's default of 10 buckets shows a bimodal or heavy-tailed weight distribution as 2-3
# bars; 30 show its shape. All 64 histograms of the digits CNN (32 tensors, 0.29M values, weights
# and gradients) take ~18 ms, once per epoch at the default histograms_every_epochs=1.
HIST_BUCKETS = 30
# VisualDL 2.5.3 caps a PR curve at 127 thresholds (pr_curve() takes min(n, 127)).
PR_THRESHOLDS = 127
# Keys of an evaluation result that are bookkeeping, not metrics.
NOT_METRICS = ("epoch", "step", "samples", "eval_time")
# The parts of the log a failure switches off (one warning each): their names in that warning.
PARTS = ("scalars", "histograms", "prediction images", "confidence histograms", "PR curves", "hparams", "log flushes")


def warn_stderr(message: str) -> None:
    """The default warning sink of :class:`VisualDLLogger`: one line on stderr."""
    print(message, file=sys.stderr, flush=True)


def _numpy_float_shim() -> None:
    """Restore ``np.float`` for VisualDL 2.5.3's PR curves, once.

    VisualDL 2.5.3's ``compute_curve`` calls ``labels.astype(np.float)``; NumPy 2 removed the
    alias (AttributeError inside ``add_pr_curve``). ``np.float`` always was the builtin
    ``float``, so the alias is exact. Checked in ``vars(np)`` rather than with ``hasattr``: on
    NumPy 1.20-1.23, where the alias still exists, ``hasattr`` would emit its DeprecationWarning.
    """
    if "float" not in vars(np):
        np.float = float


def histogram_edges(values: np.ndarray, buckets: int) -> np.ndarray:
    """``buckets + 1`` strictly increasing float64 bin edges spanning the finite ``values``.

    ``np.histogram(values, bins=n)`` (what ``add_histogram`` runs) computes its edges in the data's
    dtype and raises "Too many bins for data range" when they collapse: float32 tensors of all ~1.0
    or ~1e-13, a constant tensor past 2**52 (its ±0.5 range rounds away), and values near ±1e308
    (max - min overflows). Here halves are taken before subtracting, a constant tensor gets
    numpy's ±0.5 (or ±1e-6 of its value when larger), and the span is at least 2**-40 of the
    magnitude, so 30 bins stay wider than float64's resolution (2**-52).
    """
    lo, hi = float(values.min()), float(values.max())
    mid, half = lo / 2 + hi / 2, hi / 2 - lo / 2
    if half == 0:
        half = max(0.5, abs(mid) * 1e-6)
    half = max(half, abs(mid) * 2**-40)
    edges = mid + half * np.linspace(-1.0, 1.0, buckets + 1)
    edges[0], edges[-1] = min(edges[0], lo), max(edges[-1], hi)  # rounding must not drop the extremes
    return edges


class GradCapture(ClipGradBase):
    """A pass-through gradient "clip" that copies the gradients it is handed, then delegates.

    Installed as ``optimizer._grad_clip`` for one step (see the module docstring): Paddle calls
    it in dygraph mode with the ``(param, grad)`` list right before the update.

    Args:
        inner: the clip that was installed (a ``ClipGrad*``, the doctor's monitor, or None).

    Attributes:
        grads: ``{param.name: numpy copy of its gradient}`` of the last call, or None.
    """

    def __init__(self, inner: ClipGradBase | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.grads = None

    def __str__(self) -> str:
        return f"GradCapture({self.inner})"

    def capture(self, params_grads: list[tuple[paddle.Tensor, paddle.Tensor | None]]) -> None:
        """Keep a numpy copy of each gradient (the tensors are zeroed after the step)."""
        self.grads = {p.name: g.numpy() for p, g in params_grads if g is not None}

    @paddle.no_grad()
    def _dygraph_clip(self, params_grads: list[tuple[paddle.Tensor, paddle.Tensor | None]]) -> list:
        self.capture(params_grads)
        return self.inner(params_grads) if self.inner is not None else params_grads


def _class_tags(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """``pr_curve/<name>`` per class; '%' (refused in VisualDL tags) and '/' replaced, index added on clashes."""
    names = [str(class_names[c]) if class_names is not None and c < len(class_names) else str(c)
             for c in range(num_classes)]
    clean = [n.replace("%", "_").replace("/", "_") or str(c) for c, n in enumerate(names)]
    if len(set(clean)) < len(clean):
        clean = [f"{c}_{n}" for c, n in enumerate(clean)]
    return [f"pr_curve/{n}" for n in clean]


def _hp_value(v: object) -> int | float | str:
    """A value VisualDL's add_hparams stores (int, float or str)."""
    if isinstance(v, bool) or v is None:
        return str(v).lower() if v is not None else "none"
    if isinstance(v, (int, float, str)):
        return v
    return json.dumps(v)


def run_hparams(cfg: dict) -> dict[str, int | float | str]:
    """The run's key settings as a flat ``{name: int | float | str}`` for ``add_hparams``.

    Model and its ``Arch`` arguments (``arch.<key>``), data, optimizer, learning rate, batch
    size, weight decay, epochs, schedule and warmup, label smoothing, clipping, init and seed.
    """
    g, a, o, s, d = cfg["Global"], cfg["Arch"], cfg["Optimizer"], cfg["LRScheduler"], cfg["Data"]
    hp = {
        "model": a["name"], "data": d["name"], "optimizer": o["name"], "lr": o["lr"],
        "batch_size": cfg["DataLoader"]["batch_size"], "weight_decay": o["weight_decay"], "epochs": g["epochs"],
        "schedule": s["name"], "warmup_epochs": s["warmup_epochs"], "label_smoothing": cfg["Loss"]["label_smoothing"],
        "grad_clip": o["grad_clip"], "init": a["init"], "seed": g["seed"], "data_fraction": d["fraction"],
    }
    if g.get("task", "classification") == "regression":
        hp.update(task="regression", loss=cfg["Loss"]["name"], normalize_target=d["normalize_target"])
        del hp["label_smoothing"]
    hp.update({f"arch.{k}": v for k, v in sorted(model_kwargs(cfg).items())})
    # Every key set with -o as well (a tuning trial's values are -o overrides), under its config
    # name, so whatever a sweep varied shows in the HParams view; bookkeeping keys are left out.
    for key in cfg.get("_meta", {}).get("overridden", []):
        if key not in HPARAMS_SKIP:
            sec, k = key.split(".", 1)
            hp[key] = cfg[sec].get(k)
    return {k: _hp_value(v) for k, v in hp.items()}


# -o keys that say where or how loudly a run goes, not how it trains
HPARAMS_SKIP = {"Global.output_dir", "Global.run_name", "Global.checkpoints", "Global.verbose",
                "Global.log_every_iters", "Global.print_flops", "Global.num_threads", "Global.device"}


class VisualDLLogger(Callback):
    """Writes the run's VisualDL log; the hooks only route, the ``log_*`` methods do the work.

    With only ``writer``, ``progress`` and ``lr_fn`` it logs the scalars (train loss/acc/LR
    every step, eval metrics at their step, one step axis). One run = one directory = one log
    file (the VisualDL server reads only the newest file of a directory), so a resumed run
    appends to the same file.

    Args:
        writer: a ``visualdl.LogWriter``.
        progress: the run's :class:`utils.training.callbacks.Progress`.
        lr_fn: callable returning the current learning rate.
        eval_source: the :class:`~utils.training.evaluate.LastEval` the run evaluates with (its logits feed the
            images, confidence histograms and PR curves); None = scalars only at evaluations.
        samples: the validation dataset (``raw(i)`` gives uint8 HWC images) for the images.
        class_names: class names for captions and PR-curve tags.
        histograms_every_epochs: weight/gradient histograms every N epochs (and the last); 0 = off.
        sample_images: validation images in ``eval/predictions``; 0 = off.
        confidence_histogram: log ``eval/confidence`` histograms.
        pr_curves: log one PR curve per class.
        hparams: ``{name: value}`` for ``add_hparams`` at the end of training; None = off.
        best_fn: callable returning the best evaluation's metrics (the checkpointer's), for
            the ``hparam/best_*`` scalars.
        warn: where the one-line warning of a failed part goes (default: stderr).

    Attributes:
        failed: ``{part: first error}`` of the parts switched off (:data:`PARTS`).
    """
    def __init__(self, writer: LogWriter, progress: Progress, lr_fn: Callable[[], float], eval_source: LastEval | None = None,
                 samples: paddle.io.Dataset | None = None, class_names: Sequence[str] | None = None,
                 histograms_every_epochs: int = 0, sample_images: int = 0, confidence_histogram: bool = False,
                 pr_curves: bool = False, hparams: dict | None = None,
                 best_fn: Callable[[], dict | None] | None = None, warn: Callable[[str], None] | None = None) -> None:
        super().__init__()
        check_int("VisualDL.histograms_every_epochs", histograms_every_epochs, 0, " (0 = off)")
        check_int("VisualDL.sample_images", sample_images, 0, " (0 = off)")
        self.writer = writer
        self.progress = progress
        self.lr_fn = lr_fn
        self.eval_source = eval_source
        self.samples = samples
        self.class_names = class_names
        self.histograms_every_epochs = histograms_every_epochs
        self.sample_images = sample_images if samples is not None else 0
        self.confidence_histogram = confidence_histogram
        self.pr_curves = pr_curves
        self.hparams = hparams
        self.best_fn = best_fn
        self.last_eval = None
        self._capture = None
        self._seen_eval = 0
        self._sample_idx = None
        self._sample_images = None
        self._pr_tags = None
        self.warn = warn or warn_stderr
        self.failed: dict[str, str] = {}

    def guarded(self, part: str, fn: Callable[..., object], *args: object) -> None:
        """``fn(*args)``, unless ``part`` failed before; its first error is one warning and turns ``part`` off.

        VisualDL's writers raise on inputs and states a run can meet (``add_pr_curve``: a class name
        with lone surrogates; any of them: a full disk); a log is never worth the run.
        """
        if part in self.failed:
            return
        try:
            fn(*args)
        except Exception as e:  # whatever the writer, numpy or PIL raise: report once, switch the part off
            text = (str(e).strip().splitlines() or [""])[0][:200]
            self.failed[part] = f"{type(e).__name__}: {text}" if text else type(e).__name__
            self.warn(f"warning: VisualDL {part} could not be logged ({self.failed[part]}); "
                      f"no more {part} in this run's log, training continues")

    # -- hooks (routing only)
    def on_train_batch_begin(self, step: int, logs: dict | None = None) -> None:
        if "histograms" not in self.failed and self.histograms_due():
            self._install_capture()

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        s = self.progress.global_step
        self.guarded("scalars", self.log_train_scalars, logs, s)
        if self._capture is not None:
            grads = self._remove_capture()
            self.guarded("histograms", lambda: self.log_histograms(s, self._named_params(), grads))

    def on_eval_end(self, logs: dict | None = None) -> None:
        self.last_eval = dict(logs)
        self.guarded("scalars", self.log_eval_scalars, logs)
        src = self.eval_source
        if src is not None and src.logits is not None and src.calls != self._seen_eval:
            self._seen_eval = src.calls
            self.log_eval_details(logs["step"], src.logits, src.labels)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._remove_capture()
        if self.hparams is not None:
            def hparams():
                best = self.best_fn() if self.best_fn is not None else None
                self.log_hparams(self.hparams, self.last_eval, best, self.progress.global_step)
            self.guarded("hparams", hparams)
        self.guarded("log flushes", self.writer.flush)

    # -- decisions
    def histograms_due(self) -> bool:
        """True at the start of the last step of an epoch whose histograms are due."""
        p, n = self.progress, self.histograms_every_epochs
        if not n or p.epoch_step + 1 < p.steps_per_epoch:
            return False
        return (p.epoch + 1) % n == 0 or p.is_last_epoch

    # -- gradient capture
    def _optimizer(self) -> paddle.optimizer.Optimizer | None:
        return getattr(self.model, "_optimizer", None) if self.model is not None else None

    def _install_capture(self) -> None:
        opt = self._optimizer()
        if opt is not None and self._capture is None:
            self._capture = GradCapture(opt._grad_clip)
            opt._grad_clip = self._capture

    def _remove_capture(self) -> dict | None:
        cap, self._capture = self._capture, None
        if cap is None:
            return None
        opt = self._optimizer()
        if opt is not None and opt._grad_clip is cap:
            opt._grad_clip = cap.inner
        return cap.grads

    def _named_params(self) -> list[tuple[str, str, paddle.Tensor]]:
        """[(structured name, paddle name, tensor)] of the network's parameters."""
        return [(n, p.name, p) for n, p in self.model.network.named_parameters()]

    # -- writing
    def log_train_scalars(self, logs: dict, step: int) -> None:
        """``train/loss``, ``train/acc`` (when hapi reports it) and ``train/lr`` at ``step``."""
        self.writer.add_scalar("train/loss", float(np.asarray(logs["loss"]).reshape(-1)[0]), step)
        if "acc" in logs:
            self.writer.add_scalar("train/acc", float(logs["acc"]), step)
        self.writer.add_scalar("train/lr", self.lr_fn(), step)

    def log_eval_scalars(self, logs: dict) -> None:
        """``eval/<metric>`` for every metric of an evaluation result, at its step (``ema_<metric>``: ``eval_ema/<metric>``)."""
        for k, v in logs.items():
            if k not in NOT_METRICS:
                tag = f"eval_ema/{k[4:]}" if k.startswith("ema_") else f"eval/{k}"  # EMA (utils/addons/ema.py)
                self.writer.add_scalar(tag, float(v), logs["step"])

    def log_histograms(self, step: int, params: list[tuple[str, str, paddle.Tensor | np.ndarray]],
                       grads: dict[str, np.ndarray] | None = None) -> None:
        """``weights/<name>`` and ``grads/<name>`` histograms.

        Args:
            step: global step.
            params: ``[(structured name, paddle name, tensor or array)]``.
            grads: ``{paddle name: gradient array}``; parameters without one (frozen) get
                no gradient histogram.
        """
        grads = grads or {}
        for name, pname, p in params:
            self._histogram(f"weights/{name}", p.numpy() if hasattr(p, "numpy") else p, step)
            if pname in grads:
                self._histogram(f"grads/{name}", grads[pname], step)

    def _histogram(self, tag: str, values: np.ndarray, step: int, buckets: int = HIST_BUCKETS) -> None:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        finite = np.isfinite(v)
        if not finite.all():
            v = v[finite]  # np.histogram fails on NaN/Inf; the doctor reports non-finite values
        if v.size:
            # VisualDL 2.5.3 hands `buckets` to np.histogram(values, bins=buckets), which takes edges too
            self.writer.add_histogram(tag, v, step, buckets=histogram_edges(v, buckets))

    def log_eval_details(self, step: int, logits: np.ndarray, labels: np.ndarray) -> None:
        """Prediction image, confidence histograms and PR curves of one evaluation's logits."""
        if len(logits) == 0:
            return
        probs = softmax(logits)
        if self.sample_images:
            self.guarded("prediction images", self.log_predictions, step, probs, labels)
        if self.confidence_histogram:
            self.guarded("confidence histograms", self.log_confidence, step, probs, labels)
        if self.pr_curves:
            self.guarded("PR curves", self.log_pr_curves, step, probs, labels)

    def log_predictions(self, step: int, probs: np.ndarray, labels: np.ndarray) -> None:
        """``eval/predictions``: the fixed validation samples with prediction and confidence."""
        if self.samples is None or len(labels) != len(self.samples):
            return  # the logits are not of this dataset in order: no way to pair them with images
        if self._sample_idx is None:
            self._sample_idx = pick_samples(labels, self.sample_images)
            self._sample_images = [self.samples.raw(i)[0] for i in self._sample_idx]
        idx = self._sample_idx
        p = probs[idx]
        img = draw_predictions(self._sample_images, labels[idx], p.argmax(axis=1), p.max(axis=1), self.class_names)
        self.writer.add_image("eval/predictions", img, step)

    def log_confidence(self, step: int, probs: np.ndarray, labels: np.ndarray) -> None:
        """``eval/confidence`` and, where non-empty, ``eval/confidence_correct`` / ``_wrong``."""
        conf = probs.max(axis=1)
        right = probs.argmax(axis=1) == labels
        self._histogram("eval/confidence", conf, step, buckets=20)
        for suffix, mask in (("correct", right), ("wrong", ~right)):
            if mask.any():
                self._histogram(f"eval/confidence_{suffix}", conf[mask], step, buckets=20)

    def log_pr_curves(self, step: int, probs: np.ndarray, labels: np.ndarray) -> None:
        """``pr_curve/<class>``: one-vs-rest precision-recall of each class."""
        _numpy_float_shim()
        if self._pr_tags is None:
            self._pr_tags = _class_tags(self.class_names, probs.shape[1])
        finite = np.isfinite(probs).all(axis=1)
        if not finite.all():  # a diverged model's NaN rows would land in arbitrary buckets
            probs, labels = probs[finite], labels[finite]
        if not len(labels):
            return
        for c, tag in enumerate(self._pr_tags):
            self.writer.add_pr_curve(tag, (labels == c).astype(np.int64), probs[:, c], step,
                                     num_thresholds=PR_THRESHOLDS)

    def log_hparams(self, hparams: dict, final: dict | None = None, best: dict | None = None, step: int = 0) -> None:
        """``add_hparams`` with ``hparam/final_<metric>`` and ``hparam/best_<metric>`` scalars as metrics.

        VisualDL's HParams view shows, per run, the last value of each metric's scalar tag.
        """
        names = []
        for prefix, logs in (("final", final), ("best", best)):
            for k, v in (logs or {}).items():
                if k in NOT_METRICS or not isinstance(v, (int, float)):
                    continue
                tag = f"hparam/{prefix}_{k}"
                self.writer.add_scalar(tag, float(v), step)
                names.append(tag)
        self.writer.add_hparams(dict(hparams), names)


def build_logger(cfg: dict, writer: LogWriter, progress: Progress, lr_fn: Callable[[], float],
                 eval_source: LastEval | None = None, bundle: DataBundle | None = None,
                 best_fn: Callable[[], dict | None] | None = None,
                 warn: Callable[[str], None] | None = None) -> VisualDLLogger:
    """The :class:`VisualDLLogger` the ``VisualDL`` config section asks for.

    Regression runs (``Global.task``) get no prediction images, confidence histograms or PR
    curves (they are about classes); their eval scalars are eval/loss, eval/mae, eval/rmse.
    """
    v = cfg["VisualDL"]
    classes = cfg["Global"].get("task", "classification") == "classification"
    return VisualDLLogger(
        writer, progress, lr_fn, eval_source=eval_source if classes else None,
        samples=bundle.val if bundle is not None and classes else None,
        class_names=list(bundle.class_names) if bundle is not None and classes else None,
        histograms_every_epochs=v["histograms_every_epochs"], sample_images=v["sample_images"] if classes else 0,
        confidence_histogram=v["confidence_histogram"] and classes, pr_curves=v["pr_curves"] and classes,
        hparams=run_hparams(cfg) if v["hparams"] else None, best_fn=best_fn, warn=warn)
