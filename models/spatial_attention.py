"""CBAM-style spatial attention (Woo et al. 2018, "CBAM: Convolutional Block Attention Module").

Plugs into :mod:`models.cnn` and :mod:`models.resnet` through their ``attention=`` argument.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


def channel_max(x: paddle.Tensor) -> paddle.Tensor:
    """Max over the channels of [N, C, H, W] -> [N, 1, H, W], equal to ``x.max(axis=1, keepdim=True)``.

    Written as a (C x 1) max-pool because the backward of ``paddle.max`` / ``amax`` over a
    non-last axis is pathologically slow on CPU in paddle 3.3.1: 2.2 s for a [128, 32, 32, 32]
    input against 33 ms this way (2 threads), which made cnn_sa 6x slower than cnn.
    """
    n, c, h, w = x.shape
    return F.max_pool2d(x.reshape([n, 1, c, h * w]), kernel_size=(c, 1)).reshape([n, 1, h, w])


class SpatialAttention(nn.Layer):
    """Reweight every position of a feature map by a learned map in (0, 1).

    The channel-wise mean and max (2 maps) go through one k x k conv and a sigmoid; the
    input is multiplied by the result, broadcast over channels. It adds only
    2 * k * k + 1 parameters (99 for k=7), whatever the channel count.

    The last map computed is kept, detached, in ``last_map`` ([N, 1, H, W]) so a
    visualization tool can draw where the network looked.

    Args:
        kernel_size: odd side of the conv; 7 as in CBAM. Padding k // 2 keeps H x W, so it
            also works on feature maps smaller than the kernel (e.g. 2 x 2 from 8 x 8 digits).
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SpatialAttention kernel_size must be odd and >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = nn.Conv2D(2, 1, kernel_size, padding=kernel_size // 2)
        self.gate = nn.Sigmoid()
        self.last_map = None

    def attention_map(self, x: paddle.Tensor) -> paddle.Tensor:
        """The [N, 1, H, W] map in (0, 1) for input ``x`` (not stored)."""
        pooled = paddle.concat([x.mean(axis=1, keepdim=True), channel_max(x)], axis=1)
        return self.gate(self.conv(pooled))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] reweighted by its attention map (kept in ``last_map``)."""
        attn = self.attention_map(x)
        self.last_map = attn.detach()
        return x * attn

    def extra_repr(self) -> str:
        """Shown in ``print(model)``."""
        return f"kernel_size={self.kernel_size}"
