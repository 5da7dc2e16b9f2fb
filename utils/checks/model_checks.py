"""The model checks on a fresh initialization: loss at init against ln(C), gradient flow to
every trainable parameter, and independence of the samples of a batch."""
from __future__ import annotations

import math

import numpy as np

from utils.checks.context import CheckContext, format_examples, labels_of
from utils.checks.registry import MODEL_REQUIRES, register_check
from utils.checks.result import FAIL, PASS, WARN, CheckResult, make_result


def _first_step_mode(model):
    """Training mode with dropout-like layers in eval mode: normalization on batch statistics,
    as the first training step sees it, and a deterministic output."""
    model.train()
    for layer in model.sublayers():
        kind = type(layer).__name__
        if "Dropout" in kind or "DropPath" in kind:
            layer.eval()


@register_check("loss_at_init", "model", requires=MODEL_REQUIRES)
def check_loss_at_init(ctx: CheckContext) -> CheckResult:
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
    import paddle  # deferred until the thread count is set

    c = ctx.num_classes
    ds = ctx.eval_view(ctx.bundle.train)
    idx = ctx.balanced_indices(labels_of(ds), ctx.s["init_samples"], 31)
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
        return make_result("loss_at_init", FAIL, "init_nonfinite", n_bad=n_bad, **values)
    ratio = loss / lnc
    values.update(ratio=ratio, logit_std=float(out.std(axis=1).mean()))
    dev = float(np.abs(out.sum(axis=1) - 1.0).max())
    if c > 1 and out.min() >= 0 and dev < 1e-3:
        floor = math.log(math.e + c - 1) - 1.0   # -log softmax(one-hot probabilities)[label]
        return make_result("loss_at_init", FAIL, "init_probs", dev=dev, floor=floor, **values)
    lo, hi = ctx.s["init_ratio_range"]
    if ratio > ctx.s["init_ratio_fail"]:
        return make_result("loss_at_init", FAIL, "init_high", hi=ctx.s["init_ratio_fail"], **values)
    if ratio > hi:
        return make_result("loss_at_init", WARN, "init_warm", hi=hi, **values)
    if ratio < lo:
        return make_result("loss_at_init", FAIL, "init_low", lo=lo, **values)
    return make_result("loss_at_init", PASS, "init_ok", **values)


@register_check("gradient_flow", "model", requires=MODEL_REQUIRES)
def check_gradient_flow(ctx: CheckContext) -> CheckResult:
    """One training-mode forward/backward with the config's loss: every trainable parameter
    needs a finite gradient that is not all zero. Missing/zero/non-finite: FAIL (listed by
    name); frozen (stop_gradient) parameters: WARN, since freezing is sometimes intended."""
    from models.init import running_stats  # imports paddle: deferred until the thread count is set
    c = ctx.num_classes
    ds = ctx.eval_view(ctx.bundle.train)
    idx = ctx.balanced_indices(labels_of(ds), ctx.s["grad_batch"], 41)
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
                  frozen=format_examples(frozen, 8) or "none", dead=format_examples(dead, 8) or "none",
                  nonfinite=format_examples(nonfinite, 8) or "none",
                  frozen_names=frozen, dead_names=dead, nonfinite_names=nonfinite)
    if dead or nonfinite:
        return make_result("gradient_flow", FAIL, "grads_bad", n_bad=len(dead) + len(nonfinite), **values)
    if frozen:
        return make_result("gradient_flow", WARN, "grads_frozen", **values)
    (gmin, gmin_name), (gmax, gmax_name) = min(norms), max(norms)
    return make_result("gradient_flow", PASS, "grads_ok", gmin=gmin, gmin_name=gmin_name, gmax=gmax,
                   gmax_name=gmax_name, **values)


@register_check("batch_independence", "model", requires=MODEL_REQUIRES)
def check_batch_independence(ctx: CheckContext) -> CheckResult:
    """In eval mode sample i's loss must not depend on input j != i.

    One backward per sample of a small batch; FAIL when max |d loss_i / d x_j| (j != i) is above
    1e-6 of max |d loss_i / d x_i|: with separate per-sample paths the cross terms are exactly
    0 in floating point, so any non-zero value is a real dependence. Eval mode because
    BatchNorm in training mode legitimately mixes the batch through its statistics.
    """
    import paddle  # deferred until the thread count is set

    ds = ctx.eval_view(ctx.bundle.train)
    idx = ctx.balanced_indices(labels_of(ds), ctx.s["indep_batch"], 51)
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
        return make_result("batch_independence", FAIL, "indep_no_input", **values)
    ratio = cross_max / self_grad if self_grad > 0 else math.inf
    values["ratio"] = ratio
    if ratio > ctx.s["indep_tol"]:
        pairs = [(i, j) for i in range(b) for j in range(b) if i != j and off[i, j] > ctx.s["indep_tol"] * self_grad]
        return make_result("batch_independence", FAIL, "indep_mixed", pairs=format_examples([f"{i}<-{j}" for i, j in pairs], 6),
                       n_pairs=len(pairs), **values)
    return make_result("batch_independence", PASS, "indep_ok", **values)
