"""Parameter and FLOP counts with a per-layer table.

``paddle.flops`` fails under numpy 2 (``int(m.total_params)`` on an array raises TypeError
in paddle 3.3.1), so FLOPs are counted here with forward-post hooks.
"""
from __future__ import annotations

from collections.abc import Sequence

import paddle
import paddle.nn as nn

from models.init import count_params

_NORMS = (nn.layer.norm._BatchNormBase, nn.BatchNorm, nn.LayerNorm, nn.GroupNorm)


def layer_macs(layer: nn.Layer, inputs: Sequence[paddle.Tensor], output: paddle.Tensor) -> int | None:
    """Multiply-accumulates of one layer's forward, or None when it is not counted.

    Conv2D: output elements x (in_channels / groups) x kh x kw. Linear: output elements x
    in_features. Norms: one per output element (at inference they fold into a per-channel
    scale and shift). A layer with a ``count_macs(inputs, output)`` method counts its own
    (the gMLP Spatial Gating Unit's token-mixing matmul). Biases, activations, pooling and
    element-wise ops are not counted: they are a few percent at most in these models.
    """
    if hasattr(layer, "count_macs"):
        return int(layer.count_macs(inputs, output))
    if isinstance(layer, nn.Conv2D):
        kh, kw = layer.weight.shape[2:]
        return int(output.numel()) * int(layer.weight.shape[1]) * int(kh) * int(kw)
    if isinstance(layer, nn.Linear):
        return int(output.numel()) * int(layer.weight.shape[0])
    if isinstance(layer, _NORMS):
        return int(output.numel())
    return None


def model_summary(model: nn.Layer, input_shape: Sequence[int] | None = None) -> dict:
    """Parameters, multiply-accumulates and a per-layer table of ``model``.

    Runs one forward pass of zeros of ``input_shape`` in eval mode without gradients (the
    training mode is restored afterwards) with hooks on every layer.

    Args:
        model: an ``nn.Layer``.
        input_shape: full input shape including the batch, e.g. ``[1, 3, 32, 32]``; None skips
            the forward pass (no FLOPs, table of parameters only).

    Returns:
        dict with ``params`` (total), ``trainable``, ``flops`` (multiply-accumulates for the
        whole batch of ``input_shape``, one MAC = one multiply plus one add; None without
        ``input_shape``) and ``table`` (text, one row per layer with its own parameters or
        MACs).
    """
    total, trainable = count_params(model)
    rows, hooks = {}, []

    def hook(layer, inputs, output):
        macs = layer_macs(layer, inputs, output)
        out_shape = list(output.shape) if isinstance(output, paddle.Tensor) else "-"
        # Accumulate: a layer called twice in one forward costs twice.
        prev = rows.get(id(layer), (None, None))[1]
        rows[id(layer)] = (out_shape, macs if prev is None else prev + (macs or 0))

    named = [(name or type(model).__name__, layer) for name, layer in model.named_sublayers(include_self=True)]
    flops = None
    if input_shape is not None:
        for _, layer in named:
            hooks.append(layer.register_forward_post_hook(hook))
        was_training = model.training
        model.eval()
        try:
            with paddle.no_grad():
                model(paddle.zeros(list(input_shape), dtype="float32"))
        finally:
            for h in hooks:
                h.remove()
            if was_training:
                model.train()
        flops = sum(macs for _, macs in rows.values() if macs)

    lines = [f"{'layer':<40} {'type':<18} {'output':<20} {'params':>10} {'MACs':>12}"]
    for name, layer in named:
        own = sum(int(p.numel()) for p in layer.parameters(include_sublayers=False))
        out_shape, macs = rows.get(id(layer), ("-", None))
        if not own and not macs:
            continue
        lines.append(f"{name[:40]:<40} {type(layer).__name__[:18]:<18} {str(out_shape):<20} {own:>10,} "
                     f"{'' if macs is None else format(macs, ','):>12}")
    lines.append(f"total params {total:,} (trainable {trainable:,})"
                 + ("" if flops is None else f", {flops:,} MACs for input {list(input_shape)}"))
    return {"params": total, "trainable": trainable, "flops": flops, "table": "\n".join(lines)}
