"""ResNet for CIFAR (He et al. 2016, "Deep Residual Learning for Image Recognition", section 4.2).

A 3 x 3 stem, then 3 stages of n BasicBlocks with 16, 32, 64 filters (times ``width``) on
32 x 32, 16 x 16, 8 x 8 maps; depth = 6n + 2 (resnet20: n = 3, resnet8: n = 1). The first
block of stages 2 and 3 has stride 2. Shortcuts are identity, or a 1 x 1 conv + BN where
the shape changes (the paper's option B; its CIFAR runs used zero-padding, option A,
which saves those few parameters but is awkward to write as layers).

``attention`` (e.g. SpatialAttention) acts on the residual branch before the addition, as
CBAM does, so the identity path stays untouched.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import paddle
import paddle.nn as nn

from models.registry import register_model
from models.spatial_attention import SpatialAttention


class BasicBlock(nn.Layer):
    """conv3x3-BN-ReLU-conv3x3-BN, optional attention, + shortcut, ReLU.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        stride: stride of the first conv (2 halves the side).
        attention: zero-argument layer class applied to the residual branch, or None.
        act_layer: activation class.
        norm_layer: normalization class taking the channel count.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, attention: Callable[[], nn.Layer] | None = None,
                 act_layer: type[nn.Layer] = nn.ReLU, norm_layer: type[nn.Layer] = nn.BatchNorm2D) -> None:
        super().__init__()
        # No conv biases: each conv feeds a norm whose shift does the same job.
        self.conv1 = nn.Conv2D(in_ch, out_ch, 3, stride=stride, padding=1, bias_attr=False)
        self.bn1 = norm_layer(out_ch)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2D(out_ch, out_ch, 3, padding=1, bias_attr=False)
        self.bn2 = norm_layer(out_ch)
        # Identity when off: same parameter names with and without attention.
        self.attn = attention() if attention is not None else nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2D(in_ch, out_ch, 1, stride=stride, bias_attr=False),
                                          norm_layer(out_ch))
        else:
            self.shortcut = nn.Identity()
        self.act2 = act_layer()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, in_ch, H, W] -> [N, out_ch, H / stride, W / stride]."""
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Layer):
    """Stem, three stages of ``blocks_per_stage`` BasicBlocks, global average pool, linear head.

    Args:
        num_classes: outputs.
        in_channels: image channels.
        blocks_per_stage: n; depth = 6n + 2.
        width: multiplier of the 16/32/64 filters.
        attention: zero-argument layer class inside every block, or None.
        act_layer: activation class.
        norm_layer: normalization class taking the channel count.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, blocks_per_stage: int = 3, width: float = 1,
                 attention: Callable[[], nn.Layer] | None = None, act_layer: type[nn.Layer] = nn.ReLU,
                 norm_layer: type[nn.Layer] = nn.BatchNorm2D) -> None:
        super().__init__()
        if blocks_per_stage < 1 or width <= 0:
            raise ValueError(f"need blocks_per_stage >= 1 and width > 0, got {blocks_per_stage}, {width}")
        widths = [max(1, int(round(c * width))) for c in (16, 32, 64)]
        self.stem = nn.Sequential(nn.Conv2D(in_channels, widths[0], 3, padding=1, bias_attr=False),
                                  norm_layer(widths[0]), act_layer())
        stages, in_ch = [], widths[0]
        for i, out_ch in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride, attention, act_layer, norm_layer))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(widths[-1], num_classes)
        self.num_features = widths[-1]

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> pooled features [N, 64 * width]."""
        return self.flatten(self.pool(self.stages(self.stem(x))))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> logits [N, num_classes]."""
        return self.head(self.forward_features(x))


def _check_size(image_size: int) -> None:
    # Two stride-2 stages: 32 -> 16 -> 8; an 8 x 8 digit ends at 2 x 2. Below 4 the last
    # stage sees a single pixel padded with zeros, which is legal but pointless.
    if image_size < 4:
        raise ValueError(f"image_size {image_size} is too small for CIFAR ResNet (two stride-2 stages, needs >= 4)")


@register_model
def resnet8(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: float = 1) -> CifarResNet:
    """ResNet-8 (n = 1): the quick CPU baseline, about 78k parameters and 12.6M multiply-adds at 32 x 32."""
    _check_size(image_size)
    return CifarResNet(num_classes, in_channels, blocks_per_stage=1, width=width)


@register_model
def resnet20(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: float = 1) -> CifarResNet:
    """ResNet-20 (n = 3): the paper's smallest CIFAR net, about 272k parameters and 41M multiply-adds at 32 x 32."""
    _check_size(image_size)
    return CifarResNet(num_classes, in_channels, blocks_per_stage=3, width=width)


@register_model
def resnet20_sa(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: float = 1,
                sa_kernel: int = 7) -> CifarResNet:
    """``resnet20`` with a SpatialAttention in every block (9 x 99 = 891 extra parameters with k = 7)."""
    _check_size(image_size)
    return CifarResNet(num_classes, in_channels, blocks_per_stage=3, width=width,
                       attention=functools.partial(SpatialAttention, kernel_size=sa_kernel))
