"""The doctor's probes into a live Paddle network: the gradient monitor that sits in the optimizer,
per-layer output statistics, and the replay that names where a non-finite value first appeared.

Gradients: hapi's ``train_batch`` runs backward, the optimizer step and ``clear_gradients``
inside one call, so no callback hook ever sees a gradient. The optimizer calls its
``_grad_clip`` with the ``(param, grad)`` list right before the update, in dygraph mode, on
every step; :class:`GradMonitor` wraps whatever clip the config asked for (or none) and
records the norms there, then delegates. On a step whose loss or input batch is non-finite (or
whose measured gradients or weights are) it has :func:`locate_nonfinite` replay the step's input
batch through the network with the parameters still *before* that step's update (to name the
layer), and hands the optimizer zero gradients, so the weights in memory stay the last good ones.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import paddle
from paddle import nn
from paddle.nn.clip import ClipGradBase, _squared_l2_norm

# Dtypes whose values can be non-finite and whose statistics the doctor takes.
FLOAT_DTYPES = (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64)
# Layers whose output can have dead units (zero for every input of the batch).
RELU_TYPES = ("ReLU", "ReLU6")


class GradListener(Protocol):
    """What :class:`GradMonitor` asks of the doctor that installed it (:class:`~utils.doctor.callback.Doctor`)."""

    nonfinite_pending: bool  # this step's loss or input batch was non-finite
    measure_grads: bool      # measure the norms on this step
    sample_layers_now: bool  # ... and the per-parameter RMS
    sync_flag: Callable[[bool], bool] | None

    def record_grads(self, total: float, clipped: bool | None,
                     per_param: list[tuple[paddle.Tensor, float]] | None) -> None:
        """Take the step's global norm, whether the clip clipped, and (sampling steps) the per-parameter RMS."""

    def locate_now(self) -> None:
        """Name the source of a non-finite value while the parameters are still those of the forward pass."""


def first_tensor(x: Any) -> paddle.Tensor | None:
    """The first tensor in ``x`` (a tensor or nested lists/tuples of them), depth first; None if there is none."""
    if isinstance(x, paddle.Tensor):
        return x
    if isinstance(x, (list, tuple)):
        for item in x:
            t = first_tensor(item)
            if t is not None:
                return t
    return None


def float_tensors(x: Any) -> list[paddle.Tensor]:
    """Every floating-point tensor in ``x`` (a tensor or nested lists/tuples of them)."""
    if isinstance(x, paddle.Tensor):
        return [x] if x.dtype in FLOAT_DTYPES else []
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in float_tensors(item)]
    return []


def all_finite(tensors: list[paddle.Tensor]) -> bool:
    """Every value of every tensor is finite (one host sync per tensor)."""
    return all(bool(paddle.isfinite(t).all()) for t in tensors)


class GradMonitor(ClipGradBase):
    """A gradient "clip" that measures, then delegates to the configured clip (or passes through).

    Installed as the optimizer's ``_grad_clip`` by :class:`~utils.doctor.callback.Doctor`. On the
    steps the doctor asks for (``doctor.measure_grads``) it computes each gradient's squared L2
    norm (the same op ``ClipGradByGlobalNorm`` uses), the global norm, whether the inner clip would
    clip, and on layer-sampling steps the per-parameter RMS. On a step whose loss was non-finite it asks the
    doctor to locate the source (the parameters are still those of the forward pass) and returns
    zero gradients: the update is skipped and the weights stay the last good ones.
    """

    def __init__(self, inner: ClipGradBase | None, doctor: GradListener) -> None:
        super().__init__()
        self.inner = inner
        self.doctor = doctor
        self.kind, self.limit = None, None
        if isinstance(inner, nn.ClipGradByGlobalNorm):
            self.kind, self.limit = "global_norm", float(inner.clip_norm)
        elif isinstance(inner, nn.ClipGradByNorm):
            self.kind, self.limit = "norm", float(inner.clip_norm)
        elif isinstance(inner, nn.ClipGradByValue):
            self.kind, self.limit = "value", float(inner.max)

    def __str__(self) -> str:
        return f"GradMonitor({self.inner})"

    def _measure(self, pg: list[tuple[paddle.Tensor, paddle.Tensor]]) -> bool:
        """Record the norms; return False when a gradient or a parameter is non-finite."""
        sq = paddle.stack([_squared_l2_norm(g.astype("float32")).reshape([1]) for _, g in pg]).reshape([-1])
        # Parameters too: one non-finite update between two measurements shows here.
        params_ok = paddle.stack([paddle.isfinite(p).all() for p, _ in pg]).all()
        extra = None
        if self.kind == "value":
            extra = paddle.stack([g.abs().max().astype("float32").reshape([1]) for _, g in pg]).reshape([-1])
        sq = sq.numpy().astype(np.float64)
        norms = np.sqrt(sq)
        total = float(np.sqrt(sq.sum()))
        if not (math.isfinite(total) and bool(params_ok)):
            return False
        clipped = None
        if self.kind == "global_norm":
            clipped = total > self.limit
        elif self.kind == "norm":
            clipped = bool((norms > self.limit).any())
        elif self.kind == "value":
            clipped = bool((extra.numpy() > self.limit).any())
        per_param = None
        if self.doctor.sample_layers_now:
            per_param = [(p, float(n) / math.sqrt(max(int(np.prod(p.shape)), 1))) for (p, _), n in zip(pg, norms)]
        self.doctor.record_grads(total, clipped, per_param)
        return True

    @paddle.no_grad()
    def _dygraph_clip(self, params_grads: list[tuple[paddle.Tensor, paddle.Tensor | None]]) -> list:
        d = self.doctor
        pg = [(p, g) for p, g in params_grads if g is not None]
        ok = not d.nonfinite_pending
        sync = getattr(d, "sync_flag", None)
        if sync is not None:  # data parallel: every rank skips the (all-reduced) update alike
            ok = not sync(not ok)
        if ok and d.measure_grads and pg:
            try:
                ok = self._measure(pg)
            except Exception as e:  # a failed measurement must not cost the update: report it, carry on
                fail = getattr(d, "fail", None)
                if fail is None:
                    raise
                fail("gradient probe", e)
        if not ok:
            # The parameters are still those of this step's forward pass: find the source now,
            # then skip the update so the weights in memory stay the last good ones.
            d.locate_now()
            return [(p, paddle.zeros_like(g)) for p, g in pg]
        return self.inner(params_grads) if self.inner is not None else params_grads


def layer_kind(layer: nn.Layer) -> str:
    """The layer's class name (``Linear``, ``ReLU``, ...)."""
    return type(layer).__name__


def leaf_layers(network: nn.Layer) -> list[tuple[str, nn.Layer]]:
    """(name, layer) for every sublayer without sublayers, in registration order."""
    return [(n, l) for n, l in network.named_sublayers() if not l._sub_layers]


@paddle.no_grad()
def layer_stats(x: paddle.Tensor, kind: str) -> paddle.Tensor:
    """[rms, absmax, dead fraction or -1] of a layer output as a float32 tensor (no host sync)."""
    x = x.astype("float32")
    rms = x.square().mean().sqrt()
    absmax = x.abs().max()
    if kind in RELU_TYPES and x.ndim >= 2:
        axes = [0] + list(range(2, x.ndim)) if x.ndim == 4 else list(range(x.ndim - 1))
        dead = 1.0 - (x > 0).any(axis=axes).astype("float32").mean()
    else:
        dead = paddle.to_tensor(-1.0, dtype="float32")
    return paddle.stack([rms.reshape([]), absmax.reshape([]), dead.reshape([])])


def _buffers_snapshot(network: nn.Layer) -> list[tuple[paddle.Tensor, paddle.Tensor]]:
    return [(b, b.clone()) for b in network.buffers() if b is not None]


@paddle.no_grad()
def locate_nonfinite(network: nn.Layer, inputs: Any, loss_value: float | None = None) -> dict:
    """Where the first non-finite value of a forward pass comes from.

    Checks, in order: the input batch; the parameters; then replays ``inputs`` through
    ``network`` (same mode, buffers such as BatchNorm's running statistics restored afterwards)
    with a post-hook on every sublayer and returns the first layer, in call order, whose output
    is non-finite: ``layer`` when its inputs were finite, ``op`` when they already were not
    (a functional op in the caller made them). All outputs finite -> ``loss``.

    Returns a dict with ``kind`` (input | weights | layer | op | loss | unknown) and evidence.
    """
    tensors = float_tensors(list(inputs) if isinstance(inputs, (list, tuple)) else [inputs])
    for t in tensors:
        bad = int((~paddle.isfinite(t)).astype("int64").sum())
        if bad:
            return {"kind": "input", "count": bad, "fraction": bad / max(int(np.prod(t.shape)), 1)}
    for name, p in network.named_parameters():
        if not bool(paddle.isfinite(p).all()):
            return {"kind": "weights", "param": name}
    found = {}
    names = {id(l): n for n, l in network.named_sublayers()}

    def hook(layer: nn.Layer, ins: tuple, out: Any) -> None:
        if found:
            return
        outs = float_tensors(out)
        if outs and not all_finite(outs):
            ins_t = float_tensors(list(ins))
            w = [p for p in layer.parameters()]
            found.update({
                "kind": "layer" if all_finite(ins_t) else "op", "layer": names.get(id(layer), "?"),
                "type": layer_kind(layer),
                "input_absmax": max([float(t.abs().max()) for t in ins_t if bool(paddle.isfinite(t).all())] or [0.0]),
                "weight_absmax": max([float(p.abs().max()) for p in w] or [0.0])})

    handles = [l.register_forward_post_hook(hook) for _, l in network.named_sublayers()]
    saved = _buffers_snapshot(network)
    try:
        out = network(*inputs) if isinstance(inputs, (list, tuple)) else network(inputs)
    finally:
        for h in handles:
            h.remove()
        for b, v in saved:
            b.set_value(v)
    if found:
        return found
    outs = float_tensors(out)
    if outs and all_finite(outs):
        return {"kind": "loss", "loss": str(loss_value)}
    return {"kind": "unknown"}
