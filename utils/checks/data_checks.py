"""The data audit: every sample up to ``audit_samples`` per split, after the transform
pipeline, checked for non-finite values, labels, shapes, class balance, train/val copies and
normalization. Needs no model, so it runs first; a FAIL of data_finite, labels_in_range or
input_shapes SKIPs the model and training checks."""
from __future__ import annotations

import hashlib

import numpy as np

from utils.checks.context import CheckContext, format_examples, labels_of
from utils.checks.registry import register_check
from utils.checks.result import FAIL, PASS, SKIP, WARN, CheckResult, make_result


def _splits(bundle):
    """[(split name, dataset)] of the bundle's non-empty splits, train first."""
    out = []
    for name in ("train", "val", "test"):
        ds = getattr(bundle, name, None)
        if ds is not None and len(ds):
            out.append((name, ds))
    return out


def _vec(v):
    return "[" + ", ".join(f"{x:.2f}" for x in v) + "]"


def _shape_str(shape, dtype):
    return "x".join(str(int(s)) for s in shape) + f" {dtype}"


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
def check_data_finite(ctx: CheckContext) -> CheckResult:
    """NaN/Inf in the inputs after the transform pipeline. Any: FAIL (one NaN poisons the weights)."""
    rows, _ = _audit(ctx)
    if not rows:
        return make_result("data_finite", FAIL, "no_samples")
    bad = [r for r in rows if r[4] or r[5]]
    values = dict(n=len(rows), splits=_split_counts(rows))
    if not bad:
        return make_result("data_finite", PASS, "finite_ok", **values)
    return make_result("data_finite", FAIL, "finite_bad", n_bad=len(bad), n_nan=sum(r[4] for r in bad),
                   n_inf=sum(r[5] for r in bad), examples=format_examples(f"{r[0]} {r[1]}" for r in bad),
                   bad_samples=[[r[0], r[1]] for r in bad[:100]], **values)


@register_check("labels_in_range", "data")
def check_labels_in_range(ctx: CheckContext) -> CheckResult:
    """Every label of every split (the label arrays, and those the audited samples return) in [0, C)."""
    c = ctx.num_classes
    bad, n, bad_values = [], 0, set()
    for split, ds in _splits(ctx.bundle):
        labels = labels_of(ds)
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
        return make_result("labels_in_range", PASS, "labels_ok", n=n, num_classes=c, splits=splits)
    return make_result("labels_in_range", FAIL, "labels_bad", n=n, n_bad=len(bad), num_classes=c, last=c - 1,
                   splits=splits, bad_values=format_examples(sorted(bad_values), 8),
                   examples=format_examples(f"{s} {i}" for s, i in bad))


@register_check("input_shapes", "data")
def check_input_shapes(ctx: CheckContext) -> CheckResult:
    """One input shape and dtype float32 across the audited samples of all splits; else FAIL."""
    rows, _ = _audit(ctx)
    if not rows:
        return make_result("input_shapes", FAIL, "no_samples")
    kinds = {}
    for r in rows:
        kinds.setdefault((r[2], r[3]), []).append(r)
    if len(kinds) == 1 and rows[0][3] == "float32" and len(rows[0][2]) == 3:
        return make_result("input_shapes", PASS, "shapes_ok", n=len(rows), shape="x".join(map(str, rows[0][2])),
                       dtype=rows[0][3])
    common = max(kinds, key=lambda k: len(kinds[k]))
    odd = [r for k, rs in kinds.items() if k != common for r in rs]
    if not odd:  # one kind, but not float32 CHW
        odd = rows
    shapes = "; ".join(f"{_shape_str(*k)} ({len(rs)})" for k, rs in sorted(kinds.items(), key=lambda kv: -len(kv[1])))
    return make_result("input_shapes", FAIL, "shapes_bad", n=len(rows), k=len(kinds), shapes=shapes,
                   examples=format_examples(f"{r[0]} {r[1]}: {_shape_str(r[2], r[3])}" for r in odd))


@register_check("class_balance", "data", requires=("labels_in_range",))
def check_class_balance(ctx: CheckContext) -> CheckResult:
    """Class histogram of the training split.

    WARN above 3:1 (max/min count): from there the small classes get under a quarter of the
    big ones' gradient signal and plain accuracy mostly reflects the big classes; below it a
    plain cross-entropy copes. A class with no training sample: FAIL (it can never be predicted).
    """
    c = ctx.num_classes
    labels = labels_of(ctx.bundle.train)
    labels = labels[(labels >= 0) & (labels < c)]
    counts = np.bincount(labels, minlength=c)
    names = list(getattr(ctx.bundle, "class_names", None) or [str(i) for i in range(c)])
    hist = ""
    if c <= 20:
        hist = "; counts " + " ".join(f"{names[k]}:{int(counts[k])}" for k in range(c))
    values = dict(num_classes=c, n=int(len(labels)), counts=[int(v) for v in counts], hist=hist)
    empty = [names[k] for k in range(c) if counts[k] == 0]
    if empty:
        return make_result("class_balance", FAIL, "balance_empty", k=len(empty), empty=format_examples(empty, 10), **values)
    kmin, kmax = int(np.argmin(counts)), int(np.argmax(counts))
    ratio = float(counts[kmax] / counts[kmin])
    values.update(cmin=int(counts[kmin]), cmax=int(counts[kmax]), name_min=names[kmin], name_max=names[kmax],
                  ratio=ratio, limit=ctx.s["imbalance_warn"])
    if ratio > ctx.s["imbalance_warn"]:
        return make_result("class_balance", WARN, "balance_warn", **values)
    return make_result("class_balance", PASS, "balance_ok", **values)


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
def check_train_val_duplicates(ctx: CheckContext) -> CheckResult:
    """Exact copies of training images in val/test (blake2b of the raw uint8 pixels and shape).

    Any copy: WARN (the held-out score is optimistic by that fraction). Above 1% of a split:
    FAIL, since that is about the accuracy difference people act on. Near-duplicates (a
    re-encoded JPEG) are not found: only exact pixel copies. At most 50,000 images per split
    are hashed (5,000 when they are decoded from files at every access); a sample beyond that.
    """
    b = ctx.bundle
    if not hasattr(b.train, "raw"):
        return make_result("train_val_duplicates", SKIP, "dups_no_raw")
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
                         f"{format_examples([i for i, _ in dup])} = train {format_examples([j for _, j in dup])})")
    if not checked:
        return make_result("train_val_duplicates", PASS, "dups_ok", splits="(no val/test split)", n_train=n_train)
    if not found:
        return make_result("train_val_duplicates", PASS, "dups_ok", splits=" and ".join(checked), n_train=n_train)
    status = FAIL if worst > ctx.s["duplicate_fail"] else WARN
    return make_result("train_val_duplicates", status, "dups_found", desc="; ".join(descs), n_conflict=conflicts,
                   duplicates=found, n_train=n_train, fraction=worst)


@register_check("input_normalization", "data", requires=("data_finite", "input_shapes"))
def check_input_normalization(ctx: CheckContext) -> CheckResult:
    """Per-channel mean/std of the raw training pixels and of the inputs the network gets.

    WARN when a channel's input mean is beyond +-0.5 or its std outside [0.5, 2]: 0-1 pixels
    (std ~0.25-0.4) and 0-255 pixels (std ~60) both land outside, a Normalize with roughly
    right statistics lands well inside.
    """
    from utils.data import MEAN_STD_MAX_SAMPLES, compute_mean_std  # imports paddle: deferred until the thread count is set

    _, sums = _audit(ctx)
    if not sums:
        return make_result("input_normalization", FAIL, "no_samples")
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
        return make_result("input_normalization", PASS, "norm_ok", **values)
    pipeline = getattr(ctx.bundle, "train_transform", None) or getattr(ctx.bundle.train, "transform", None)
    used_mean, used_std = getattr(pipeline, "mean", None), getattr(pipeline, "std", None)
    if used_mean is not None and used_std is not None:   # a Normalize with statistics of other data
        return make_result("input_normalization", WARN, "norm_stats", used_mean=_vec(used_mean),
                       used_std=_vec(used_std), **values)
    return make_result("input_normalization", WARN, "norm_warn", **values)
