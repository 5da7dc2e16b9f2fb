"""The shared state of one run of the checks (:class:`CheckContext`), their settings
(:data:`DEFAULTS`) and the small helpers every group of checks uses."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from utils.build import build_network

# Knobs of the checks; ``run_checks(settings={...})`` overrides any of them.
DEFAULTS = {
    "audit_samples": 2048,        # samples per split run through the pipeline by the data audit
    "imbalance_warn": 3.0,        # class_balance: WARN above this max/min count ratio
    "duplicate_fail": 0.01,       # train_val_duplicates: FAIL above this fraction of a split
    "hash_samples": 50_000,       # train_val_duplicates: images hashed per split at most (in memory) ...
    "hash_samples_files": 5_000,  # ... and when they are decoded from files at every access
    "norm_mean_max": 0.5,         # input_normalization: |mean| above this -> WARN
    "norm_std_range": (0.5, 2.0),  # input_normalization: std outside -> WARN
    "init_samples": 256,          # loss_at_init: samples in the batch
    "init_ratio_range": (0.8, 1.25),  # loss_at_init: PASS band of loss / ln(C); below -> FAIL, above -> WARN
    "init_ratio_fail": 2.0,       # loss_at_init: ... and FAIL above this
    "grad_batch": 64,             # gradient_flow: batch size
    "indep_batch": 6,             # batch_independence: batch size (one backward per sample)
    "indep_tol": 1e-6,            # batch_independence: cross / self gradient above -> FAIL
    "overfit_batches": 2,         # overfit_tiny: batches ...
    "overfit_batch_size": 16,     # ... of this size
    "overfit_steps": 300,         # overfit_tiny: step budget
    "overfit_lr": 1e-3,           # overfit_tiny / input_baseline / heldout_signal: Adam LR
    "overfit_loss": 0.1,          # overfit_tiny: eval-mode loss below this ...
    "overfit_warn_fraction": 0.25,  # overfit_tiny: 100% accuracy with loss above 0.1 but below this x the
                                    # initial loss -> WARN (still falling); above -> FAIL (stuck)
    "overfit_eval_every": 10,     # ... checked every N steps (with 100% accuracy) to stop early
    "baseline_ratio": 0.5,        # input_baseline: real loss must be <= this x zeroed-input loss
    "heldout_train": 500,         # heldout_signal: training samples (at least 20 per class, at most 2000)
    "heldout_val": 1000,          # heldout_signal: held-out samples
    "heldout_steps": 50,          # heldout_signal: steps of batch 32
    "heldout_sigmas": 3.0,        # heldout_signal: margin over the baseline in standard errors
    "heldout_min_margin": 0.02,   # heldout_signal: ... and at least this much accuracy
}


def apply_finetune(cfg: dict, network: Any) -> Any:
    """The config's ``FineTune.freeze`` / ``lr_mult`` / ``head_epochs`` set on ``network`` as training sets them at
    its first epoch (utils.addons.finetune.setup_finetune), so the checks see the parameters training will train;
    ConfigError when they freeze everything."""
    ft = cfg.get("FineTune") or {}
    if not (ft.get("freeze") or ft.get("lr_mult") or (ft.get("head_epochs") or 0) > 0):
        return network
    # imports paddle: deferred until the thread count is set
    from utils.addons.finetune import require_trainable
    from utils.addons.finetune_plan import FineTunePlan

    plan = FineTunePlan(network, ft["freeze"] or [], ft["lr_mult"] or {}, ft["head_epochs"], ft["head"],
                        ft["body_lr_mult"], ft["freeze_bn"])
    require_trainable(plan, ft)
    plan.apply(plan.stage_for(0))
    return network


def labels_of(ds: Any) -> np.ndarray:
    """Every label of ``ds`` as int64 [N]: its ``labels`` array, else read sample by sample."""
    labels = getattr(ds, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64).reshape(-1)
    return np.asarray([int(np.asarray(ds[i][1]).reshape(-1)[0]) for i in range(len(ds))], np.int64)


def format_examples(items: Iterable, k: int = 5) -> str:
    """The first ``k`` items joined by commas, with the total when there are more."""
    items = list(items)
    s = ", ".join(str(i) for i in items[:k])
    return s + (f", ... ({len(items)} in all)" if len(items) > k else "")


class CheckContext:
    """Shared state of one run: config, data, model factory, settings and cached work.

    Args:
        cfg: validated config.
        bundle: a :class:`utils.data.DataBundle` (or an object with the same attributes);
            None builds it from ``cfg``.
        model_fn: zero-argument callable returning a fresh model; None builds ``Arch``.
        settings: overrides of :data:`DEFAULTS`.
    """

    def __init__(self, cfg: dict, bundle: Any = None, model_fn: Callable[[], Any] | None = None,
                 settings: dict | None = None) -> None:
        self.cfg = cfg
        self._bundle = bundle
        self._model_fn = model_fn
        self.s = dict(DEFAULTS)
        if settings:
            unknown = set(settings) - set(DEFAULTS)
            if unknown:
                raise ValueError(f"unknown check settings {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
            self.s.update(settings)
        self.seed = int(cfg["Global"]["seed"])
        self.cache = {}
        self.results = {}

    @property
    def bundle(self) -> Any:
        """The data bundle, built from the config at first use."""
        if self._bundle is None:
            from utils.data import build_datasets  # imports paddle: deferred until the thread count is set

            self._bundle = build_datasets(self.cfg)
        return self._bundle

    @property
    def num_classes(self) -> int:
        """Number of classes of the data."""
        return int(self.bundle.num_classes)

    def new_model(self) -> Any:
        """A freshly initialised model, seeded with ``Global.seed`` (the same init every call)."""
        import paddle  # deferred until the thread count is set
        from paddle.utils import unique_name

        paddle.seed(self.seed)
        with unique_name.guard():
            net = self._model_fn() if self._model_fn is not None else build_network(self.cfg, self.bundle)
        return apply_finetune(self.cfg, net)

    def eval_view(self, ds: Any) -> Any:
        """``ds`` with the eval transform (no augmentation) when it supports that."""
        t = getattr(self.bundle, "eval_transform", None)
        if t is not None and hasattr(ds, "with_transform"):
            return ds.with_transform(t)
        return ds

    def tensors(self, ds: Any, idx: Iterable[int]) -> tuple[Any, Any]:
        """(x float32 [N,C,H,W], y int64 [N]) tensors of samples ``idx`` of ``ds``."""
        import paddle  # deferred until the thread count is set

        xs, ys = [], []
        for i in idx:
            x, y = ds[int(i)]
            xs.append(np.asarray(x, np.float32))
            ys.append(int(np.asarray(y).reshape(-1)[0]))
        return paddle.to_tensor(np.stack(xs)), paddle.to_tensor(np.asarray(ys, np.int64))

    def balanced_indices(self, labels: np.ndarray, n: int, seed_offset: int = 0) -> np.ndarray:
        """Up to ``n`` positions, taken round-robin over classes in a fixed random order."""
        rng = np.random.RandomState(self.seed + seed_offset)
        pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
        out = []
        while len(out) < n and any(pools):
            for pool in pools:
                if pool and len(out) < n:
                    out.append(pool.pop())
        return rng.permutation(np.asarray(out, np.int64))

    def loss_fn(self) -> Callable:
        """The config's loss for this data's class count."""
        from utils.training.losses import build_loss  # imports paddle: deferred until the thread count is set

        return build_loss(self.cfg, self.num_classes)
