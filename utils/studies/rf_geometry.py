"""The receptive-field geometry of one layer: its kernel, stride, padding and dilation, and the
:class:`Field` of a tensor that the layer maps to the field of its output.

Per axis, along a chain of layers (the standard recurrences):

    k_eff     = d * (k - 1) + 1                        dilated kernel extent
    j_out     = j_in * s                               jump: input pixels between adjacent outputs
    r_out     = r_in + (k_eff - 1) * j_in              receptive field side, in input pixels
    start_out = start_in + ((k_eff - 1) / 2 - p) * j_in

with j = r = 1 and start = 0 at the input; ``start`` is the centre of the receptive field of
output unit 0 in input pixel coordinates (pixel centres at 0, 1, ..., H - 1; a negative value
means the corner unit's window hangs over the padding). Unit i is centred at ``start + i * j``.

Plain Python on the layers' attributes, no forward pass: tracing a model through its layers is
:mod:`utils.studies.receptive_field`.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import paddle

POOLS = ("MaxPool2D", "AvgPool2D")

Axes = tuple[int, ...]  # one value per axis: (h, w)


def pair(v: int | Sequence[int]) -> Axes:
    """``v`` per axis (h, w): an int twice, a 1- or 2-element list as (first, last); longer lists as they are."""
    if isinstance(v, (list, tuple)):
        v = list(v)
        return (int(v[0]), int(v[-1])) if len(v) in (1, 2) else tuple(int(x) for x in v)
    return int(v), int(v)


def _flat(v: Iterable) -> list:
    """Nested lists flattened, in order."""
    out = []
    for x in v:
        out.extend(_flat(x) if isinstance(x, (list, tuple)) else [x])
    return out


def _lead_padding(padding: int | str | Sequence, algorithm: str | None, k_eff: Sequence[int],
                  stride: Sequence[int], size_in: Sequence[int], size_out: Sequence[int]) -> Axes:
    """Leading (top, left) padding from a conv/pool's padding setting."""
    algo = (algorithm or "").upper()
    if isinstance(padding, str):
        algo = padding.upper()
    if algo == "VALID":
        return 0, 0
    if algo == "SAME":
        return tuple(max((o - 1) * s + k - i, 0) // 2 for o, s, k, i in zip(size_out, stride, k_eff, size_in))
    pads = _flat(padding) if isinstance(padding, (list, tuple)) else [padding]
    pads = [int(p) for p in pads]
    if len(pads) == 1:
        return pads[0], pads[0]
    if len(pads) == 2:                      # [pad_h, pad_w]
        return pads[0], pads[1]
    if len(pads) == 4:                      # [top, bottom, left, right]
        return pads[0], pads[2]
    if len(pads) == 8:                      # [[0, 0], [0, 0], [top, bottom], [left, right]] (NCHW)
        return pads[4], pads[6]
    raise ValueError(f"cannot read padding {padding!r}")


def conv_params(layer: paddle.nn.Layer, size_in: Sequence[int],
                size_out: Sequence[int]) -> tuple[Axes, Axes, Axes, Axes]:
    """(kernel, stride, padding, dilation) per axis of a Conv2D / MaxPool2D / AvgPool2D."""
    name = type(layer).__name__
    if name in POOLS:
        k = pair(layer.ksize)
        s = pair(layer.stride if layer.stride is not None else layer.ksize)
        d = (1, 1)
        k_eff = k
        p = _lead_padding(layer.padding, None, k_eff, s, size_in, size_out)
    else:
        k, s, d = pair(layer._kernel_size), pair(layer._stride), pair(layer._dilation)
        k_eff = tuple(di * (ki - 1) + 1 for ki, di in zip(k, d))
        p = _lead_padding(layer._updated_padding, layer._padding_algorithm, k_eff, s, size_in, size_out)
    return k, s, p, d


def adaptive_params(size_in: Sequence[int], size_out: Sequence[int]) -> tuple[Axes, Axes, Axes, Axes]:
    """Kernel/stride of an adaptive pool: exact when the output divides the input, else the largest window."""
    k, s = [], []
    for i, o in zip(size_in, size_out):
        if i % o == 0:
            k.append(i // o)
            s.append(i // o)
        else:
            k.append(math.ceil(i / o) + (1 if o > 1 else 0))
            s.append(i // o)
    return tuple(k), tuple(s), (0, 0), (1, 1)


class Field:
    """Receptive field of one tensor, per axis (h, w): side ``r``, jump ``j``, centre of unit 0 ``start``."""

    __slots__ = ("r", "j", "start", "size", "is_global")

    def __init__(self, r: Sequence[float], j: Sequence[float], start: Sequence[float], size: Sequence[int],
                 is_global: bool = False) -> None:
        def clean(v):
            return tuple(int(x) if float(x).is_integer() else float(x) for x in v)

        self.r, self.j, self.start, self.size, self.is_global = clean(r), clean(j), clean(start), tuple(size), is_global

    def apply(self, k: Sequence[int], s: Sequence[int], p: Sequence[int], d: Sequence[int],
              size_out: Sequence[int]) -> Field:
        """The field after a layer of kernel ``k``, stride ``s``, leading padding ``p``, dilation ``d``."""
        k_eff = [di * (ki - 1) + 1 for ki, di in zip(k, d)]
        r = [ri + (ke - 1) * ji for ri, ke, ji in zip(self.r, k_eff, self.j)]
        j = [ji * si for ji, si in zip(self.j, s)]
        start = [st + ((ke - 1) / 2 - pi) * ji for st, ke, pi, ji in zip(self.start, k_eff, p, self.j)]
        return Field(r, j, start, size_out, self.is_global)

    def made_global(self, input_size: Sequence[int], size: Sequence[int] | None = None) -> Field:
        """The whole input, centred on it (after global pooling or global mixing)."""
        return Field(input_size, self.j, [(n - 1) / 2 for n in input_size], size or self.size, True)

    def key(self) -> tuple:
        """What identifies the field regardless of the tensor's size (to tell a change)."""
        return self.r, self.j, self.start, self.is_global

    @staticmethod
    def hull(fields: Iterable[Field | None]) -> Field:
        """Union of the windows of ``fields`` (branches that are merged): their bounding interval."""
        fields = [f for f in fields if f is not None]
        if len(fields) == 1:
            return fields[0]
        r, start, j = [], [], []
        for a in range(2):
            lo = min(f.start[a] - (f.r[a] - 1) / 2 for f in fields)
            hi = max(f.start[a] + (f.r[a] - 1) / 2 for f in fields)
            r.append(hi - lo + 1)
            start.append((lo + hi) / 2)
            j.append(max(f.j[a] for f in fields))
        size = max(fields, key=lambda f: f.j).size
        return Field(r, j, start, size, any(f.is_global for f in fields))
