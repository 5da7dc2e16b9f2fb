"""Pre-flight checks: find a broken pipeline in seconds, before a long training run.

``run_checks(cfg)`` builds the data and the model of a config and runs the checks of
:data:`CHECKS` in order; each returns a :class:`CheckResult` with a status (PASS, WARN,
FAIL, or SKIP when a check it depends on failed), the evidence as numbers and, unless it
passed, a remedy. ``tools/check.py -c CFG`` prints them and exits 1 when one FAILs.

Checks and thresholds (why these values: see each function's docstring):

* data (every sample up to ``audit_samples`` per split, after the transform pipeline):
  ``data_finite`` (NaN/Inf: FAIL), ``labels_in_range`` (outside [0, C): FAIL),
  ``input_shapes`` (more than one shape, or not float32 CHW: FAIL), ``class_balance``
  (max/min count above 3:1: WARN; a class without a training sample: FAIL),
  ``train_val_duplicates`` (exact copies of training images in val/test: WARN, above 1% of
  the split FAIL), ``input_normalization`` (network input |mean| > 0.5 or std outside
  [0.5, 2]: WARN).
* model (fresh init, ``Global.seed``): ``loss_at_init`` (BatchNorm on batch statistics,
  dropout off; loss / ln(C) in [0.8, 1.25] PASS, up to 2 WARN, above 2 or below 0.8 FAIL,
  outputs that are already probabilities FAIL), ``gradient_flow`` (a trainable parameter
  with a zero, missing or non-finite gradient: FAIL; frozen ones: WARN),
  ``batch_independence`` (eval mode, d loss_i / d x_j for j != i above 1e-6 of the j = i
  gradient: FAIL).
* training: ``overfit_tiny`` (2 batches of 16, eval transform, no weight decay or label
  smoothing, Adam lr 1e-3, at most 300 steps: loss < 0.1 and 100% accuracy PASS; 100% with
  a loss below a quarter of the initial one WARN; else FAIL), ``input_baseline`` (the same
  steps on zeroed inputs: the real-input loss must be at most half of theirs),
  ``heldout_signal`` (50 steps on a few hundred samples: held-out accuracy or loss must beat
  the best input-independent predictor by 3 standard errors).

SKIP is a fourth status: a model or training check is skipped when a data check it needs
(``data_finite``, ``labels_in_range``, ``input_shapes``) FAILed, since its numbers would be
meaningless. A check that crashes is reported as a FAIL naming the exception.

Every user-facing sentence is a template in :data:`MESSAGES`, keyed by language and
finding id; a result keeps its ``finding`` and ``values`` and can be rendered again in
another language with :meth:`CheckResult.render`. The checks use their own RNG seeds and
re-seed Paddle's global generator; training seeds everything again at its start.
"""
import dataclasses
import hashlib
import math
import textwrap
import time
import warnings

import numpy as np

from utils.errors import UserError, did_you_mean

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"

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

# --------------------------------------------------------------------------- messages

# MESSAGES[lang][finding] = (evidence template, remedy template or None). Templates are
# str.format strings over the result's ``values``. Keys starting with "_" are the runner's
# own words. A new language adds a table with the same keys; missing keys fall back to "en".
MESSAGES = {"en": {
    "_remedy": "remedy",
    "_summary": "{n_pass} passed, {n_warn} warning(s), {n_fail} failed, {n_skip} skipped in {seconds:.1f} s",
    "_verdict_fail": "some checks FAILED: fix them before training (exit status 1)",
    "_verdict_ok": "no check failed",
    "_unknown_check": "unknown check '{name}'{hint}; valid checks: {names}; groups: {groups}",

    "skipped": ("skipped: {dep} failed, and this check needs it to pass", "Fix the {dep} failure first."),
    "check_error": ("the check itself raised {error}", "This usually means the data or model is broken in a way "
                    "the other checks name; if they all pass, the full traceback is in the --json report "
                    "(values.traceback); run the check alone with --only {check}."),
    "no_samples": ("no samples to check", "The split is empty: check Data.* and the data directory."),

    "finite_ok": ("no NaN/Inf in {n} samples after the transform pipeline ({splits})", None),
    "finite_bad": ("{n_nan} NaN and {n_inf} Inf values in {n_bad} of {n} samples after the transform pipeline "
                   "(e.g. {examples})",
                   "One non-finite input turns the loss and then every weight into NaN. Look at those samples "
                   "(dataset[i] and dataset.raw(i)): a corrupt image, a Normalize std of 0, or a custom "
                   "transform that divides by zero or takes log(0)."),

    "labels_ok": ("{n} labels ({splits}), all in [0, {num_classes})", None),
    "labels_bad": ("{n_bad} of {n} labels outside [0, {num_classes}): values {bad_values} (e.g. {examples})",
                   "Labels must be class indices 0..{last}. Check Data.num_classes and the label file; labels "
                   "counted from 1 need 1 subtracted; -1 or 255 are often 'ignore' markers that need removing."),

    "shapes_ok": ("all {n} samples are {shape} {dtype} after the transform pipeline", None),
    "shapes_bad": ("{k} different input shapes/types in {n} samples: {shapes} (e.g. {examples})",
                   "The model needs one input size and float32: start Transforms.train and Transforms.eval with "
                   "a Resize (or set Data.image_size) and make both pipelines end at the same size."),

    "balance_ok": ("{num_classes} classes, {n} training samples, per class min {cmin} ({name_min}) / max {cmax} "
                   "({name_max}), ratio {ratio:.2f}:1{hist}", None),
    "balance_warn": ("{num_classes} classes, {n} training samples, per class min {cmin} ({name_min}) / max {cmax} "
                     "({name_max}), ratio {ratio:.2f}:1, above {limit:g}:1{hist}",
                     "Imbalanced: accuracy will mostly reflect the large classes. Judge per-class accuracy "
                     "(tools/eval.py), and consider more data for the small classes, oversampling them, or a "
                     "class-weighted loss."),
    "balance_empty": ("{k} of {num_classes} classes have no training sample: {empty}{hist}",
                      "The model can never learn those classes. Fix the data, or keep only the present classes "
                      "with Data.classes (and check Data.num_classes)."),

    "dups_ok": ("no exact copy of any of {n_train} training images in {splits} (hash of the raw uint8 pixels)",
                None),
    "dups_found": ("{desc} are exact copies of training images (hash of the raw uint8 pixels); {n_conflict} of "
                   "them with a different label",
                   "Held-out accuracy is optimistic by up to that fraction (the model is scored on images it "
                   "trained on). Remove the copies from one side: dataset.path(i) names the files of the indices "
                   "above. Copies with a different label are labelling errors."),

    "dups_no_raw": ("the training set gives no raw images (no raw(i)): duplicates not checked", None),
    "norm_ok": ("raw training pixels mean {raw_mean} std {raw_std} (0-1 units); network inputs mean {in_mean} "
                "std {in_std} per channel", None),
    "norm_warn": ("raw training pixels mean {raw_mean} std {raw_std} (0-1 units); network inputs mean {in_mean} "
                  "std {in_std} per channel: not normalized (want |mean| <= {mean_max:g} and std in "
                  "[{std_lo:g}, {std_hi:g}])",
                  "End Transforms.train and Transforms.eval with '- Normalize: {{}}' (it uses Transforms.mean/std; "
                  "'auto' computes mean {raw_mean} std {raw_std} from the training split). Inputs far from mean 0 "
                  "and std 1 slow training and shift the learning rate that works."),

    "norm_stats": ("raw training pixels mean {raw_mean} std {raw_std} (0-1 units) but Normalize uses mean "
                   "{used_mean} std {used_std}: network inputs mean {in_mean} std {in_std} per channel, not "
                   "normalized (want |mean| <= {mean_max:g} and std in [{std_lo:g}, {std_hi:g}])",
                   "The Normalize statistics are not this data's: set Transforms.mean: auto and Transforms.std: "
                   "auto (or the raw values above). Padding of RandomCrop adds zeros and moves the mean a little; "
                   "that alone does not trigger this."),
    "init_ok": ("loss {loss:.3f} vs ln({num_classes})={lnc:.3f} (ratio {ratio:.2f}) on {n} samples, BatchNorm on "
                "batch statistics, dropout off; logit std {logit_std:.2f}", None),
    "init_warm": ("loss {loss:.3f} vs ln({num_classes})={lnc:.3f} (ratio {ratio:.2f}, above {hi:g}) on {n} samples, "
                  "BatchNorm on batch statistics, dropout off; logit std {logit_std:.2f}",
                  "The untrained model is somewhat confident (logit std should be about 1 or less): training copes "
                  "but spends its first steps shrinking the logits. Common in residual networks; a smaller init "
                  "of the head (Arch.init, Arch.init_std) or zero-initialized last BatchNorm scale of each "
                  "residual block brings it to ln(C)."),
    "init_high": ("loss {loss:.3f} vs ln({num_classes})={lnc:.3f} (ratio {ratio:.2f}, above {hi:g}) on {n} samples, "
                  "BatchNorm on batch statistics, dropout off; logit std {logit_std:.2f}",
                  "The untrained model is confidently wrong: its logits are far too large at init (logit std "
                  "should be about 1 or less). Look for a bad init (Arch.init: kaiming or xavier, a smaller "
                  "Arch.init_std), logits scaled up (a temperature, a missing normalization before the head), or "
                  "a loss that is not cross-entropy on logits."),
    "init_low": ("loss {loss:.3f} vs ln({num_classes})={lnc:.3f} (ratio {ratio:.2f}, below {lo:g}) on {n} samples, "
                 "BatchNorm on batch statistics, dropout off; logit std {logit_std:.2f}",
                 "An untrained model should not beat chance: labels leak into the inputs, weights are not fresh, "
                 "or the loss is not a mean cross-entropy (e.g. divided by the class count)."),
    "init_probs": ("the model outputs probabilities, not logits (every row >= 0 and sums to 1, max deviation "
                   "{dev:.1e}); loss {loss:.3f} vs ln({num_classes})={lnc:.3f}",
                   "Softmax is applied twice: return raw logits from forward(), the cross-entropy loss applies "
                   "softmax itself. With a doubled softmax the loss starts at ln(C) but can never go below "
                   "{floor:.2f}, so training stalls."),
    "init_nonfinite": ("loss at init is {loss} (logits: {n_bad} non-finite values)",
                       "The forward pass produces NaN/Inf before any training: check the inputs (data_finite), "
                       "log/sqrt/division of values that can be 0 or negative in forward(), and the init."),

    "grads_ok": ("{n} trainable parameter tensors ({n_values} values), all with finite non-zero gradients on a "
                 "batch of {batch}; smallest gradient norm {gmin:.1e} ({gmin_name}), largest {gmax:.1e} "
                 "({gmax_name})", None),
    "grads_frozen": ("{n_frozen} frozen (stop_gradient) parameter tensor(s) never update: {frozen}; the {n} "
                     "trainable ones all get finite non-zero gradients",
                     "Intended when fine-tuning part of a model; otherwise set stop_gradient = False (or "
                     "ParamAttr(trainable=True)) on them."),
    "grads_bad": ("{n_bad} of {n} trainable parameter tensors get no usable gradient on a batch of {batch}: "
                  "dead (zero or none): {dead}; non-finite: {nonfinite}; frozen: {frozen}",
                  "Those weights never learn. A missing gradient means the layer is built but not used in "
                  "forward(); an all-zero one means its output is multiplied by zero, cut off by detach() or "
                  "stop_gradient, or behind a ReLU that is dead for every input; NaN/Inf means an overflow or "
                  "log/sqrt/division of 0 in forward(). Look at forward() for each name."),

    "indep_ok": ("eval mode, batch of {batch}: max |d loss_i / d x_j| for j != i is {cross:.1e} vs {self_grad:.1e} "
                 "for j = i", None),
    "indep_mixed": ("eval mode, batch of {batch}: max |d loss_i / d x_j| for j != i is {cross:.1e} vs "
                    "{self_grad:.1e} for j = i (ratio {ratio:.1e} > {tol:g}): samples influence each other "
                    "(pairs i<-j: {pairs})",
                    "The model mixes samples across the batch outside of BatchNorm's training statistics: a "
                    "reshape or transpose that moves the batch axis (e.g. x.reshape([C, -1]) or "
                    "transpose([1, 0, ...]) before a flatten), a mean/norm/softmax over axis 0, or a matmul with "
                    "the batch on the wrong side. Print the shapes through forward()."),
    "indep_no_input": ("eval mode, batch of {batch}: the loss does not depend on the inputs (gradient "
                       "w.r.t. every input is zero)",
                       "forward() ignores its input: check that it uses x (and not a constant, a stored tensor "
                       "or a detached copy)."),

    "overfit_ok": ("{n} samples ({batches} batches of {bs}, eval transform, weight decay 0{dropout}): loss "
                   "{loss0:.2f} -> {loss:.3f} and accuracy {acc:.0%} after {steps} steps (Adam lr {lr:g}, "
                   "eval mode)", None),
    "overfit_slow": ("{n} samples ({batches} batches of {bs}, eval transform, weight decay 0{dropout}): accuracy "
                     "{acc:.0%} but loss {loss0:.2f} -> {loss:.3f} (want < {target:g}) after {steps} steps "
                     "(Adam lr {lr:g}, eval mode)",
                     "The pipeline learns, but slowly for so few samples: strong dropout or stochastic depth, a "
                     "very small or very deep model without normalization, or an init that saturates "
                     "activations."),
    "overfit_fail": ("{n} samples ({batches} batches of {bs}, eval transform, weight decay 0{dropout}): loss "
                     "{loss0:.2f} -> {loss:.3f}, accuracy {acc:.0%} after {steps} steps (Adam lr {lr:g}, eval "
                     "mode): the training pipeline is broken",
                     "A working network memorizes a few dozen samples within these steps, the loss close to 0. "
                     "Look, in order, at: labels aligned with their images (print a few dataset.raw(i)); the "
                     "model returns raw logits (no softmax in forward); the loss_at_init, gradient_flow and "
                     "batch_independence results; forward() uses its input; frozen layers; dropout set too "
                     "high; a loss that cannot reach 0."),
    "overfit_nonfinite": ("the training loss became {loss} at step {step} while fitting {n} samples (Adam lr "
                          "{lr:g})",
                          "Training blows up even on a tiny subset at a small learning rate: look for log(0), "
                          "division by ~0 or exp overflow in forward() or a custom loss, and for NaN inputs."),

    "baseline_ok": ("after {steps} steps on the same {n} samples: loss {real:.3f} with the real inputs vs {zero:.3f} "
                    "with zeroed inputs (label entropy {entropy:.2f}); ratio {ratio:.2f} <= {limit:g}", None),
    "baseline_fail": ("after {steps} steps on the same {n} samples: loss {real:.3f} with the real inputs vs "
                      "{zero:.3f} with zeroed inputs (label entropy {entropy:.2f}); ratio {ratio:.2f} > {limit:g}: "
                      "the model gets nothing out of its inputs",
                      "Training on the real images should beat training on blank ones by far. Check that "
                      "forward() uses x, that the inputs reaching the model are not constant (data_finite, "
                      "input_normalization: std ~0 means blank images), and that nothing overwrites or detaches "
                      "the input."),

    "heldout_ok": ("trained {steps} steps on {n_train} samples; on {n_val} held-out samples: accuracy {acc:.1%} vs "
                   "{base:.1%} for the best input-independent guess (need >= {need:.1%}), loss {loss:.3f} vs "
                   "{base_loss:.3f} (need <= {loss_need:.3f})", None),
    "heldout_fail": ("trained {steps} steps on {n_train} samples; on {n_val} held-out samples: accuracy {acc:.1%} vs "
                     "{base:.1%} for the best input-independent guess (need >= {need:.1%}), loss {loss:.3f} vs "
                     "{base_loss:.3f} (need <= {loss_need:.3f}): what the model learns does not carry over to new "
                     "images",
                     "The model fits its training samples but not the relation between images and labels. "
                     "Typical cause: labels that do not match their images (shuffled or misaligned lists, a "
                     "label file in another order, images sorted without their labels), or a held-out split "
                     "labelled differently from train. Look at a few samples of each split with their labels."),
    "heldout_no_val": ("no held-out samples (no val split and no training sample left over)",
                       "Give the data a validation split (Data.val_split > 0)."),
}}


def message(finding, lang="en"):
    """The (evidence, remedy) templates of ``finding`` in ``lang`` (falling back to English)."""
    table = MESSAGES.get(lang, {})
    return table.get(finding, MESSAGES["en"][finding])


def _fmt(template, values):
    return template.format(**values) if template else ""


@dataclasses.dataclass
class CheckResult:
    """What one check found.

    Attributes:
        name: check name (a key of :data:`CHECKS`).
        status: PASS, WARN, FAIL or SKIP.
        finding: id of the message template in :data:`MESSAGES`.
        values: the evidence as numbers and short strings (JSON-serializable).
        evidence: the evidence sentence, rendered.
        remedy: what to do, rendered ("" for PASS).
        seconds: time the check took.
    """
    name: str
    status: str
    finding: str
    values: dict
    evidence: str = ""
    remedy: str = ""
    seconds: float = 0.0

    def render(self, lang="en"):
        """Fill ``evidence`` and ``remedy`` from the templates of ``lang``; returns self."""
        ev, rem = message(self.finding, lang)
        self.evidence = _fmt(ev, self.values)
        self.remedy = _fmt(rem, self.values) if self.status != PASS else ""
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


def _result(name, status, finding, **values):
    return CheckResult(name, status, finding, values)


# --------------------------------------------------------------------------- helpers

def _examples(items, k=5):
    items = list(items)
    s = ", ".join(str(i) for i in items[:k])
    return s + (f", ... ({len(items)} in all)" if len(items) > k else "")


def _vec(v):
    return "[" + ", ".join(f"{x:.2f}" for x in v) + "]"


def _shape_str(shape, dtype):
    return "x".join(str(int(s)) for s in shape) + f" {dtype}"


def _splits(bundle):
    """[(split name, dataset)] of the bundle's non-empty splits, train first."""
    out = []
    for name in ("train", "val", "test"):
        ds = getattr(bundle, name, None)
        if ds is not None and len(ds):
            out.append((name, ds))
    return out


def _labels_of(ds):
    labels = getattr(ds, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64).reshape(-1)
    return np.asarray([int(np.asarray(ds[i][1]).reshape(-1)[0]) for i in range(len(ds))], np.int64)


def _dropout_note(model):
    """', dropout as configured (max p 0.3)' or '' when the model has no dropout."""
    ps = []
    for layer in model.sublayers(include_self=True):
        kind = type(layer).__name__
        p = getattr(layer, "p", None)
        if ("Dropout" in kind or "DropPath" in kind) and isinstance(p, (int, float)) and p > 0:
            ps.append(float(p))
    return f", dropout as configured (max p {max(ps):g})" if ps else ""


def _entropy(labels):
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


class CheckContext:
    """Shared state of one run: config, data, model factory, settings and cached work.

    Args:
        cfg: validated config.
        bundle: a :class:`utils.data.DataBundle` (or an object with the same attributes);
            None builds it from ``cfg``.
        model_fn: zero-argument callable returning a fresh model; None builds ``Arch``.
        settings: overrides of :data:`DEFAULTS`.
    """

    def __init__(self, cfg, bundle=None, model_fn=None, settings=None):
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
    def bundle(self):
        if self._bundle is None:
            from utils.data import build_datasets

            self._bundle = build_datasets(self.cfg)
        return self._bundle

    @property
    def num_classes(self):
        return int(self.bundle.num_classes)

    def new_model(self):
        """A freshly initialised model, seeded with ``Global.seed`` (the same init every call)."""
        import paddle
        from paddle.utils import unique_name

        paddle.seed(self.seed)
        with unique_name.guard():
            if self._model_fn is not None:
                return self._model_fn()
            from utils.build import build_network

            return build_network(self.cfg, self.bundle)

    def eval_view(self, ds):
        """``ds`` with the eval transform (no augmentation) when it supports that."""
        t = getattr(self.bundle, "eval_transform", None)
        if t is not None and hasattr(ds, "with_transform"):
            return ds.with_transform(t)
        return ds

    def tensors(self, ds, idx):
        """(x float32 [N,C,H,W], y int64 [N]) tensors of samples ``idx`` of ``ds``."""
        import paddle

        xs, ys = [], []
        for i in idx:
            x, y = ds[int(i)]
            xs.append(np.asarray(x, np.float32))
            ys.append(int(np.asarray(y).reshape(-1)[0]))
        return paddle.to_tensor(np.stack(xs)), paddle.to_tensor(np.asarray(ys, np.int64))

    def balanced_indices(self, labels, n, seed_offset=0):
        """Up to ``n`` positions, taken round-robin over classes in a fixed random order."""
        rng = np.random.RandomState(self.seed + seed_offset)
        pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
        out = []
        while len(out) < n and any(pools):
            for pool in pools:
                if pool and len(out) < n:
                    out.append(pool.pop())
        return rng.permutation(np.asarray(out, np.int64))

    def loss_fn(self):
        from utils.training.optim import build_loss

        return build_loss(self.cfg, self.num_classes)


# --------------------------------------------------------------------------- registry

CHECKS = {}    # name -> (function, group, names of checks that must not FAIL first)
GROUPS = {}    # group -> [names]


def register_check(name, group, requires=()):
    """Register ``fn(ctx) -> CheckResult`` under ``name`` in ``group`` (run in registration order)."""

    def deco(fn):
        CHECKS[name] = (fn, group, tuple(requires))
        GROUPS.setdefault(group, []).append(name)
        return fn

    return deco


def select_checks(only=None):
    """Check names for ``only`` (names or group names, in registry order); UserError on unknown."""
    if not only:
        return list(CHECKS)
    wanted = set()
    for item in only:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            if name in CHECKS:
                wanted.add(name)
            elif name in GROUPS:
                wanted.update(GROUPS[name])
            else:
                t = MESSAGES["en"]["_unknown_check"]
                raise UserError(t.format(name=name, hint=did_you_mean(name, list(CHECKS) + list(GROUPS)),
                                         names=", ".join(CHECKS), groups=", ".join(GROUPS)))
    return [n for n in CHECKS if n in wanted]


# --------------------------------------------------------------------------- data audit

def _audit(ctx):
    """Run up to ``audit_samples`` samples of each split through its pipeline (cached)."""
    if "audit" in ctx.cache:
        return ctx.cache["audit"]
    limit = ctx.s["audit_samples"]
    rows = []   # (split, index, shape, dtype, n_nan, n_inf, label)
    sums = {}   # shape -> per-channel [count, sum, sum of squares] of finite train inputs
    for split, ds in _splits(ctx.bundle):
        n = len(ds)
        idx = np.arange(n) if n <= limit else np.sort(
            np.random.RandomState(ctx.seed + 11).choice(n, limit, replace=False))
        for i in idx:
            x, y = ds[int(i)]
            x = np.asarray(x)
            if np.issubdtype(x.dtype, np.floating):
                n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
            else:
                n_nan = n_inf = 0
            rows.append((split, int(i), tuple(x.shape), str(x.dtype), n_nan, n_inf,
                         int(np.asarray(y).reshape(-1)[0])))
            if split == "train" and x.ndim == 3:
                xf = x.reshape(x.shape[0], -1).astype(np.float64)
                ok = np.isfinite(xf)
                xf = np.where(ok, xf, 0.0)
                acc = sums.setdefault(x.shape, [np.zeros(x.shape[0]), np.zeros(x.shape[0]), np.zeros(x.shape[0])])
                acc[0] += ok.sum(1)
                acc[1] += xf.sum(1)
                acc[2] += (xf * xf).sum(1)
    ctx.cache["audit"] = (rows, sums)
    return rows, sums


def _split_counts(rows):
    counts = {}
    for r in rows:
        counts[r[0]] = counts.get(r[0], 0) + 1
    return ", ".join(f"{v} {k}" for k, v in counts.items())


@register_check("data_finite", "data")
def check_data_finite(ctx):
    """NaN/Inf in the inputs after the transform pipeline. Any: FAIL (one NaN poisons the weights)."""
    rows, _ = _audit(ctx)
    if not rows:
        return _result("data_finite", FAIL, "no_samples")
    bad = [r for r in rows if r[4] or r[5]]
    values = dict(n=len(rows), splits=_split_counts(rows))
    if not bad:
        return _result("data_finite", PASS, "finite_ok", **values)
    return _result("data_finite", FAIL, "finite_bad", n_bad=len(bad), n_nan=sum(r[4] for r in bad),
                   n_inf=sum(r[5] for r in bad), examples=_examples(f"{r[0]} {r[1]}" for r in bad),
                   bad_samples=[[r[0], r[1]] for r in bad[:100]], **values)


@register_check("labels_in_range", "data")
def check_labels_in_range(ctx):
    """Every label of every split (the label arrays, and those the audited samples return) in [0, C)."""
    c = ctx.num_classes
    bad, n, bad_values = [], 0, set()
    for split, ds in _splits(ctx.bundle):
        labels = _labels_of(ds)
        n += len(labels)
        for i in np.flatnonzero((labels < 0) | (labels >= c)):
            bad.append((split, int(i)))
            bad_values.add(int(labels[i]))
    rows, _ = _audit(ctx)
    seen = set(bad)
    for r in rows:   # what __getitem__ returns (a wrapper can disagree with .labels)
        if not 0 <= r[6] < c and (r[0], r[1]) not in seen:
            bad.append((r[0], r[1]))
            bad_values.add(r[6])
    splits = ", ".join(f"{len(ds)} {s}" for s, ds in _splits(ctx.bundle))
    if not bad:
        return _result("labels_in_range", PASS, "labels_ok", n=n, num_classes=c, splits=splits)
    return _result("labels_in_range", FAIL, "labels_bad", n=n, n_bad=len(bad), num_classes=c, last=c - 1,
                   splits=splits, bad_values=_examples(sorted(bad_values), 8),
                   examples=_examples(f"{s} {i}" for s, i in bad))


@register_check("input_shapes", "data")
def check_input_shapes(ctx):
    """One input shape and dtype float32 across the audited samples of all splits; else FAIL."""
    rows, _ = _audit(ctx)
    if not rows:
        return _result("input_shapes", FAIL, "no_samples")
    kinds = {}
    for r in rows:
        kinds.setdefault((r[2], r[3]), []).append(r)
    if len(kinds) == 1 and rows[0][3] == "float32" and len(rows[0][2]) == 3:
        return _result("input_shapes", PASS, "shapes_ok", n=len(rows), shape="x".join(map(str, rows[0][2])),
                       dtype=rows[0][3])
    common = max(kinds, key=lambda k: len(kinds[k]))
    odd = [r for k, rs in kinds.items() if k != common for r in rs]
    if not odd:  # one kind, but not float32 CHW
        odd = rows
    shapes = "; ".join(f"{_shape_str(*k)} ({len(rs)})" for k, rs in sorted(kinds.items(), key=lambda kv: -len(kv[1])))
    return _result("input_shapes", FAIL, "shapes_bad", n=len(rows), k=len(kinds), shapes=shapes,
                   examples=_examples(f"{r[0]} {r[1]}: {_shape_str(r[2], r[3])}" for r in odd))


@register_check("class_balance", "data", requires=("labels_in_range",))
def check_class_balance(ctx):
    """Class histogram of the training split.

    WARN above 3:1 (max/min count): from there the small classes get under a quarter of the
    big ones' gradient signal and plain accuracy mostly reflects the big classes; below it a
    plain cross-entropy copes. A class with no training sample: FAIL (it can never be predicted).
    """
    c = ctx.num_classes
    labels = _labels_of(ctx.bundle.train)
    labels = labels[(labels >= 0) & (labels < c)]
    counts = np.bincount(labels, minlength=c)
    names = list(getattr(ctx.bundle, "class_names", None) or [str(i) for i in range(c)])
    hist = ""
    if c <= 20:
        hist = "; counts " + " ".join(f"{names[k]}:{int(counts[k])}" for k in range(c))
    values = dict(num_classes=c, n=int(len(labels)), counts=[int(v) for v in counts], hist=hist)
    empty = [names[k] for k in range(c) if counts[k] == 0]
    if empty:
        return _result("class_balance", FAIL, "balance_empty", k=len(empty), empty=_examples(empty, 10), **values)
    kmin, kmax = int(np.argmin(counts)), int(np.argmax(counts))
    ratio = float(counts[kmax] / counts[kmin])
    values.update(cmin=int(counts[kmin]), cmax=int(counts[kmax]), name_min=names[kmin], name_max=names[kmax],
                  ratio=ratio, limit=ctx.s["imbalance_warn"])
    if ratio > ctx.s["imbalance_warn"]:
        return _result("class_balance", WARN, "balance_warn", **values)
    return _result("class_balance", PASS, "balance_ok", **values)


def _hashes(ds, limit, seed):
    n = len(ds)
    idx = np.arange(n) if n <= limit else np.sort(np.random.RandomState(seed).choice(n, limit, replace=False))
    out = {}
    for i in idx:
        img, label = ds.raw(int(i))
        img = np.ascontiguousarray(img)
        h = hashlib.blake2b(img.tobytes(), digest_size=16)
        h.update(repr((img.shape, str(img.dtype))).encode())
        out.setdefault(h.digest(), []).append((int(i), int(label)))
    return out, len(idx)


@register_check("train_val_duplicates", "data")
def check_train_val_duplicates(ctx):
    """Exact copies of training images in val/test (blake2b of the raw uint8 pixels and shape).

    Any copy: WARN (the held-out score is optimistic by that fraction). Above 1% of a split:
    FAIL, since that is about the accuracy difference people act on. Near-duplicates (a
    re-encoded JPEG) are not found: only exact pixel copies. At most 50,000 images per split
    are hashed (5,000 when they are decoded from files at every access); a sample beyond that.
    """
    b = ctx.bundle
    if not hasattr(b.train, "raw"):
        return _result("train_val_duplicates", SKIP, "dups_no_raw")
    # Images decoded at every access (Data.preload false) cost a decode each: hash fewer.
    limit = ctx.s["hash_samples"] if getattr(b.train, "preloaded", True) else ctx.s["hash_samples_files"]
    train_h, n_train = _hashes(b.train, limit, ctx.seed + 21)
    found, descs, worst, conflicts, checked = {}, [], 0.0, 0, []
    for split in ("val", "test"):
        ds = getattr(b, split, None)
        if ds is None or not len(ds):
            continue
        hs, n = _hashes(ds, limit, ctx.seed + 22)
        checked.append(f"{split} ({n} images)")
        dup = []
        for h, items in hs.items():
            if h in train_h:
                train_labels = {lab for _, lab in train_h[h]}
                for i, lab in items:
                    dup.append((i, train_h[h][0][0]))
                    conflicts += lab not in train_labels
        if dup:
            dup.sort()
            frac = len(dup) / n
            worst = max(worst, frac)
            found[split] = {"count": len(dup), "of": n, "pairs": dup[:20]}
            descs.append(f"{len(dup)} of {n} {split} images ({frac:.1%}; {split} indices "
                         f"{_examples([i for i, _ in dup])} = train {_examples([j for _, j in dup])})")
    if not checked:
        return _result("train_val_duplicates", PASS, "dups_ok", splits="(no val/test split)", n_train=n_train)
    if not found:
        return _result("train_val_duplicates", PASS, "dups_ok", splits=" and ".join(checked), n_train=n_train)
    status = FAIL if worst > ctx.s["duplicate_fail"] else WARN
    return _result("train_val_duplicates", status, "dups_found", desc="; ".join(descs), n_conflict=conflicts,
                   duplicates=found, n_train=n_train, fraction=worst)


@register_check("input_normalization", "data", requires=("data_finite", "input_shapes"))
def check_input_normalization(ctx):
    """Per-channel mean/std of the raw training pixels and of the inputs the network gets.

    WARN when a channel's input mean is beyond +-0.5 or its std outside [0.5, 2]: 0-1 pixels
    (std ~0.25-0.4) and 0-255 pixels (std ~60) both land outside, a Normalize with roughly
    right statistics lands well inside.
    """
    from utils.data import MEAN_STD_MAX_SAMPLES, compute_mean_std

    _, sums = _audit(ctx)
    if not sums:
        return _result("input_normalization", FAIL, "no_samples")
    shape = max(sums, key=lambda k: sums[k][0].sum())
    cnt, s1, s2 = sums[shape]
    mean = s1 / np.maximum(cnt, 1)
    std = np.sqrt(np.maximum(s2 / np.maximum(cnt, 1) - mean ** 2, 0.0))
    raw_mean = raw_std = "?"
    if hasattr(ctx.bundle.train, "iter_raw_chunks"):
        m, s = compute_mean_std(ctx.bundle.train, max_samples=MEAN_STD_MAX_SAMPLES, seed=ctx.seed)
        raw_mean, raw_std = _vec(m), _vec(s)
    lo, hi = ctx.s["norm_std_range"]
    values = dict(raw_mean=raw_mean, raw_std=raw_std, in_mean=_vec(mean), in_std=_vec(std),
                  input_mean=[float(v) for v in mean], input_std=[float(v) for v in std],
                  mean_max=ctx.s["norm_mean_max"], std_lo=lo, std_hi=hi)
    bad = bool(np.any(np.abs(mean) > ctx.s["norm_mean_max"]) or np.any(std < lo) or np.any(std > hi))
    if not bad:
        return _result("input_normalization", PASS, "norm_ok", **values)
    pipeline = getattr(ctx.bundle, "train_transform", None) or getattr(ctx.bundle.train, "transform", None)
    used_mean, used_std = getattr(pipeline, "mean", None), getattr(pipeline, "std", None)
    if used_mean is not None and used_std is not None:   # a Normalize with statistics of other data
        return _result("input_normalization", WARN, "norm_stats", used_mean=_vec(used_mean),
                       used_std=_vec(used_std), **values)
    return _result("input_normalization", WARN, "norm_warn", **values)


# --------------------------------------------------------------------------- model checks

MODEL_REQUIRES = ("data_finite", "labels_in_range", "input_shapes")


def _first_step_mode(model):
    """Training mode with dropout-like layers in eval mode: normalization on batch statistics,
    as the first training step sees it, and a deterministic output."""
    model.train()
    for layer in model.sublayers():
        kind = type(layer).__name__
        if "Dropout" in kind or "DropPath" in kind:
            layer.eval()


@register_check("loss_at_init", "model", requires=MODEL_REQUIRES)
def check_loss_at_init(ctx):
    """Loss of the untrained model on up to 256 training samples vs ln(C), the loss of a
    uniform prediction, which small random logits give.

    Measured with BatchNorm on batch statistics and dropout off (what the first training
    step sees, deterministically), not in plain eval mode: an untrained BatchNorm in eval mode
    uses its initial running statistics (mean 0, variance 1), i.e. it normalizes nothing, and
    a residual network then reads far off (resnet20 on digits: 8.57 in eval mode, 2.99 at its
    first step). The eval-mode value is kept in ``values['eval_loss']``.

    With random logits of std s the expected cross-entropy is about ln(C) + s^2 (1 - 1/C) / 2.
    PASS for a ratio loss / ln(C) in [0.8, 1.25]: 1.25 allows s up to about 1.1 at 10 classes
    (1.5 at 100). WARN up to 2 (s about 2.3 at 10 classes): training copes but spends its first
    steps shrinking the logits (resnet20 reads 1.30). FAIL above 2 (confidently wrong: a bad
    init or scaled logits) and below 0.8 (an untrained model beating chance by 20% has
    information it should not have). Outputs that are already probabilities (rows >= 0
    summing to 1) FAIL: the loss would apply softmax a second time.
    """
    import paddle

    c = ctx.num_classes
    ds = ctx.eval_view(ctx.bundle.train)
    idx = ctx.balanced_indices(_labels_of(ds), ctx.s["init_samples"], 31)
    x, y = ctx.tensors(ds, idx)
    model = ctx.new_model()
    loss_fn = ctx.loss_fn()
    with paddle.no_grad():
        model.eval()
        eval_loss = float(loss_fn(model(x), y.reshape([-1, 1])))
        _first_step_mode(model)
        logits = model(x)
        loss = float(loss_fn(logits, y.reshape([-1, 1])))
    model.eval()
    out = logits.numpy().astype(np.float64)
    lnc = math.log(c)
    n_bad = int((~np.isfinite(out)).sum())
    values = dict(loss=loss, num_classes=c, lnc=lnc, n=len(idx), eval_loss=eval_loss)
    if n_bad or not math.isfinite(loss):
        return _result("loss_at_init", FAIL, "init_nonfinite", n_bad=n_bad, **values)
    ratio = loss / lnc
    values.update(ratio=ratio, logit_std=float(out.std(axis=1).mean()))
    dev = float(np.abs(out.sum(axis=1) - 1.0).max())
    if c > 1 and out.min() >= 0 and dev < 1e-3:
        floor = math.log(math.e + c - 1) - 1.0   # -log softmax(one-hot probabilities)[label]
        return _result("loss_at_init", FAIL, "init_probs", dev=dev, floor=floor, **values)
    lo, hi = ctx.s["init_ratio_range"]
    if ratio > ctx.s["init_ratio_fail"]:
        return _result("loss_at_init", FAIL, "init_high", hi=ctx.s["init_ratio_fail"], **values)
    if ratio > hi:
        return _result("loss_at_init", WARN, "init_warm", hi=hi, **values)
    if ratio < lo:
        return _result("loss_at_init", FAIL, "init_low", lo=lo, **values)
    return _result("loss_at_init", PASS, "init_ok", **values)


@register_check("gradient_flow", "model", requires=MODEL_REQUIRES)
def check_gradient_flow(ctx):
    """One training-mode forward/backward with the config's loss: every trainable parameter
    needs a finite gradient that is not all zero. Missing/zero/non-finite: FAIL (listed by
    name); frozen (stop_gradient) parameters: WARN, since freezing is sometimes intended."""
    from models.init import running_stats  # imports paddle: deferred until the thread count is set
    c = ctx.num_classes
    ds = ctx.eval_view(ctx.bundle.train)
    idx = ctx.balanced_indices(_labels_of(ds), ctx.s["grad_batch"], 41)
    x, y = ctx.tensors(ds, idx)
    model = ctx.new_model()
    model.train()
    loss = ctx.loss_fn()(model(x), y.reshape([-1, 1]))
    loss.backward()
    dead, nonfinite, frozen, norms, n_values = [], [], [], [], 0
    stats = {id(t) for t in running_stats(model)}
    for name, p in model.named_parameters():
        if id(p) in stats:
            continue
        if p.stop_gradient:
            frozen.append(name)
            continue
        n_values += int(np.prod(p.shape))
        g = p.grad
        if g is None:
            dead.append(name)
            continue
        g = g.numpy()
        if not np.all(np.isfinite(g)):
            nonfinite.append(name)
        elif not np.any(g):
            dead.append(name)
        else:
            norms.append((float(np.linalg.norm(g.astype(np.float64))), name))
    n = len(dead) + len(nonfinite) + len(norms)
    values = dict(n=n, n_values=n_values, batch=len(idx), n_frozen=len(frozen), num_classes=c,
                  frozen=_examples(frozen, 8) or "none", dead=_examples(dead, 8) or "none",
                  nonfinite=_examples(nonfinite, 8) or "none",
                  frozen_names=frozen, dead_names=dead, nonfinite_names=nonfinite)
    if dead or nonfinite:
        return _result("gradient_flow", FAIL, "grads_bad", n_bad=len(dead) + len(nonfinite), **values)
    if frozen:
        return _result("gradient_flow", WARN, "grads_frozen", **values)
    (gmin, gmin_name), (gmax, gmax_name) = min(norms), max(norms)
    return _result("gradient_flow", PASS, "grads_ok", gmin=gmin, gmin_name=gmin_name, gmax=gmax,
                   gmax_name=gmax_name, **values)


@register_check("batch_independence", "model", requires=MODEL_REQUIRES)
def check_batch_independence(ctx):
    """In eval mode sample i's loss must not depend on input j != i.

    One backward per sample of a small batch; FAIL when max |d loss_i / d x_j| (j != i) is above
    1e-6 of max |d loss_i / d x_i|: with separate per-sample paths the cross terms are exactly
    0 in floating point, so any non-zero value is a real dependence. Eval mode because
    BatchNorm in training mode legitimately mixes the batch through its statistics.
    """
    import paddle

    ds = ctx.eval_view(ctx.bundle.train)
    idx = ctx.balanced_indices(_labels_of(ds), ctx.s["indep_batch"], 51)
    x, y = ctx.tensors(ds, idx)
    b = len(idx)
    model = ctx.new_model()
    model.eval()
    x.stop_gradient = False
    out = model(x)
    loss_fn = ctx.loss_fn()
    cross = np.zeros((b, b))
    for i in range(b):
        li = loss_fn(out[i:i + 1], y[i:i + 1].reshape([-1, 1]))
        g = paddle.grad([li], [x], retain_graph=True, allow_unused=True)[0]
        if g is not None:
            cross[i] = np.abs(g.numpy().reshape(b, -1)).max(axis=1)
    self_grad = float(np.diag(cross).max())
    off = cross.copy()
    np.fill_diagonal(off, 0.0)
    cross_max = float(off.max())
    values = dict(batch=b, cross=cross_max, self_grad=self_grad, tol=ctx.s["indep_tol"])
    if self_grad == 0.0 and cross_max == 0.0:
        return _result("batch_independence", FAIL, "indep_no_input", **values)
    ratio = cross_max / self_grad if self_grad > 0 else math.inf
    values["ratio"] = ratio
    if ratio > ctx.s["indep_tol"]:
        pairs = [(i, j) for i in range(b) for j in range(b) if i != j and off[i, j] > ctx.s["indep_tol"] * self_grad]
        return _result("batch_independence", FAIL, "indep_mixed", pairs=_examples([f"{i}<-{j}" for i, j in pairs], 6),
                       n_pairs=len(pairs), **values)
    return _result("batch_independence", PASS, "indep_ok", **values)


# --------------------------------------------------------------------------- training checks

def _fit(ctx, model, x, y, batches, steps, stop_loss=None, eval_every=10, evaluate_fit=True):
    """Adam at ``overfit_lr`` on fixed ``batches`` (index arrays), plain cross-entropy, no
    weight decay; evaluated in eval mode on all of x every ``eval_every`` steps.

    Returns dict(loss0, loss, acc, steps, nonfinite_step, nonfinite_loss).
    """
    import paddle
    import paddle.nn.functional as F

    def evaluate():
        model.eval()
        with paddle.no_grad():
            out = model(x)
            loss = float(F.cross_entropy(out, y.reshape([-1, 1])))
            acc = float((out.argmax(axis=1) == y).astype("float32").mean())
        model.train()
        return loss, acc

    loss0, _ = evaluate() if evaluate_fit else (math.nan, math.nan)
    params = [p for p in model.parameters() if not p.stop_gradient]
    opt = paddle.optimizer.Adam(learning_rate=ctx.s["overfit_lr"], parameters=params)
    model.train()
    loss, acc, step = loss0, 0.0, 0
    for step in range(1, steps + 1):
        sel = paddle.to_tensor(batches[(step - 1) % len(batches)])
        train_loss = F.cross_entropy(model(paddle.gather(x, sel)), paddle.gather(y, sel).reshape([-1, 1]))
        value = float(train_loss)
        if not math.isfinite(value):
            return dict(loss0=loss0, loss=value, acc=0.0, steps=step, nonfinite_step=step, nonfinite_loss=value)
        train_loss.backward()
        opt.step()
        opt.clear_grad()
        if evaluate_fit and (step % eval_every == 0 or step == steps):
            loss, acc = evaluate()
            if stop_loss is not None and loss < stop_loss and acc == 1.0:
                break
    model.eval()
    return dict(loss0=loss0, loss=loss, acc=acc, steps=step, nonfinite_step=None, nonfinite_loss=None)


def _overfit_run(ctx):
    """The tiny-subset training shared by overfit_tiny and input_baseline (cached)."""
    if "overfit" in ctx.cache:
        return ctx.cache["overfit"]
    bs, nb = ctx.s["overfit_batch_size"], ctx.s["overfit_batches"]
    ds = ctx.eval_view(ctx.bundle.train)
    idx = ctx.balanced_indices(_labels_of(ds), bs * nb, 61)
    x, y = ctx.tensors(ds, idx)
    batches = [np.arange(s, min(s + bs, len(idx))) for s in range(0, len(idx), bs)]
    model = ctx.new_model()
    run = _fit(ctx, model, x, y, batches, ctx.s["overfit_steps"], ctx.s["overfit_loss"], ctx.s["overfit_eval_every"])
    run.update(n=len(idx), batches=len(batches), bs=bs, dropout=_dropout_note(model), lr=ctx.s["overfit_lr"],
               x=x, y=y, batch_idx=batches)
    ctx.cache["overfit"] = run
    return run


def _public(run):
    return {k: v for k, v in run.items() if k not in ("x", "y", "batch_idx", "nonfinite_loss", "nonfinite_step")}


@register_check("overfit_tiny", "training", requires=MODEL_REQUIRES)
def check_overfit_tiny(ctx):
    """Memorize 2 batches of 16 training samples (eval transform: no augmentation; weight decay
    and label smoothing off, since both keep the loss away from 0; dropout as configured).

    Adam at lr 1e-3, constant, whatever the config's optimizer: this separates "the pipeline
    is broken" from "the learning rate is off" (the LR range test answers that). Every shipped
    digits model gets there in 20-70 steps; 300 is the budget. PASS: eval-mode loss < 0.1 and
    100% accuracy. WARN: 100% accuracy and the loss below a quarter of its initial value but
    not below 0.1 (learning, slowly). FAIL otherwise: accuracy under 100%, or a loss stuck high
    even though the ranking is right (a doubled softmax stalls at ln(e + C - 1) - 1, 1.46 for
    10 classes, while reaching 100% accuracy).
    """
    run = _overfit_run(ctx)
    values = _public(run)
    values["target"] = ctx.s["overfit_loss"]
    if run["nonfinite_step"] is not None:
        values.update(step=run["nonfinite_step"], loss=str(run["nonfinite_loss"]))
        return _result("overfit_tiny", FAIL, "overfit_nonfinite", **values)
    if run["acc"] < 1.0 or not run["loss"] < ctx.s["overfit_warn_fraction"] * run["loss0"]:
        return _result("overfit_tiny", FAIL, "overfit_fail", **values)
    if run["loss"] >= ctx.s["overfit_loss"]:
        return _result("overfit_tiny", WARN, "overfit_slow", **values)
    return _result("overfit_tiny", PASS, "overfit_ok", **values)


@register_check("input_baseline", "training", requires=MODEL_REQUIRES)
def check_input_baseline(ctx):
    """Train the same fresh model for the same number of steps on zeroed inputs and compare
    final (eval-mode) training losses.

    A zero-input model predicts the same for every sample, so its loss cannot go below the
    label entropy (~ln C); a working pipeline takes the real-input loss near 0. FAIL when the
    real-input loss is above half the zero-input one: the model gets nothing from its inputs.
    With randomly permuted labels this check still PASSes (a few dozen samples can be
    memorized whatever their labels); ``heldout_signal`` is the check for that.
    """
    run = _overfit_run(ctx)
    if run["nonfinite_step"] is not None:
        return _result("input_baseline", SKIP, "skipped", dep="overfit_tiny")
    x0 = run["x"] * 0.0
    model = ctx.new_model()
    zero = _fit(ctx, model, x0, run["y"], run["batch_idx"], run["steps"], None, ctx.s["overfit_eval_every"])
    entropy = _entropy(run["y"].numpy())
    ratio = run["loss"] / zero["loss"] if zero["loss"] > 0 else math.inf
    values = dict(steps=run["steps"], n=run["n"], real=run["loss"], zero=zero["loss"], entropy=entropy,
                  ratio=ratio, limit=ctx.s["baseline_ratio"])
    if not ratio <= ctx.s["baseline_ratio"]:
        return _result("input_baseline", FAIL, "baseline_fail", **values)
    return _result("input_baseline", PASS, "baseline_ok", **values)


@register_check("heldout_signal", "training", requires=MODEL_REQUIRES)
def check_heldout_signal(ctx):
    """Does what is learnt from the inputs carry over to new images? Train 50 steps of batch
    32 on a class-balanced subset of 500 training samples (20 per class, at most 2000; eval
    transform, Adam 1e-3), then compare the held-out split with the best input-independent
    predictors: for accuracy, the constant guess of the held-out split's most frequent class
    (an upper bound for any model ignoring the image); for the loss, the training subset's
    class frequencies.

    PASS when either beats its baseline by 3 standard errors (and accuracy by at least 2
    points, the loss by at least 2%): 3 standard errors keep false alarms near 0.1%. The loss
    criterion is the more sensitive one early in training (many classes, a slow model); the
    shipped digits models reach 63-98% accuracy where ~15% is needed. FAIL otherwise: this
    catches labels shuffled or misaligned with their images, which the two tiny-subset checks
    cannot see (a few dozen samples are memorized whatever their labels).
    """
    import paddle
    import paddle.nn.functional as F

    b = ctx.bundle
    c = ctx.num_classes
    train = ctx.eval_view(b.train)
    labels = _labels_of(train)
    n_train = int(min(max(ctx.s["heldout_train"], 20 * c), 2000, len(train)))
    tr_idx = ctx.balanced_indices(labels, n_train, 71)
    if b.val is not None and len(b.val):
        held, held_idx_all = ctx.eval_view(b.val), np.arange(len(b.val))
    else:
        held = train
        held_idx_all = np.setdiff1d(np.arange(len(train)), tr_idx)
    if len(held_idx_all) == 0:
        return _result("heldout_signal", SKIP, "heldout_no_val")
    rng = np.random.RandomState(ctx.seed + 72)
    held_idx = held_idx_all if len(held_idx_all) <= ctx.s["heldout_val"] else np.sort(
        rng.choice(held_idx_all, ctx.s["heldout_val"], replace=False))
    x, y = ctx.tensors(train, tr_idx)
    bs = 32
    order = np.concatenate([rng.permutation(len(tr_idx)) for _ in range(
        math.ceil(ctx.s["heldout_steps"] * bs / len(tr_idx)) + 1)])
    batches = [order[s * bs:(s + 1) * bs] for s in range(ctx.s["heldout_steps"])]
    model = ctx.new_model()
    _fit(ctx, model, x, y, batches, ctx.s["heldout_steps"], evaluate_fit=False)
    hx, hy = ctx.tensors(held, held_idx)
    model.eval()
    losses, hits = [], []
    with paddle.no_grad():
        for s in range(0, len(held_idx), 256):
            out = model(hx[s:s + 256])
            yy = hy[s:s + 256]
            losses.append(F.cross_entropy(out, yy.reshape([-1, 1]), reduction="none").numpy().reshape(-1))
            hits.append((out.argmax(axis=1) == yy).numpy())
    losses, hits = np.concatenate(losses).astype(np.float64), np.concatenate(hits)
    hy = hy.numpy()
    n = len(held_idx)
    acc = float(hits.mean())
    counts = np.bincount(hy, minlength=c)
    base = float(counts.max() / counts.sum())
    sig = ctx.s["heldout_sigmas"]
    need = base + max(sig * math.sqrt(base * (1 - base) / n), ctx.s["heldout_min_margin"])
    prior = (np.bincount(y.numpy(), minlength=c) + 1.0) / (len(tr_idx) + c)   # add-one: no log(0)
    base_losses = -np.log(prior[hy])
    diff = losses - base_losses
    loss, base_loss = float(losses.mean()), float(base_losses.mean())
    loss_need = base_loss - max(sig * float(diff.std()) / math.sqrt(n), ctx.s["heldout_min_margin"] * base_loss)
    values = dict(steps=ctx.s["heldout_steps"], n_train=len(tr_idx), n_val=n, acc=acc, base=base, need=need,
                  loss=loss, base_loss=base_loss, loss_need=loss_need)
    if acc >= need or loss <= loss_need:
        return _result("heldout_signal", PASS, "heldout_ok", **values)
    return _result("heldout_signal", FAIL, "heldout_fail", **values)


# --------------------------------------------------------------------------- runner

def run_checks(cfg, only=None, bundle=None, model_fn=None, settings=None, lang="en", on_result=None):
    """Run the checks of ``only`` (names or groups; None = all) and return their results in order.

    Args:
        cfg: validated config (``utils.config.load_config``).
        only: iterable of check or group names (``data``, ``model``, ``training``).
        bundle: data to check instead of building it from ``cfg`` (tests inject faults this way).
        model_fn: zero-argument callable returning a fresh model instead of ``Arch``'s.
        settings: overrides of :data:`DEFAULTS`.
        lang: language of the rendered evidence and remedies.
        on_result: called with each :class:`CheckResult` as soon as it is known.

    Returns:
        list of :class:`CheckResult`. A check whose ``requires`` FAILed is SKIPped; a check that
        raises anything but a :class:`UserError` becomes a FAIL naming the exception.

    Raises:
        UserError: unknown check names, or a config/data problem met while building.
    """
    import paddle  # noqa: F401  (after the tool configured the threads)

    from utils.build import select_device

    names = select_checks(only)
    select_device(cfg["Global"]["device"])
    # BatchNorm in training mode warns "we now always track global mean and variance" once.
    warnings.filterwarnings("ignore", message="When training, we now always track global mean")
    ctx = CheckContext(cfg, bundle, model_fn, settings)
    results = []
    for name in names:
        fn, _, requires = CHECKS[name]
        t0 = time.time()
        failed = [d for d in requires if d in ctx.results and ctx.results[d].status == FAIL]
        if failed:
            res = _result(name, SKIP, "skipped", dep=failed[0])
        else:
            try:
                res = fn(ctx)
            except UserError:
                raise
            except Exception as e:  # a crash is a finding too, but keep the traceback reachable
                import traceback

                tb = traceback.extract_tb(e.__traceback__)
                where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
                first = (str(e).strip().splitlines() or [""])[0][:300]
                res = _result(name, FAIL, "check_error", error=f"{type(e).__name__}: {first}{where}", check=name)
                res.values["traceback"] = traceback.format_exc()
        res.seconds = round(time.time() - t0, 3)
        res.render(lang)
        ctx.results[name] = res
        results.append(res)
        if on_result is not None:
            on_result(res)
    return results


def format_result(res, lang="en", width=110):
    """'PASS  name  evidence' plus, for WARN/FAIL/SKIP, an indented remedy paragraph."""
    name_w = max(len(n) for n in CHECKS)
    lines = [f"{res.status:<4}  {res.name:<{name_w}}  {res.evidence}"]
    if res.remedy and res.status != PASS:
        label = MESSAGES.get(lang, {}).get("_remedy", MESSAGES["en"]["_remedy"])
        indent = " " * 6
        lines += textwrap.wrap(f"{label}: {res.remedy}", width=width, initial_indent=indent,
                               subsequent_indent=indent + "  ")
    return "\n".join(lines)


def summarize(results, seconds=None, lang="en"):
    """The closing line: counts per status, the total time and the verdict."""
    table = MESSAGES.get(lang, {})
    get = lambda k: table.get(k, MESSAGES["en"][k])  # noqa: E731
    counts = {s: sum(r.status == s for r in results) for s in (PASS, WARN, FAIL, SKIP)}
    total = seconds if seconds is not None else sum(r.seconds for r in results)
    line = get("_summary").format(n_pass=counts[PASS], n_warn=counts[WARN], n_fail=counts[FAIL],
                                  n_skip=counts[SKIP], seconds=total)
    return line + "\n" + get("_verdict_fail" if counts[FAIL] else "_verdict_ok")


def exit_status(results):
    """0 when no check FAILed, 1 otherwise (2, a user error, is the tool's)."""
    return 1 if any(r.status == FAIL for r in results) else 0
