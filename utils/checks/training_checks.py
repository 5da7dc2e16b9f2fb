"""The training checks: memorize a tiny subset, beat zeroed inputs on it, and learn something
that carries over to held-out images. Each trains a fresh model for a few hundred steps at most."""
from __future__ import annotations

import math

import numpy as np

from utils.checks.context import CheckContext, labels_of
from utils.checks.registry import MODEL_REQUIRES, register_check
from utils.checks.result import FAIL, PASS, SKIP, WARN, CheckResult, make_result


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


def _fit(ctx, model, x, y, batches, steps, stop_loss=None, eval_every=10, evaluate_fit=True):
    """Adam at ``overfit_lr`` on fixed ``batches`` (index arrays), plain cross-entropy, no
    weight decay; evaluated in eval mode on all of x every ``eval_every`` steps.

    Returns dict(loss0, loss, acc, steps, nonfinite_step, nonfinite_loss).
    """
    import paddle  # deferred until the thread count is set
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
    idx = ctx.balanced_indices(labels_of(ds), bs * nb, 61)
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
def check_overfit_tiny(ctx: CheckContext) -> CheckResult:
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
        return make_result("overfit_tiny", FAIL, "overfit_nonfinite", **values)
    if run["acc"] < 1.0 or not run["loss"] < ctx.s["overfit_warn_fraction"] * run["loss0"]:
        return make_result("overfit_tiny", FAIL, "overfit_fail", **values)
    if run["loss"] >= ctx.s["overfit_loss"]:
        return make_result("overfit_tiny", WARN, "overfit_slow", **values)
    return make_result("overfit_tiny", PASS, "overfit_ok", **values)


@register_check("input_baseline", "training", requires=MODEL_REQUIRES)
def check_input_baseline(ctx: CheckContext) -> CheckResult:
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
        return make_result("input_baseline", SKIP, "skipped", dep="overfit_tiny")
    x0 = run["x"] * 0.0
    model = ctx.new_model()
    zero = _fit(ctx, model, x0, run["y"], run["batch_idx"], run["steps"], None, ctx.s["overfit_eval_every"])
    entropy = _entropy(run["y"].numpy())
    ratio = run["loss"] / zero["loss"] if zero["loss"] > 0 else math.inf
    values = dict(steps=run["steps"], n=run["n"], real=run["loss"], zero=zero["loss"], entropy=entropy,
                  ratio=ratio, limit=ctx.s["baseline_ratio"])
    if not ratio <= ctx.s["baseline_ratio"]:
        return make_result("input_baseline", FAIL, "baseline_fail", **values)
    return make_result("input_baseline", PASS, "baseline_ok", **values)


@register_check("heldout_signal", "training", requires=MODEL_REQUIRES)
def check_heldout_signal(ctx: CheckContext) -> CheckResult:
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
    import paddle  # deferred until the thread count is set
    import paddle.nn.functional as F

    b = ctx.bundle
    c = ctx.num_classes
    train = ctx.eval_view(b.train)
    labels = labels_of(train)
    n_train = int(min(max(ctx.s["heldout_train"], 20 * c), 2000, len(train)))
    tr_idx = ctx.balanced_indices(labels, n_train, 71)
    if b.val is not None and len(b.val):
        held, held_idx_all = ctx.eval_view(b.val), np.arange(len(b.val))
    else:
        held = train
        held_idx_all = np.setdiff1d(np.arange(len(train)), tr_idx)
    if len(held_idx_all) == 0:
        return make_result("heldout_signal", SKIP, "heldout_no_val")
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
        return make_result("heldout_signal", PASS, "heldout_ok", **values)
    return make_result("heldout_signal", FAIL, "heldout_fail", **values)
