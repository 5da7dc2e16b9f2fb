"""Multi-layer perceptron on flattened pixels: the floor any image model should beat."""
from __future__ import annotations

from collections.abc import Sequence

import paddle
import paddle.nn as nn

from models.registry import register_model


def resolve_act(act_layer: type[nn.Layer] | str) -> type[nn.Layer]:
    """An activation class, given the class itself or its ``paddle.nn`` name from YAML (``"GELU"``)."""
    if isinstance(act_layer, str):
        cls = getattr(nn, act_layer, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Layer)):
            raise ValueError(f"act_layer '{act_layer}' is not a paddle.nn layer (e.g. ReLU, GELU, Tanh, Sigmoid)")
        return cls
    return act_layer


class MLP(nn.Layer):
    """Flatten -> (Linear -> activation -> dropout) per hidden layer -> Linear head.

    Args:
        in_features: flattened input size (channels x side x side).
        num_classes: outputs.
        hidden: sizes of the hidden layers; empty gives multinomial logistic regression.
        dropout: drop probability after each hidden activation.
        act_layer: activation class.
    """

    def __init__(self, in_features: int, num_classes: int = 10, hidden: Sequence[int] = (256, 128), dropout: float = 0.1,
                 act_layer: type[nn.Layer] = nn.ReLU) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        layers, width = [], in_features
        for h in hidden:
            layers += [nn.Linear(width, h), act_layer(), nn.Dropout(dropout)]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)
        self.num_features = width

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, ...] (flattened to [N, in_features]) -> logits [N, num_classes]."""
        return self.head(self.body(self.flatten(x)))


@register_model
def mlp(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, hidden: int | Sequence[int] = (256, 128),
        dropout: float = 0.1, act_layer: type[nn.Layer] | str = nn.ReLU) -> MLP:
    """MLP with ``hidden`` layer sizes (a list or one int from YAML).

    About 820k parameters at 32 x 32 x 3 (3072 inputs: 3072 x 256 is most of it); 50k on
    8 x 8 digits. ``act_layer`` is a class or a ``paddle.nn`` name such as ``"GELU"``.
    """
    if isinstance(hidden, int):
        hidden = [hidden]
    if isinstance(hidden, str) or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
        raise ValueError(f"hidden must be a list of positive ints, got {hidden!r}")
    return MLP(in_channels * image_size * image_size, num_classes, list(hidden), dropout, resolve_act(act_layer))
