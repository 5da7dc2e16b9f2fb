"""The rules over what only the live doctor measures: softmax confidence, gradient norms and clipping,
the label mix of training batches, per-layer gradient and activation statistics.

Pure functions like those of :mod:`utils.doctor.rules`: plain lists and dicts in, findings out.
Offline, their input comes from the statistics the live doctor stored in ``diagnosis.json``.
"""
from __future__ import annotations

import math

import numpy as np

from utils.doctor.findings import Finding
from utils.doctor.series import Points, RunContext
from utils.doctor.thresholds import (
    ACT_EXPLODE,
    ACT_VANISH,
    CLIP_FRACTION,
    CLIP_MIN_SAMPLES,
    DEAD_RELU_FRACTION,
    GRAD_EXPLODE,
    GRAD_VANISH_RATIO,
    LATE_FRACTION,
    LATE_MIN_STEP,
    PURITY_MARGIN,
    PURITY_MIN_BATCH,
    PURITY_MIN_SAMPLES,
    UNIFORM_MARGIN,
)


def rule_confidence(confidence: Points, ctx: RunContext, last_step: int | None = None,
                    finished: bool = True) -> list[Finding]:
    """uniform_confidence: mean top softmax probability near 1/C over the last LATE_FRACTION of the run.

    The run's end is its last step once it is over (``finished``), the planned end while it runs.
    """
    pts = [(s, c) for s, c in confidence if math.isfinite(c)]
    if not pts:
        return []
    end = max(last_step or 0, pts[-1][0])
    if not finished:
        end = max(end, ctx.total_steps or 0)
    start = max(end * (1 - LATE_FRACTION), LATE_MIN_STEP)
    late = [(s, c) for s, c in pts if s >= start]
    if not late:
        return []
    uniform = 1.0 / max(int(ctx.num_classes), 1)
    conf = float(np.mean([c for _, c in late]))
    if conf < uniform + UNIFORM_MARGIN * (1 - uniform):
        s = late[-1][0]
        return [Finding("uniform_confidence", "warn", {"from_step": late[0][0], "confidence": conf,
                                                        "uniform": uniform, "num_classes": int(ctx.num_classes)},
                        s, ctx.epoch_of(s))]
    return []


def rule_gradients(grad_norm: Points, clip: dict, ctx: RunContext) -> list[Finding]:
    """exploding_gradients (global norm > GRAD_EXPLODE or non-finite) and clipped_often (> CLIP_FRACTION)."""
    out = []
    pts = list(grad_norm)
    finite = [g for _, g in pts if math.isfinite(g)]
    median = float(np.median(finite)) if finite else float("nan")
    for s, g in pts:
        if not math.isfinite(g) or g > GRAD_EXPLODE:
            out.append(Finding("exploding_gradients", "warn", {"norm": g, "median": median}, s, ctx.epoch_of(s)))
            break
    n, k = int(clip.get("samples", 0)), int(clip.get("clipped", 0))
    if ctx.grad_clip and n >= CLIP_MIN_SAMPLES and k / n > CLIP_FRACTION:
        s = pts[-1][0] if pts else None
        out.append(Finding("clipped_often", "warn", {"fraction": k / n, "samples": n, "clip": ctx.grad_clip,
                                                      "clip_value": ctx.clip_value, "median_norm": median},
                           s, ctx.epoch_of(s)))
    return out


def rule_batch_purity(batch_purity: list[tuple[int, float, int]], ctx: RunContext) -> list[Finding]:
    """unshuffled_batches: sampled batches hold mostly one class (class-sorted data, no shuffling)."""
    pts = [(s, p, b) for s, p, b in batch_purity if b >= PURITY_MIN_BATCH]
    if len(pts) < PURITY_MIN_SAMPLES:
        return []
    purity = float(np.mean([p for _, p, _ in pts]))
    expected = ctx.chance
    if purity > expected + PURITY_MARGIN * (1 - expected):
        s = pts[-1][0]
        return [Finding("unshuffled_batches", "warn", {"purity": purity, "samples": len(pts), "expected": expected,
                                                        "batch": float(np.mean([b for _, _, b in pts]))},
                        s, ctx.epoch_of(s))]
    return []


def _names(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit})" if len(items) > limit else "")


def rule_layer_gradients(grads: list[dict], step: int | None, ctx: RunContext) -> list[Finding]:
    """vanishing_gradients: weight tensors whose gradient RMS < GRAD_VANISH_RATIO x the largest gradient RMS."""
    finite = [g for g in grads if g.get("rms") is not None and math.isfinite(g["rms"])]
    if not finite:
        return []
    top = max(finite, key=lambda g: g["rms"])
    if top["rms"] <= 0:
        return []
    small = [g for g in finite if g.get("ndim", 2) >= 2 and g["rms"] < GRAD_VANISH_RATIO * top["rms"]]
    if not small:
        return []
    return [Finding("vanishing_gradients", "warn", {
        "count": len(small), "layers": _names([f"{g['name']} {g['rms']:.2g}" for g in small]),
        "ratio": GRAD_VANISH_RATIO, "max_param": top["name"], "max_rms": top["rms"]}, step, ctx.epoch_of(step))]


def rule_activations(layers: list[dict], input_rms: float | None, step: int | None, ctx: RunContext) -> list[Finding]:
    """vanishing/exploding_activations (layer output RMS vs the input's) and dead_relu (> DEAD_RELU_FRACTION)."""
    out = []
    ref = input_rms if input_rms and math.isfinite(input_rms) and input_rms > 0 else 1.0
    stats = [l for l in layers if l.get("rms") is not None and math.isfinite(l["rms"])]
    low = [l for l in stats if l["rms"] < ACT_VANISH * ref]
    if low:
        deep = sorted(low, key=lambda l: l["rms"])
        out.append(Finding("vanishing_activations", "warn", {
            "first": low[0]["name"], "rms": low[0]["rms"], "count": len(low), "threshold": ACT_VANISH,
            "input_rms": ref, "layers": _names([f"{l['name']} {l['rms']:.2g}" for l in deep])},
            step, ctx.epoch_of(step)))
    high = [l for l in stats if l["rms"] > ACT_EXPLODE * ref]
    if high:
        big = sorted(high, key=lambda l: -l["rms"])
        out.append(Finding("exploding_activations", "warn", {
            "first": high[0]["name"], "rms": high[0]["rms"], "count": len(high), "threshold": ACT_EXPLODE,
            "input_rms": ref, "layers": _names([f"{l['name']} {l['rms']:.3g}" for l in big])},
            step, ctx.epoch_of(step)))
    dead = [l for l in layers if l.get("dead") is not None and l["dead"] > DEAD_RELU_FRACTION]
    if dead:
        out.append(Finding("dead_relu", "warn", {
            "count": len(dead), "threshold": DEAD_RELU_FRACTION,
            "layers": _names([f"{l['name']} {l['dead']:.0%}" for l in sorted(dead, key=lambda l: -l['dead'])])},
            step, ctx.epoch_of(step)))
    return out
