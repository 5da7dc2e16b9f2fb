"""Receptive field of every conv/pool layer of a model, computed analytically.

:func:`receptive_field` runs one forward pass on a zero image with forward hooks on every
layer, which gives the execution order, each layer's input and output sizes, and the data flow
between layers. Along a chain of layers it applies the standard recurrences of
:mod:`utils.studies.rf_geometry` (kernel, stride, padding and dilation per axis).

What is exact and what is not:

* Sequential conv / max-pool / avg-pool stacks (``cnn``): exact. The receptive field of a
  max-pool is where an output *can* look; the gradient reaches only the argmax.
* Branches (Inception's four branches, a ResNet block's residual path and shortcut, the
  spatial-attention gate): where tensors are merged by an operation that is not a layer
  (``concat``, ``+``, ``*``), the merged tensor gets the *hull* of the windows of everything
  the enclosing layer computed so far: the union of the branch windows, i.e. the largest
  branch (the 5 x 5 path of an Inception block, the two 3 x 3 convs of a ResNet block). This
  is an upper bound; it is the true field of the merged tensor when every branch feeds it, as
  in these models. Such points appear as ``merge`` rows.
* Global operations make the field the whole input: adaptive/global pooling to 1 x 1, a
  Linear applied to a flattened feature map, the token-mixing of gMLP's Spatial Gating Unit
  (every token sees every patch after the first SGU), attention.
* The *effective* receptive field (where the gradient is large) is much smaller than the
  theoretical one computed here, which is its upper limit.
"""
from __future__ import annotations

import copy
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from utils.build import build_network, network_input_side
from utils.data import build_datasets
from utils.errors import DataError
from utils.studies.rf_geometry import POOLS, Field, adaptive_params, conv_params, pair

if TYPE_CHECKING:
    import paddle

GLOBAL_MIXERS = ("SpatialGatingUnit", "MultiHeadAttention", "TransformerEncoderLayer", "TransformerEncoder")
ADAPTIVE_POOLS = ("AdaptiveAvgPool2D", "AdaptiveMaxPool2D")


def _spatial(shape: Sequence[int], fmt: str = "NCHW") -> tuple[int, int]:
    """(h, w) of a tensor shape; (L, 1) for tokens [N, L, C]; (1, 1) for a flat [N, C]."""
    shape = [int(s) for s in shape]
    if len(shape) == 4:
        return tuple(shape[1:3]) if fmt == "NHWC" else tuple(shape[2:])
    if len(shape) == 3:
        return (shape[1], 1)  # tokens
    return (1, 1)


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 2)


def _fmt_pair(v: Sequence[float]) -> str:
    """``3`` for (3, 3), ``3x5`` for (3, 5)."""
    a, b = _num(v[0]), _num(v[1])
    return str(a) if a == b else f"{a}x{b}"


def _tensors(obj: Any) -> list[paddle.Tensor]:
    """The tensors in ``obj`` (a tensor, or nested lists and tuples of them)."""
    # imports paddle: deferred until the thread count is set
    import paddle

    if isinstance(obj, paddle.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    return []


def _infer_channels(model: paddle.nn.Layer, size: tuple[int, int]) -> int:
    """Input channels of ``model``: the first Conv2D's, or a first Linear's inputs over the pixels."""
    # imports paddle: deferred until the thread count is set
    import paddle.nn as nn

    for layer in model.sublayers(include_self=True):
        if isinstance(layer, nn.Conv2D):
            return int(layer._in_channels)
        if isinstance(layer, nn.Linear):
            n = int(layer.weight.shape[0])
            return max(1, n // (size[0] * size[1]))
    raise ValueError("cannot infer the input channels (no Conv2D or Linear): pass in_channels")


def receptive_field(model: paddle.nn.Layer, input_size: int | Sequence[int], in_channels: int | None = None,
                    name: str | None = None) -> dict:
    """Per-layer receptive field of ``model`` for a ``input_size`` (int or (h, w)) image.

    Args:
        model: a ``paddle.nn.Layer`` taking [N, C, H, W].
        input_size: side of the square input, or (h, w).
        in_channels: C (default: the first Conv2D's input channels).
        name: the model's name in the verdict (default: its class name).

    Returns:
        A dict: ``rows`` (forward order; each with ``name``, ``type``, ``kind`` in conv / pool /
        adaptive_pool / global / merge, ``kernel``, ``stride``, ``padding``, ``dilation`` (per-axis
        tuples, None for merge/global rows), ``out_size``, ``jump``, ``rf``, ``start``, ``is_global``),
        ``input_size``, ``final`` (the output's row-like dict), ``last_spatial`` (the last row
        before the field became global, or None), ``first_global`` (the row where it became
        global, or None), ``covers`` (the final field spans the whole input), ``approximate``
        (branches were merged: fields are upper bounds), ``verdict`` (one line). Sizes are
        per-axis (h, w) tuples; a 3-D output [N, L, C] (tokens) has out_size (L, 1).
    """
    # imports paddle: deferred until the thread count is set
    import paddle

    size = pair(input_size)
    in_channels = in_channels or _infer_channels(model, size)
    known, stack, rows, calls = {}, [], [], {}
    names = {id(layer): (name or "(model)") for name, layer in model.named_sublayers(include_self=True)}

    def info_of(tensors, frame):
        found = [known[id(t)][1] for t in tensors if id(t) in known]
        if len(found) == len(tensors) and found:
            return Field.hull(found), False
        # Produced by an operation that is not a layer (concat, +, *, reshape): the hull of what
        # the enclosing layer computed so far (or its own input when it computed nothing yet).
        pool = frame["children"] or [frame["in"]]
        return Field.hull(found + pool), True

    def label(layer):
        base = names.get(id(layer), type(layer).__name__)
        calls[base] = calls.get(base, 0) + 1
        return base if calls[base] == 1 else f"{base}#{calls[base]}"

    def add_row(name, typ, kind, field, params=None):
        k, s, p, d = params if params else (None, None, None, None)
        rows.append({"name": name, "type": typ, "kind": kind, "kernel": k, "stride": s, "padding": p,
                     "dilation": d, "out_size": field.size, "jump": field.j, "rf": field.r,
                     "start": field.start, "is_global": field.is_global})

    def pre_hook(layer, inputs):
        tensors = _tensors(inputs)
        frame = stack[-1] if stack else None
        if frame is None:
            f_in, merged = Field((1, 1), (1, 1), (0, 0), size), False
        else:
            f_in, merged = info_of(tensors, frame)
            last = frame["children"][-1] if frame["children"] else frame["in"]
            if merged and f_in.key() != last.key():
                shape = _spatial(tensors[0].shape) if tensors else f_in.size
                add_row(frame["name"], "merge", "merge", Field(f_in.r, f_in.j, f_in.start, shape, f_in.is_global))
        for t in tensors:
            if id(t) not in known:  # the model's input, or a tensor made by a non-layer op
                known[id(t)] = (t, f_in)
        stack.append({"name": label(layer), "layer": layer, "in": f_in, "children": [],
                      "in_size": _spatial(tensors[0].shape) if tensors else f_in.size})
        return None

    def post_hook(layer, inputs, output):
        frame = stack.pop()
        f_in, typ = frame["in"], type(layer).__name__
        outs = _tensors(output)
        out_size = _spatial(outs[0].shape, getattr(layer, "_data_format", "NCHW")) if outs else f_in.size
        if typ == "Conv2D" or typ in POOLS:
            params = conv_params(layer, frame["in_size"], out_size)
            field = f_in.apply(*params, out_size)
            add_row(frame["name"], typ, "conv" if typ == "Conv2D" else "pool", field, params)
        elif typ in ADAPTIVE_POOLS:
            if out_size == (1, 1) or f_in.is_global:
                field = f_in.made_global(size, out_size)
                add_row(frame["name"], typ, "adaptive_pool", field)
            else:
                params = adaptive_params(frame["in_size"], out_size)
                field = f_in.apply(*params, out_size)
                add_row(frame["name"], typ, "adaptive_pool", field, params)
        elif typ in GLOBAL_MIXERS and not f_in.is_global:
            field = f_in.made_global(size, out_size)
            add_row(frame["name"], typ, "global", field)
        elif (typ == "Linear" and not f_in.is_global and outs and len(outs[0].shape) == 2
              and f_in.size != (1, 1)):
            # A Linear on a flattened feature map mixes every position.
            field = f_in.made_global(size, (1, 1))
            add_row(frame["name"], typ, "global", field)
        elif frame["layer"].sublayers() and outs and id(outs[0]) not in known:
            # A container whose result comes from a non-layer op (concat, +, *): hull of its work.
            field, _ = info_of([], frame)
            last = frame["children"][-1] if frame["children"] else f_in
            field = Field(field.r, field.j, field.start, out_size, field.is_global)
            if field.key() != last.key():
                add_row(frame["name"], "merge", "merge", field)
        elif outs and id(outs[0]) in known:
            field = known[id(outs[0])][1]
        else:
            # Element-wise and per-position layers (BN, activations, dropout, LayerNorm, Linear
            # on tokens, Flatten) keep the field of their input.
            field = Field(f_in.r, f_in.j, f_in.start, out_size if len(outs[0].shape) == 4 else f_in.size,
                          f_in.is_global) if outs else f_in
        for t in outs:
            known[id(t)] = (t, field)  # the reference keeps id() unique during the pass
        if stack:
            stack[-1]["children"].append(field)
        return None

    handles = []
    was_training = model.training
    model.eval()
    try:
        for layer in model.sublayers(include_self=True):
            handles.append(layer.register_forward_pre_hook(pre_hook))
            handles.append(layer.register_forward_post_hook(post_hook))
        x = paddle.zeros([1, in_channels, size[0], size[1]], dtype="float32")
        with paddle.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        if was_training:
            model.train()
    outs = _tensors(out)
    final = known[id(outs[0])][1]  # the model's own post-hook registered its output
    return summarize(rows, size, final, name or type(model).__name__)


def summarize(rows: list[dict], size: tuple[int, int], final: Field, model_name: str = "model") -> dict:
    """The result dict of :func:`receptive_field`: rows, final field, coverage and the verdict line."""
    first_global = next((r for r in rows if r["is_global"]), None)
    spatial = [r for r in rows if not r["is_global"]]
    if first_global is not None:
        spatial = rows[:rows.index(first_global)]
    last_spatial = spatial[-1] if spatial else None
    approximate = any(r["kind"] == "merge" for r in rows)
    final_row = {"rf": final.r, "jump": final.j, "start": final.start, "out_size": final.size,
                 "is_global": final.is_global}
    covers = final.is_global or all(r >= s for r, s in zip(final.r, size))
    side = _fmt_pair(size)
    parts = []
    if last_spatial is not None:
        r = last_spatial["rf"]
        cov = all(a >= b for a, b in zip(r, size))
        parts.append(f"the last spatial layer {last_spatial['name']} ({last_spatial['type']}) sees "
                     f"{_fmt_pair(r)} px of the {side} px input (jump {_fmt_pair(last_spatial['jump'])}): "
                     + ("covers the input" if cov else "does NOT cover the input"))
    if first_global is not None:
        what = {"adaptive_pool": "global pooling", "global": "global mixing"}.get(first_global["kind"], "global")
        parts.append(f"global (whole input) from {first_global['name']} ({first_global['type']}, {what}) on")
    elif last_spatial is None:
        parts.append("no conv/pool layer")
    verdict = f"{model_name} at {side}: " + "; ".join(parts) + \
        f". Final receptive field {'covers' if covers else 'does NOT cover'} the input"
    if approximate:
        verdict += " (branches merged: upper bound)"
    return {"rows": rows, "input_size": size, "final": final_row, "last_spatial": last_spatial,
            "first_global": first_global, "covers": covers, "approximate": approximate, "verdict": verdict}


def format_table(result: dict) -> str:
    """Fixed-width table of :func:`receptive_field` rows."""
    rows = result["rows"]
    width = max([len("layer")] + [len(r["name"]) for r in rows])
    head = (f"{'layer':<{width}} {'type':<18} {'k':>5} {'s':>3} {'p':>3} {'d':>3} {'out':>7} {'jump':>5} "
            f"{'RF':>9} {'start':>6}")
    lines = [head]
    for r in rows:
        def opt(v):
            return "" if v is None else _fmt_pair(v)
        rf = f"all {_fmt_pair(r['rf'])}" if r["is_global"] else _fmt_pair(r["rf"])
        lines.append(f"{r['name']:<{width}} {r['type']:<18} {opt(r['kernel']):>5} {opt(r['stride']):>3} "
                     f"{opt(r['padding']):>3} {opt(r['dilation']):>3} {_fmt_pair(r['out_size']):>7} "
                     f"{_fmt_pair(r['jump']):>5} {rf:>9} {_fmt_pair(r['start']):>6}")
    return "\n".join(lines)


def gradient_extent(model: paddle.nn.Layer, input_size: int | Sequence[int], unit: Sequence[int], in_channels: int = 1,
                    seed: int = 0) -> tuple[tuple[tuple[int, int], tuple[int, int]], np.ndarray]:
    """Empirical check: rows/cols of the input where d output[unit] / d input is non-zero.

    Args:
        model: a layer mapping [1, C, H, W] to [1, C', H', W'].
        input_size: (h, w) of the input.
        unit: (i, j) of the output unit (channel 0).
        in_channels: C of the input.
        seed: seeds the random input.

    Returns:
        ((row_min, row_max), (col_min, col_max)) of the non-zero gradient, and the mask [H, W].
    """
    # imports paddle: deferred until the thread count is set
    import paddle

    paddle.seed(seed)
    h, w = pair(input_size)
    x = paddle.randn([1, in_channels, h, w], dtype="float32")
    x.stop_gradient = False
    y = model(x)
    y[0, 0, unit[0], unit[1]].backward()
    mask = np.abs(x.grad.numpy()).sum(axis=(0, 1)) > 0
    rows_nz, cols_nz = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return ((int(rows_nz.min()), int(rows_nz.max())), (int(cols_nz.min()), int(cols_nz.max()))), mask


# --------------------------------------------------------------------------- from a config

NATIVE_SHAPES = {"digits": (1, 8, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100)}


def config_input(cfg: dict) -> tuple[int, int, int, str | None]:
    """(in_channels, image side, num_classes, note) of the images the config's model receives.

    Built from the data (``build_datasets``, without preloading folder images). When a CIFAR
    archive is missing, the native CIFAR shape (3 x 32 x 32, or ``Data.image_size``) is used and
    ``note`` says so; any other data error is raised.
    """
    # imports paddle: deferred until the thread count is set

    cfg = copy.deepcopy(cfg)
    if cfg["Data"]["name"] in ("folder", "filelist"):
        cfg["Data"]["preload"] = False  # a shape query need not decode every image
    try:
        bundle = build_datasets(cfg)
    except DataError as e:
        name = cfg["Data"]["name"]
        if name not in ("cifar10", "cifar100"):
            raise
        c, side, n = NATIVE_SHAPES[name]
        side = cfg["Data"]["image_size"] or side
        n = cfg["Data"]["num_classes"] or (len(cfg["Data"]["classes"]) if cfg["Data"]["classes"] else n)
        return c, side, n, f"({str(e).split(';')[0].rstrip('.')}: using the native {c}x{side}x{side})"
    return bundle.in_channels, network_input_side(bundle), bundle.num_classes, None


def config_receptive_field(cfg: dict, image_size: int | None = None) -> dict:
    """:func:`receptive_field` of the config's model on its input size (or ``image_size``).

    Returns the result dict with ``note`` (None, or how the input shape was found) and ``model``
    (the ``Arch.name``) added.
    """
    c, side, n, note = config_input(cfg)
    if image_size:
        side = int(image_size)
    bundle = types.SimpleNamespace(image_size=side, num_classes=n, in_channels=c)
    model = build_network(cfg, bundle)
    result = receptive_field(model, side, in_channels=c, name=cfg["Arch"]["name"])
    result["note"], result["model"], result["in_channels"] = note, cfg["Arch"]["name"], c
    return result
