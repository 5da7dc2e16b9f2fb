"""Fast CIFAR net: a whitened 2 x 2 first layer, three conv groups, a scaled linear head.

The shape of the fastest known CIFAR-10 recipes (Keller Jordan's airbench, after David Page's
ResNet-9 DAWNBench work): small, wide and shallow, so each epoch is cheap and the optimizer does
the rest. ``fastnet`` (64/128/128 filters, about 54M multiply-adds at 32 x 32) reaches 93% on
the original CIFAR-10 data in about 11 epochs with its recipe (``configs/fast_cifar10.yml``);
``fastnet_wide`` (64/256/256, about 2.2x the compute) reaches 94% in about 10.

What makes it train fast, and where it lives here:

* :class:`Whitening`: a frozen 2 x 2 conv whose filters are the eigenvectors of the training
  data's 2 x 2 patch covariance, scaled by 1/sqrt(eigenvalue): every input direction arrives with
  unit variance, so the first layers need no time to learn the pixel statistics. Its weights come
  from the data at the start of a run (``init_from_data``), in both signs (+v, -v) so the GELU
  after it keeps all the information.
* :class:`ConvGroup`: conv -> 2 x 2 max-pool -> BatchNorm -> GELU, twice the conv. Pooling right
  after the first conv makes the second conv 4x cheaper. BatchNorm has no scale (fixed at 1; only
  the shift trains, with a large LR multiplier in the recipe) and running statistics that move
  fast (momentum 0.6: 11 epochs of about 180 steps are few).
* Identity ("dirac") init of each conv's first ``in_channels`` filters: at step 0 every group
  passes its input through, an implicit residual without the skip connection's cost.
* The head: global max-pool, a bias-free linear layer, and a fixed 1/9 scale on the logits, so
  their size at init suits label smoothing 0.2 and the large learning rate.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import paddle
import paddle.nn as nn

from models.registry import register_model


def dirac_(weight: paddle.Tensor) -> None:
    """Identity init of the first ``in_channels`` filters of a conv weight [out, in, k, k] (odd k).

    Filter i (i < in) becomes a delta at the kernel centre of input channel i; the remaining
    filters keep their random init.
    """
    w = weight.numpy()
    out_ch, in_ch, kh, kw = w.shape
    n = min(out_ch, in_ch)
    w[:n] = 0.0
    w[np.arange(n), np.arange(n), kh // 2, kw // 2] = 1.0
    weight.set_value(w)


class Whitening(nn.Layer):
    """A frozen ``kernel_size`` x ``kernel_size`` conv that whitens the input's patches.

    ``2 * in_channels * kernel_size**2`` output channels: each eigenvector of the patch
    covariance, scaled by 1 / sqrt(eigenvalue + eps), with both signs. Until
    :meth:`init_from_data` runs it is a random conv (Paddle's default init).

    Args:
        in_channels: image channels.
        kernel_size: patch side (2 in the recipe).
        eps: added to the eigenvalues; 5e-4 on inputs normalized to unit std per channel keeps
            the noisiest directions from being amplified more than about 45x.
    """

    def __init__(self, in_channels: int = 3, kernel_size: int = 2, eps: float = 5e-4) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.eps = float(eps)
        self.out_channels = 2 * in_channels * self.kernel_size ** 2
        self.conv = nn.Conv2D(in_channels, self.out_channels, self.kernel_size, padding=0)
        self.conv.weight.stop_gradient = True  # fixed by the data; the bias trains

    def init_weights(self) -> None:
        """Bias at zero: the whitened patches are centred by the normalization before it."""
        self.conv.bias.set_value(np.zeros(self.out_channels, np.float32))

    def init_from_data(self, images: np.ndarray) -> None:
        """Set the filters from ``images`` (float32 [N, C, H, W], normalized as the model sees them)."""
        images = np.asarray(images, np.float64)
        n, c, h, w = images.shape
        k = self.kernel_size
        if c * k * k * 2 != self.out_channels:
            raise ValueError(f"whitening expects {self.out_channels // (2 * k * k)} channels, got images with {c}")
        windows = np.lib.stride_tricks.sliding_window_view(images, (k, k), axis=(2, 3))  # N, C, H-k+1, W-k+1, k, k
        patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = np.linalg.eigh(cov)  # ascending
        order = np.argsort(eigenvalues)[::-1]
        scaled = eigenvectors[:, order].T / np.sqrt(np.maximum(eigenvalues[order], 0.0) + self.eps)[:, None]
        filters = scaled.reshape(c * k * k, c, k, k)
        self.conv.weight.set_value(np.concatenate([filters, -filters]).astype(np.float32))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> [N, 2 C k^2, H - k + 1, W - k + 1]."""
        return self.conv(x)


class ShiftNorm(nn.Layer):
    """BatchNorm whose scale is fixed at 1 and whose shift (``bias``) trains.

    Built as an affine-free ``BatchNorm2D`` plus a bias, because Paddle 3.3.1 gives the shift no
    gradient when the scale is absent (``weight_attr=False``) or frozen (``stop_gradient``): the
    batch-norm backward skips both together, silently.

    Args:
        channels: feature channels.
        momentum: running-statistics momentum, Paddle's convention (weight of the old value).
        epsilon: added to the variance.
    """

    def __init__(self, channels: int, momentum: float = 0.6, epsilon: float = 1e-12) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2D(channels, momentum=momentum, epsilon=epsilon, weight_attr=False, bias_attr=False)
        self.bias = self.create_parameter([channels], is_bias=True,
                                          default_initializer=nn.initializer.Constant(0.0))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] normalized per channel, plus the shift."""
        return self.norm(x) + self.bias.reshape([1, -1, 1, 1])


class ConvGroup(nn.Layer):
    """conv 3x3 -> max-pool 2x2 -> norm -> act -> conv 3x3 -> norm -> act; halves the side.

    Args:
        in_ch: input channels.
        out_ch: channels of both convs.
        norm_layer: normalization class taking the channel count.
        act_layer: activation class.
    """

    def __init__(self, in_ch: int, out_ch: int, norm_layer: type[nn.Layer] = ShiftNorm,
                 act_layer: type[nn.Layer] = nn.GELU) -> None:
        super().__init__()
        self.conv1 = nn.Conv2D(in_ch, out_ch, 3, padding=1, bias_attr=False)
        self.pool = nn.MaxPool2D(2)
        self.norm1 = norm_layer(out_ch)
        self.act = act_layer()
        self.conv2 = nn.Conv2D(out_ch, out_ch, 3, padding=1, bias_attr=False)
        self.norm2 = norm_layer(out_ch)

    def init_weights(self) -> None:
        """Identity init of the first filters of both convs (an implicit residual at step 0)."""
        dirac_(self.conv1.weight)
        dirac_(self.conv2.weight)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, in_ch, H, W] -> [N, out_ch, H // 2, W // 2]."""
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(nn.Layer):
    """Whitening, GELU, three :class:`ConvGroup`, global max-pool, linear head times ``scale``.

    Args:
        num_classes: outputs.
        in_channels: image channels.
        widths: channels of the three groups.
        whiten_kernel: patch side of the whitening layer.
        scale: the fixed multiplier of the logits (1/9 in the recipe).
        bn_momentum: BatchNorm running-statistics momentum (Paddle's convention).
        act_layer: activation class.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = (64, 128, 128),
                 whiten_kernel: int = 2, scale: float = 1 / 9, bn_momentum: float = 0.6,
                 act_layer: type[nn.Layer] = nn.GELU) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must list 3 positive ints (one per conv group), got {widths}")
        self.whiten = Whitening(in_channels, whiten_kernel)
        self.act = act_layer()
        chans = [self.whiten.out_channels] + widths

        def norm(c: int) -> nn.Layer:
            return ShiftNorm(c, bn_momentum)

        self.groups = nn.Sequential(*[ConvGroup(chans[i], chans[i + 1], norm, act_layer) for i in range(3)])
        self.pool = nn.AdaptiveMaxPool2D(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(widths[-1], num_classes, bias_attr=False)
        self.scale = float(scale)
        self.num_features = widths[-1]

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> pooled features [N, widths[-1]]."""
        return self.flatten(self.pool(self.groups(self.act(self.whiten(x)))))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> logits [N, num_classes]."""
        return self.head(self.forward_features(x)) * self.scale


def _check_size(image_size: int, whiten_kernel: int) -> None:
    # three 2x2 pools after the whitening conv: the side must survive to >= 1
    if image_size - whiten_kernel + 1 < 8:
        raise ValueError(f"image_size {image_size} is too small for fastnet (whitening then three 2x2 pools "
                         f"need >= {7 + whiten_kernel})")


@register_model
def fastnet(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, widths: Sequence[int] = (64, 128, 128),
            whiten_kernel: int = 2, scale: float = 1 / 9, bn_momentum: float = 0.6) -> FastNet:
    """Fast CIFAR net, 64/128/128: about 0.57M parameters and 54M multiply-adds at 32 x 32 x 3."""
    _check_size(image_size, whiten_kernel)
    return FastNet(num_classes, in_channels, widths, whiten_kernel, scale, bn_momentum)


@register_model
def fastnet_wide(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 widths: Sequence[int] = (64, 256, 256), whiten_kernel: int = 2, scale: float = 1 / 9,
                 bn_momentum: float = 0.6) -> FastNet:
    """Fast CIFAR net, 64/256/256: about 1.9M parameters and 2.2x the compute of ``fastnet``."""
    _check_size(image_size, whiten_kernel)
    return FastNet(num_classes, in_channels, widths, whiten_kernel, scale, bn_momentum)
