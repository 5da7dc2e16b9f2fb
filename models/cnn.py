"""Baseline CNN built from the usual rules of thumb.

3 x 3 convs (two stacked see 5 x 5 with fewer parameters than one 5 x 5), BatchNorm then
ReLU after each, filters a power of two doubling per stage while a 2 x 2 max-pool halves
the side (so each stage costs about the same), global average pooling instead of a big
flattening Linear (works for any input side), dropout just before the head.
``cnn`` and ``cnn_sa`` differ only by a SpatialAttention after each stage, to compare.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import paddle
import paddle.nn as nn

from models.registry import register_model
from models.spatial_attention import SpatialAttention


def conv_bn_act(in_ch: int, out_ch: int, act_layer: type[nn.Layer] = nn.ReLU,
                norm_layer: type[nn.Layer] = nn.BatchNorm2D) -> nn.Sequential:
    """3 x 3 conv (no bias: the norm's shift replaces it) -> norm -> activation."""
    return nn.Sequential(nn.Conv2D(in_ch, out_ch, 3, padding=1, bias_attr=False), norm_layer(out_ch), act_layer())


class ConvStage(nn.Layer):
    """``num_convs`` conv-norm-act layers, optional attention, optional 2 x 2 max-pool.

    Args:
        in_ch: input channels.
        out_ch: channels of every conv.
        num_convs: conv-norm-act layers.
        pool: end with a 2 x 2 max-pool (halves the side).
        attention: zero-argument layer class built after the convs, or None.
        act_layer: activation class.
        norm_layer: normalization class taking the channel count.
    """

    def __init__(self, in_ch: int, out_ch: int, num_convs: int = 2, pool: bool = True,
                 attention: Callable[[], nn.Layer] | None = None, act_layer: type[nn.Layer] = nn.ReLU,
                 norm_layer: type[nn.Layer] = nn.BatchNorm2D) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[conv_bn_act(in_ch if i == 0 else out_ch, out_ch, act_layer, norm_layer)
                                     for i in range(num_convs)])
        # Identity when off: parameter names stay the same with and without attention, so
        # weights of ``cnn`` load into ``cnn_sa`` (all but the attention convs).
        self.attn = attention() if attention is not None else nn.Identity()
        # Attention before the pool: the map is drawn at the stage's full resolution.
        self.pool = nn.MaxPool2D(2, 2) if pool else nn.Identity()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, in_ch, H, W] -> [N, out_ch, H / 2, W / 2] (H, W when ``pool`` is off)."""
        return self.pool(self.attn(self.convs(x)))


class SimpleCNN(nn.Layer):
    """Stages of 3 x 3 convs, global average pool, dropout, linear head.

    Each stage but the last ends with a 2 x 2 max-pool: 32 -> 16 -> 8 for CIFAR with three
    stages, 8 -> 4 -> 2 for digits, so the input side must be >= 2 ** (stages - 1).

    Args:
        num_classes: outputs.
        in_channels: image channels.
        widths: filters per stage; powers of two doubling per stage by convention.
        convs_per_stage: conv layers per stage.
        dropout: drop probability before the head.
        attention: zero-argument layer class (or ``functools.partial``) built after the convs
            of each stage, e.g. ``SpatialAttention``; None for none.
        act_layer: activation class.
        norm_layer: normalization class taking the channel count.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128),
                 convs_per_stage: int = 2, dropout: float = 0.3, attention: Callable[[], nn.Layer] | None = None,
                 act_layer: type[nn.Layer] = nn.ReLU, norm_layer: type[nn.Layer] = nn.BatchNorm2D) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be a non-empty list of positive ints, got {widths}")
        chans = [in_channels] + widths
        self.stages = nn.Sequential(*[
            ConvStage(chans[i], chans[i + 1], convs_per_stage, pool=i < len(widths) - 1, attention=attention,
                      act_layer=act_layer, norm_layer=norm_layer)
            for i in range(len(widths))])
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], num_classes)
        self.num_features = widths[-1]

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> pooled features [N, widths[-1]]."""
        return self.flatten(self.pool(self.stages(x)))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> logits [N, num_classes]."""
        return self.head(self.dropout(self.forward_features(x)))


def _check_size(image_size: int, num_pools: int) -> None:
    if image_size < 2 ** num_pools:
        raise ValueError(f"image_size {image_size} is too small for {num_pools} 2x2 max-pools "
                         f"(needs >= {2 ** num_pools}); use fewer widths")


@register_model
def cnn(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, widths: Sequence[int] = (32, 64, 128),
        convs_per_stage: int = 2, dropout: float = 0.3) -> SimpleCNN:
    """Baseline CNN: 3 stages x 2 convs of 32/64/128 filters.

    About 289k parameters and 38.7M multiply-adds at 32 x 32 x 3 with 10 classes;
    100-125 img/s forward+backward on 2 CPU threads (batch 128).
    """
    _check_size(image_size, len(widths) - 1)
    return SimpleCNN(num_classes, in_channels, widths, convs_per_stage, dropout)


@register_model
def cnn_sa(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, widths: Sequence[int] = (32, 64, 128),
           convs_per_stage: int = 2, dropout: float = 0.3, sa_kernel: int = 7) -> SimpleCNN:
    """``cnn`` plus a SpatialAttention (``sa_kernel`` x ``sa_kernel`` conv) after each stage.

    Adds 3 x (2 * 7 * 7 + 1) = 297 parameters to ``cnn`` with the default kernel.
    """
    _check_size(image_size, len(widths) - 1)
    return SimpleCNN(num_classes, in_channels, widths, convs_per_stage, dropout,
                     attention=functools.partial(SpatialAttention, kernel_size=sa_kernel))
