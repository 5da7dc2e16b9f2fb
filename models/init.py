"""Weight init schemes for conv and linear layers, chosen in the config (``Arch.init``).

Xavier keeps activation variance for tanh-like units; Kaiming (He) for ReLU, whose
half-zeroed outputs halve the variance each layer. Biases start at zero. A layer that
needs its own init (the Spatial Gating Unit's gate: weights ~0, bias 1) defines
``init_weights()``, which runs after the scheme so it always wins.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

SCHEMES = ("default", "xavier", "kaiming", "normal")


def apply_init(model: nn.Layer, scheme: str = "default", std: float = 0.02) -> nn.Layer:
    """Initialise ``model`` in place with ``scheme`` and then each layer's own ``init_weights``."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init '{scheme}', choose one of {SCHEMES}")
    if scheme != "default":
        for layer in model.sublayers(include_self=True):
            if isinstance(layer, (nn.Conv2D, nn.Linear)):
                w = layer.weight
                if scheme == "xavier":
                    nn.initializer.XavierUniform()(w)
                elif scheme == "kaiming":
                    nn.initializer.KaimingNormal()(w)
                else:
                    nn.initializer.Normal(0.0, std)(w)
                if layer.bias is not None:
                    nn.initializer.Constant(0.0)(layer.bias)
    for layer in model.sublayers(include_self=True):
        if hasattr(layer, "init_weights") and callable(layer.init_weights):
            layer.init_weights()
    return model


def data_init_layers(model: nn.Layer) -> list[nn.Layer]:
    """Sublayers whose weights come from the training data (they define ``init_from_data(images)``).

    The caller (the trainer, at the start of a run, before pretrained weights or a checkpoint are
    loaded over them) passes a sample of training images as the model sees them: float32
    [N, C, H, W], normalized, not augmented.
    """
    return [layer for layer in model.sublayers(include_self=True)
            if callable(getattr(layer, "init_from_data", None))]


def count_params(model: nn.Layer) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(int(p.numel()) for p in model.parameters())
    trainable = sum(int(p.numel()) for p in model.parameters() if not p.stop_gradient)
    return total, trainable


def running_stats(network: nn.Layer) -> list[paddle.Tensor]:
    """BatchNorm's running mean and variance tensors (``_mean``/``_variance``), each once.

    Paddle keeps them as Parameters with ``stop_gradient=True``, listed by ``named_parameters()``
    and indistinguishable by their attributes from weights a user froze, so they are found
    through the layers that own them.
    """
    out, seen = [], set()
    for layer in network.sublayers(include_self=True):
        for attr in ("_mean", "_variance"):
            t = getattr(layer, attr, None)
            if isinstance(t, paddle.Tensor) and id(t) not in seen:
                seen.add(id(t))
                out.append(t)
    return out
