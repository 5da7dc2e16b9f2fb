"""The rules over the loss curves, and :func:`diagnose`, which runs every rule.

Each rule is a pure function over plain series (lists of ``(step, value)`` pairs, the evaluation
history) and a :class:`~utils.doctor.series.RunContext`, and returns a list of findings: no Paddle,
so each is tested on scripted sequences. The rules over the statistics only the live doctor
measures (gradients, activations, confidence, batch labels) are in :mod:`utils.doctor.probe_rules`.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from utils.doctor.findings import Finding, sort_findings
from utils.doctor.probe_rules import rule_activations, rule_batch_purity, rule_confidence, rule_gradients, rule_layer_gradients
from utils.doctor.series import Points, RunContext, RunSeries, attach_train_means, line_change, smooth
from utils.doctor.thresholds import (
    ACC_BELOW_SIGMAS,
    ACC_CHANCE_MIN_MARGIN,
    ACC_CHANCE_SIGMAS,
    ACC_EVALS,
    DIVERGE_FACTOR,
    DIVERGE_MIN_RISE,
    DROPOUT_HIGH,
    HIGH_LOSS_FRACTION,
    OSC_MIN_NOISE,
    OSC_MIN_STEPS,
    OSC_RATIO,
    OSC_WINDOW_FRACTION,
    PATTERN_MIN_EVALS,
    PATTERN_WINDOW,
    PLATEAU_EVALS,
    PLATEAU_MIN_DELTA,
    POOR_LOSS_FRACTION,
    REGRESSION_HIGH_LOSS_FRACTION,
    TARGET_RMS_MAX,
    TRAIN_ABOVE_VAL,
    TREND_FLAT,
    TREND_MIN_ABS,
    VAL_NEAR_BEST,
    VAL_RISE,
    WELL_ABOVE_CHANCE,
)

# Every rule diagnose() runs, by name (it looks each up here at call time, so a replaced one runs).
__all__ = ["diagnose", "healthy_end", "resolve_lr_conflicts", "rule_accuracy", "rule_activations", "rule_batch_purity",
           "rule_confidence", "rule_divergence", "rule_gradients", "rule_layer_gradients", "rule_loss_patterns",
           "rule_nonfinite_loss", "rule_nonfinite_source", "rule_oscillation", "rule_plateau", "rule_target_scale"]

# Finding id -> the kind of source locate_nonfinite reports.
NAN_SOURCES = {"nan_input": "input", "nan_weights": "weights", "nan_layer": "layer", "nan_op": "op",
               "nan_loss_fn": "loss"}
# Findings computed from the per-step training loss (kept from diagnosis.json when a run has no VisualDL log).
STEP_RULES = ("nan_loss", "divergence", "oscillation")


def rule_nonfinite_loss(train_loss: Points, ctx: RunContext) -> list[Finding]:
    """nan_loss at the first non-finite training loss."""
    for s, v in train_loss:
        if not math.isfinite(v):
            return [Finding("nan_loss", "error", {"loss": str(v)}, s, ctx.epoch_of(s))]
    return []


def rule_nonfinite_source(nonfinite: dict | None, ctx: RunContext) -> list[Finding]:
    """What the live doctor found when it replayed the non-finite step (see :func:`locate_nonfinite`)."""
    if not nonfinite:
        return []
    kind, s = nonfinite.get("kind"), nonfinite.get("step")
    ev = {k: v for k, v in nonfinite.items() if k not in ("kind", "step")}
    if kind not in NAN_SOURCES.values():
        return []
    fid = next(k for k, v in NAN_SOURCES.items() if v == kind)
    return [Finding(fid, "error", ev, s, ctx.epoch_of(s))]


def _finite_prefix(train_loss: Points) -> Points:
    out = []
    for s, v in train_loss:
        if not math.isfinite(v):
            break
        out.append((s, v))
    return out


def rule_divergence(train_loss: Points, ctx: RunContext) -> list[Finding]:
    """divergence: the smoothed loss > DIVERGE_FACTOR x its best so far and risen by DIVERGE_MIN_RISE x start."""
    pts = _finite_prefix(train_loss)
    if len(pts) < 2:
        return []
    steps = [s for s, _ in pts]
    sm = smooth([v for _, v in pts])
    start = sm[0]
    best, best_step = sm[0], steps[0]
    for s, v in zip(steps, sm):
        if v < best:
            best, best_step = v, s
        if v > DIVERGE_FACTOR * best and v - best > DIVERGE_MIN_RISE * abs(start):
            return [Finding("divergence", "error", {"value": v, "best": best, "best_step": best_step,
                                                     "ratio": v / best if best > 0 else float("inf")},
                            s, ctx.epoch_of(s))]
    return []


def rule_oscillation(train_loss: Points, ctx: RunContext) -> list[Finding]:
    """oscillation: step-to-step noise > OSC_RATIO x the loss level (and > OSC_MIN_NOISE x start) late in the run."""
    pts = _finite_prefix(train_loss)
    n = max(int(len(pts) * OSC_WINDOW_FRACTION), OSC_MIN_STEPS)
    # The window must leave the first OSC_MIN_STEPS steps out: there the loss falls from ln C in big, noisy
    # steps (resnet18 on 5 digits, step 36: noise 0.48 around a median 0.19), which is learning, not overshooting.
    if len(pts) < n + OSC_MIN_STEPS:
        return []
    window = np.array([v for _, v in pts[-n:]], dtype=np.float64)
    noise = float(np.std(np.diff(window)) / math.sqrt(2))
    level = float(np.median(window))
    start = float(np.mean([v for _, v in pts[:5]]))
    if level > 0 and noise > OSC_RATIO * level and noise > OSC_MIN_NOISE * start:
        s = pts[-1][0]
        return [Finding("oscillation", "warn", {"window": len(window), "noise": noise, "level": level,
                                                 "ratio": noise / level}, s, ctx.epoch_of(s))]
    return []


def _finite_evals(evals: list[dict]) -> list[dict]:
    return [e for e in evals if e.get("loss") is not None and math.isfinite(e["loss"])]


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def healthy_end(evals: list[dict], ctx: RunContext) -> bool:
    """The run ends where a good run ends: the metric well above chance (regression: the loss well under
    the baseline) and the last val loss within VAL_NEAR_BEST of its best. A plateau or a small val loss
    rise there is how training converges (and why early stopping ended it), not a problem."""
    ev = _finite_evals(evals)
    if not ev:
        return False
    losses = [e["loss"] for e in ev]
    # near: relatively, or by a move too small to be a trend at all (0.031 -> 0.036 on digits is noise)
    if losses[-1] > min(losses) * (1 + VAL_NEAR_BEST) + TREND_MIN_ABS * ctx.init_loss:
        return False
    if ctx.task == "regression":
        return losses[-1] < REGRESSION_HIGH_LOSS_FRACTION * ctx.init_loss
    acc = ev[-1].get("acc")
    return _finite(acc) and acc > ctx.chance + WELL_ABOVE_CHANCE * (1 - ctx.chance)


def rule_plateau(evals: list[dict], ctx: RunContext) -> list[Finding]:
    """plateau: neither the val loss nor the task's metric (acc, higher is better; regression: mae,
    lower is better) improved for PLATEAU_EVALS evaluations. Info only when the run ends healthy
    (:func:`healthy_end`): a converged run stops improving by definition."""
    ev = _finite_evals(evals)
    if len(ev) <= PLATEAU_EVALS:
        return []
    metric, sign = ("mae", -1.0) if getattr(ctx, "task", "classification") == "regression" else ("acc", 1.0)
    best_loss, best_metric, last_improve = None, None, None
    for i, e in enumerate(ev):
        improved = False
        if best_loss is None or e["loss"] < best_loss * (1 - PLATEAU_MIN_DELTA):
            best_loss, improved = e["loss"], True
        value = e.get(metric)
        if _finite(value) and (best_metric is None or sign * value > sign * best_metric):
            best_metric, improved = value, True
        if improved:
            last_improve = i
    since = len(ev) - 1 - last_improve
    if since >= PLATEAU_EVALS:
        last = ev[-1]
        if best_metric is None:  # no finite metric recorded: the best is the loss's, never NaN
            metric, best_metric = "loss", best_loss
        return [Finding("plateau", "info" if healthy_end(ev, ctx) else "warn",
                        {"evals": since, "best_loss": best_loss, "metric": metric, "best_metric": best_metric,
                         "best_step": ev[last_improve]["step"]}, last["step"], last.get("epoch"))]
    return []


def _chance_band(ctx: RunContext) -> float:
    p = ctx.chance
    margin = ACC_CHANCE_MIN_MARGIN
    if ctx.n_val:
        margin = max(margin, ACC_CHANCE_SIGMAS * math.sqrt(p * (1 - p) / ctx.n_val))
    return p + margin


def rule_accuracy(evals: list[dict], ctx: RunContext) -> list[Finding]:
    """acc_stuck (the same val accuracy, at chance level, ACC_EVALS times) or acc_chance (at chance on average)."""
    # Not within the first epoch: a fresh network often predicts one class for a while.
    ev = [e for e in evals if e.get("acc") is not None and math.isfinite(e["acc"])
          and e["step"] >= (ctx.steps_per_epoch or 0)]
    if len(ev) < ACC_EVALS:
        return []
    last = ev[-ACC_EVALS:]
    accs = [e["acc"] for e in last]
    band = _chance_band(ctx)
    e = last[-1]
    uniform = 1.0 / max(int(ctx.num_classes), 2)
    balanced = ctx.majority_rate is None or ctx.majority_rate <= uniform + ACC_CHANCE_MIN_MARGIN
    margin = ACC_CHANCE_MIN_MARGIN
    if ctx.n_val:
        margin = max(margin, ACC_BELOW_SIGMAS * math.sqrt(uniform * (1 - uniform) / ctx.n_val))
    if balanced and float(np.mean(accs)) < uniform - margin:
        return [Finding("below_chance", "warn", {"acc": float(np.mean(accs)), "evals": len(accs), "chance": uniform,
                                                  "margin": margin, "n_val": ctx.n_val}, e["step"], e.get("epoch"))]
    if max(accs) - min(accs) < 1e-9 and accs[-1] <= band:
        return [Finding("acc_stuck", "warn", {"acc": accs[-1], "evals": len(accs), "majority_rate": ctx.chance},
                        e["step"], e.get("epoch"))]
    if float(np.mean(accs)) <= band:
        return [Finding("acc_chance", "warn", {"acc": float(np.mean(accs)), "evals": len(accs),
                                                "majority_rate": ctx.chance}, e["step"], e.get("epoch"))]
    return []


def _state(absolute: float, relative: float, ctx: RunContext) -> str:
    """falling / flat / rising from a line's change; tiny absolute moves (a loss near zero) are flat."""
    if abs(absolute) < TREND_MIN_ABS * ctx.init_loss:
        return "flat"
    if relative < -TREND_FLAT:
        return "falling"
    if relative > TREND_FLAT:
        return "rising"
    return "flat"


def rule_loss_patterns(evals: list[dict], ctx: RunContext) -> list[Finding]:
    """The train/val loss patterns over the last PATTERN_WINDOW evaluations.

    Train (mean training loss between evaluations) and val loss are each falling, flat or rising
    (line trend beyond +-TREND_FLAT); val also counts as rising when it sits VAL_RISE above an
    earlier best. Then: both falling -> still_learning; train falling, val flat/rising ->
    overfitting; train flat, val falling -> data_problem; both flat -> bottleneck (still high) or
    converged; both rising -> both_rising. Separately: train above val at the end
    (train_above_val) and both poor with strong dropout (dropout_too_strong).
    """
    ev = [e for e in _finite_evals(evals) if e.get("train_loss") is not None and math.isfinite(e["train_loss"])]
    if len(ev) < PATTERN_MIN_EVALS:
        return []
    win = ev[-PATTERN_WINDOW:]
    t = [e["train_loss"] for e in win]
    v = [e["loss"] for e in win]
    (ta, tc), (va, vc) = line_change(t), line_change(v)
    ts, vs = _state(ta, tc, ctx), _state(va, vc, ctx)
    all_v = [e["loss"] for e in ev]
    i_best = int(np.argmin(all_v))
    val_best = all_v[i_best]
    # ... for the last two evaluations: one val loss spike (googlenet on digits, epoch 9: 0.094 -> 0.134 -> 0.089)
    # is noise; memorisation persists, and is then reported one evaluation later
    above = val_best * (1 + VAL_RISE) + TREND_MIN_ABS * ctx.init_loss
    if i_best < len(all_v) - 2 and min(all_v[-2:]) > above:
        vs = "rising"
    last = ev[-1]
    step, epoch = last["step"], last.get("epoch")
    t_last, v_last = t[-1], v[-1]
    common = {"train_change": tc, "val_change": vc, "evals": len(win), "train_last": t_last, "val_last": v_last}
    out = []
    at_best = i_best == len(all_v) - 1 or all_v[-1] <= val_best  # the val loss is at its best now
    # Overfitting is the train loss going on down while the val loss goes up: measured from the val best. A val
    # loss that rose while the train loss did not fall either (googlenet on digits, epochs 4-6: val 0.089 ->
    # 0.134, train 0.106 -> 0.114) is noise of the optimisation, not memorisation.
    t_at_best = ev[i_best]["train_loss"]
    fell_since_best = t_last < t_at_best * (1 - TREND_FLAT)
    if ts == "falling" and vs == "falling":
        out.append(Finding("still_learning", "info", common, step, epoch))
    elif not at_best and (ts != "rising" and vs == "rising" and t_last < v_last and fell_since_best
                          or ts == "falling" and vs == "flat"):
        out.append(Finding("overfitting", "warn" if vs == "rising" and not healthy_end(ev, ctx) else "info",
                           {**common, "val_best": val_best, "val_best_step": ev[i_best]["step"]}, step, epoch))
    elif ts == "flat" and vs == "falling" and abs(tc) <= TREND_FLAT:
        # flat in relative terms too: a train loss near zero that still halves (0.02 -> 0.002: "flat" by
        # TREND_MIN_ABS) while the val loss falls is a run still learning, not a data problem
        out.append(Finding("data_problem", "warn", common, step, epoch))
    elif ts == "flat" and vs == "flat":
        high = REGRESSION_HIGH_LOSS_FRACTION if ctx.task == "regression" else HIGH_LOSS_FRACTION
        if t_last > high * ctx.init_loss:
            out.append(Finding("bottleneck", "warn", {**common, "init_loss": ctx.init_loss}, step, epoch))
        else:
            out.append(Finding("converged", "info", common, step, epoch))
    elif ts == "rising" and vs == "rising":
        out.append(Finding("both_rising", "error", common, step, epoch))

    if t_last > v_last * (1 + TRAIN_ABOVE_VAL):
        explained = ctx.dropout > 0 or ctx.augmentation or ts == "falling"
        out.append(Finding("train_above_val", "info" if explained else "warn",
                           {"train_last": t_last, "val_last": v_last, "ratio": t_last / v_last - 1 if v_last > 0 else 0.0,
                            "dropout": ctx.dropout, "n_val": ctx.n_val}, step, epoch))
    poor = POOR_LOSS_FRACTION * ctx.init_loss
    if ctx.dropout >= DROPOUT_HIGH and t_last > poor and v_last > poor:
        out.append(Finding("dropout_too_strong", "warn", {"dropout": ctx.dropout, "train_last": t_last,
                                                          "val_last": v_last, "init_loss": ctx.init_loss},
                           step, epoch))
    return out


def rule_target_scale(train_loss: Points, ctx: RunContext) -> list[Finding]:
    """targets_not_normalized: a regression run on raw targets whose RMS exceeds TARGET_RMS_MAX."""
    if ctx.task != "regression" or ctx.target_normalized or ctx.target_mean is None or not train_loss:
        return []
    mean, std = float(ctx.target_mean), float(ctx.target_std or 0.0)
    ms = mean * mean + std * std
    if math.sqrt(ms) <= TARGET_RMS_MAX:
        return []
    s, v = train_loss[0]
    return [Finding("targets_not_normalized", "warn", {"target_mean": mean, "target_std": std, "target_ms": ms,
                                                       "loss": v}, s, ctx.epoch_of(s))]


# The learning-rate direction a finding's remedy asks for first: one report never says both.
LR_DOWN = ("nan_loss", "nan_layer", "nan_weights", "divergence", "oscillation", "clipped_often", "exploding_gradients",
           "exploding_activations", "dead_relu", "both_rising", "plateau", "bottleneck")
LR_UP = ("uniform_confidence",)


def resolve_lr_conflicts(findings: list[Finding]) -> list[Finding]:
    """Findings whose remedies pull the learning rate in opposite directions: keep the better supported
    one (more severe; on a tie, lowering: a too-high LR is read directly off the loss and gradients,
    a too-low one only inferred) and mark the others ``set_aside_for`` it, with the reason."""
    down = [f for f in findings if f.id in LR_DOWN]
    up = [f for f in findings if f.id in LR_UP]
    if not down or not up:
        return findings
    rank = {"error": 2, "warn": 1, "info": 0}
    best_down = max(down, key=lambda f: rank[f.severity])
    best_up = max(up, key=lambda f: rank[f.severity])
    keep_up = rank[best_up.severity] > rank[best_down.severity]
    keep, drop = (best_up, down) if keep_up else (best_down, up)
    why = "severity" if rank[keep.severity] > rank[drop[0].severity] else "direct"
    for f in drop:
        f.set_aside_for, f.set_aside_why = keep.id, why
    return findings


def _guarded(failed: dict | None, name: str, fn: Callable[..., list[Finding]], *args: object) -> list[Finding]:
    """``fn(*args)``; with ``failed`` given, an exception is recorded there ("Type: message") and the rule
    is skipped from then on (the doctor must never end a run)."""
    if failed is None:
        return fn(*args)
    if name in failed:
        return []
    try:
        return fn(*args)
    except Exception as e:  # a rule bug: report once (the caller prints failed), skip the rule
        failed[name] = f"{type(e).__name__}: {e}"
        return []


def diagnose(series: RunSeries, ctx: RunContext, failed: dict | None = None) -> list[Finding]:
    """Run every rule on ``series`` (a :class:`RunSeries`); return the findings, most severe first.

    ``failed``: a dict that collects the rules that raised (name -> "Type: message"); those are skipped
    (now and in later calls with the same dict). Without it an exception propagates.
    """
    evals = attach_train_means([dict(e) for e in series.evals], series.train_loss)
    last_step = series.train_loss[-1][0] if series.train_loss else None
    train_loss = series.train_loss
    r = int(getattr(ctx, "restart_step", 0) or 0)
    if r and last_step is not None and last_step > r:
        # Two-stage fine-tuning: unfreezing the body restarts the loss curve (finetune_digits, epoch 3: train
        # +21%, val +282%, then down to 0.97 accuracy). The curve rules judge the second stage on its own,
        # like a fresh run; a non-finite loss anywhere is still found (rule_nonfinite_loss gets it all).
        train_loss = [p for p in train_loss if p[0] > r]
        evals = [e for e in evals if e["step"] > r]
    g = globals()  # looked up at call time, so a replaced rule is the one that runs
    calls = [("rule_nonfinite_loss", series.train_loss, ctx), ("rule_nonfinite_source", series.nonfinite, ctx),
             ("rule_divergence", train_loss, ctx), ("rule_oscillation", train_loss, ctx),
             ("rule_plateau", evals, ctx), ("rule_accuracy", evals, ctx), ("rule_loss_patterns", evals, ctx),
             ("rule_confidence", series.confidence, ctx, last_step, series.finished),
             ("rule_gradients", series.grad_norm, series.clip or {}, ctx),
             ("rule_layer_gradients", series.grads, series.grads_step, ctx),
             ("rule_activations", series.layers, series.input_rms, series.layers_step, ctx),
             ("rule_target_scale", series.train_loss, ctx)]
    found = []
    for name, *args in calls:
        found += _guarded(failed, name, g[name], *args)
    purity = _guarded(failed, "rule_batch_purity", g["rule_batch_purity"], series.batch_purity, ctx)
    if purity:
        # Differential diagnosis: with class-sorted batches the loss jumps at every class change;
        # those jumps are not a learning rate problem, so divergence/oscillation are not reported.
        found = [f for f in found if f.id not in ("divergence", "oscillation")] + purity
    return sort_findings(resolve_lr_conflicts(found))
