"""GoogLeNet / Inception v1 (Szegedy et al. 2015, "Going Deeper with Convolutions") for 32 x 32 inputs.

Changes from the ImageNet network: a 3 x 3 stem keeps the full 32 x 32 resolution instead
of the 7 x 7 / stride-2 conv, 3 x 3 conv and two max-pools that take 224 to 28; only the two
max-pools between the inception groups remain (32 -> 16 -> 8); BatchNorm after every conv
(it came with Inception v2, and replaces LRN); no auxiliary classifiers (they fought the
vanishing gradients of a 22-layer net without BN). Branch widths are the paper's table 1
times ``width``, rounded to multiples of 8 (at least 8).
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from models.registry import register_model

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) of blocks 3a..5b, from table 1 of the paper.
INCEPTION_CFG = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
STEM_CHANNELS = 192  # what the ImageNet stem hands to block 3a


def scaled(channels: int, width: float, divisor: int = 8) -> int:
    """``channels * width`` rounded to a multiple of ``divisor`` (SIMD-friendly), at least ``divisor``."""
    return max(divisor, int(round(channels * width / divisor)) * divisor)


class ConvBNReLU(nn.Sequential):
    """k x k conv (no bias; BN shifts) -> BatchNorm -> ReLU, side preserved at stride 1.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        kernel_size: odd side k of the conv (padding k // 2).
        stride: conv stride.
        act_layer: activation class.
        norm_layer: normalization class taking the channel count.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, act_layer: type[nn.Layer] = nn.ReLU,
                 norm_layer: type[nn.Layer] = nn.BatchNorm2D) -> None:
        super().__init__(nn.Conv2D(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2,
                                   bias_attr=False),
                         norm_layer(out_ch), act_layer())


class Inception(nn.Layer):
    """Four parallel branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max-pool -> 1x1.

    The 1 x 1 "reduce" convs shrink the channels before the expensive 3 x 3 and 5 x 5.

    Args:
        in_ch: input channels.
        ch1: 1x1 branch channels.
        ch3red, ch3: 3x3 branch reduce and output channels.
        ch5red, ch5: 5x5 branch reduce and output channels.
        pool_proj: channels of the 1x1 after the max-pool.
        act_layer: activation class.
        norm_layer: normalization class taking the channel count.
    """

    def __init__(self, in_ch: int, ch1: int, ch3red: int, ch3: int, ch5red: int, ch5: int, pool_proj: int,
                 act_layer: type[nn.Layer] = nn.ReLU, norm_layer: type[nn.Layer] = nn.BatchNorm2D) -> None:
        super().__init__()
        cbr = lambda i, o, k: ConvBNReLU(i, o, k, act_layer=act_layer, norm_layer=norm_layer)  # noqa: E731
        self.branch1 = cbr(in_ch, ch1, 1)
        self.branch3 = nn.Sequential(cbr(in_ch, ch3red, 1), cbr(ch3red, ch3, 3))
        self.branch5 = nn.Sequential(cbr(in_ch, ch5red, 1), cbr(ch5red, ch5, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2D(3, stride=1, padding=1), cbr(in_ch, pool_proj, 1))
        self.out_channels = ch1 + ch3 + ch5 + pool_proj

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, in_ch, H, W] -> [N, out_channels, H, W]."""
        return paddle.concat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], axis=1)


class GoogLeNet(nn.Layer):
    """3 x 3 stem, max-pool, inception 3a-3b, max-pool, 4a-4e, max-pool, 5a-5b, global average pool, dropout, linear.

    Args:
        num_classes: outputs.
        in_channels: image channels.
        width: multiplier of every branch width (1.0 = the paper's, 1024 features).
        dropout: drop probability before the head (the paper used 0.4 on ImageNet).
        act_layer: activation class.
        norm_layer: normalization class taking the channel count.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 0.25, dropout: float = 0.2,
                 act_layer: type[nn.Layer] = nn.ReLU, norm_layer: type[nn.Layer] = nn.BatchNorm2D) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        ch = scaled(STEM_CHANNELS, width)
        self.stem = ConvBNReLU(in_channels, ch, 3, act_layer=act_layer, norm_layer=norm_layer)
        layers = []
        for name, cfg in INCEPTION_CFG.items():
            if name in ("3a", "4a", "5a"):
                # kernel 3, stride 2, padding 1 halves even sides: 32 -> 16 -> 8 -> 4 (digits 8 -> 4 -> 2 -> 1),
                # the paper's 1/8, 1/16, 1/32 of the input for stages 3, 4, 5. Running 3a/3b at the full
                # 32 x 32 instead cost 4x the time (25-35 img/s on 2 cores) for a model meant to be usable on CPU.
                layers.append(nn.MaxPool2D(3, stride=2, padding=1))
            block = Inception(ch, *[scaled(c, width) for c in cfg], act_layer=act_layer, norm_layer=norm_layer)
            layers.append(block)
            ch = block.out_channels
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(ch, num_classes)
        self.num_features = ch

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> pooled features [N, num_features]."""
        return self.flatten(self.pool(self.blocks(self.stem(x))))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> logits [N, num_classes]."""
        return self.head(self.dropout(self.forward_features(x)))


@register_model
def googlenet(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: float = 0.25,
              dropout: float = 0.2) -> GoogLeNet:
    """GoogLeNet for small images; ``width=0.25`` has about 0.38M parameters and 25M multiply-adds at 32 x 32 x 3.

    About 115 img/s forward+backward on 2 CPU cores at batch 128. Each block's stride-1 max-pool
    costs about as much as a 3 x 3 conv in Paddle's CPU kernels, so pooling dominates at low
    width. ``width=1`` is the paper's widths (about 5.9M parameters).
    """
    if image_size < 8:
        raise ValueError(f"image_size {image_size} is too small for googlenet's three stride-2 max-pools (needs >= 8)")
    return GoogLeNet(num_classes, in_channels, width, dropout)
