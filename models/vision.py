"""ResNet-18 and MobileNetV2 from ``paddle.vision.models``, adapted to small inputs, with
Paddle's ImageNet weights or a local ``.pdparams`` file as the starting point (fine-tuning).

The networks are Paddle's own classes with Paddle's parameter names (``conv1``, ``layer1.0.conv1``,
``fc``; ``features.0.0``, ``classifier.1``), so Paddle's pretrained files and checkpoints saved
by ``paddle.vision`` load by name. Changes, all made by replacing layers after construction:

* Small inputs (``stem='auto'`` and ``image_size <= 64``, or ``stem='small'``): the ImageNet stem
  divides the side by 4 before the first stage (7x7 stride-2 conv + 3x3 max-pool on ResNet), which
  leaves 1x1 maps at 32x32. As the CIFAR variants do, ResNet gets a 3x3 stride-1 first conv and
  no max-pool (total stride 8: 32x32 ends at 4x4), MobileNetV2 a stride-1 first conv and a
  stride-1 first 24-channel block (total stride 8, as in the common CIFAR MobileNetV2). The
  MobileNetV2 changes keep every parameter shape, so its ImageNet weights all load; ResNet's
  3x3 stem cannot take the 7x7 weights and starts from its init (reported as a shape mismatch).
* ``in_channels`` other than 3: a new first conv; a 3-channel pretrained stem is adapted as timm
  does (1 channel: the sum over RGB; k channels: RGB repeated and scaled by 3/k).
* ``num_classes``: a new head (``fc`` / ``classifier.1``); a pretrained head of another size is
  reported as a shape mismatch and keeps its init.

``pretrained``: ``None``/``False`` = random init; a ``.pdparams`` file, its prefix or a run
directory (its best_model) = those weights, loaded by name and shape (works offline, always);
``True``/``'imagenet'`` = Paddle's ImageNet weights through ``paddle.utils.download``
(``~/.cache/paddle/hapi/weights``; needs internet the first time, or the file placed there).
What was loaded and skipped is in ``model.pretrained_report`` (the trainer prints it). The
weights are applied again by ``init_weights`` after ``Arch.init``, so an init scheme never
overwrites them.
"""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn as nn
from paddle.utils import download
from paddle.vision.models import mobilenetv2 as _pv_mobilenet
from paddle.vision.models import resnet as _pv_resnet
from paddle.vision.ops import ConvNormActivation

from models.pretrained import LoadReport, load_matching, pretrained_file
from models.registry import register_model
from utils.errors import UserError

SMALL_INPUT_MAX = 64  # stem='auto' switches to the small-input stem at or below this side
STEMS = ("auto", "small", "imagenet")
IMAGENET = {  # Paddle's own table: (url, md5)
    "resnet18": _pv_resnet.model_urls["resnet18"],
    "mobilenet_v2": _pv_mobilenet.model_urls["mobilenetv2_1.0"],
}


def _small_stem(stem: str, image_size: int) -> bool:
    """Whether ``stem`` at ``image_size`` means the small-input stem."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    return image_size <= SMALL_INPUT_MAX if stem == "auto" else stem == "small"


def download_imagenet(arch: str) -> str:
    """Path of Paddle's ImageNet weights for ``arch``, downloaded once into ~/.cache/paddle/hapi/weights.

    Raises:
        UserError: one line when the download fails (offline), saying what to do instead.
    """
    url, md5 = IMAGENET[arch]
    try:
        return download.get_weights_path_from_url(url, md5)
    except Exception as e:  # offline: RuntimeError('... Retry limit reached') after 3 tries
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"Arch.pretrained=imagenet: could not download {arch}'s ImageNet weights from {url} "
                        f"({reason}): this needs internet; offline, copy that file to {download.WEIGHTS_HOME}/ "
                        f"or pass a local file with -o Arch.pretrained=path/to/{url.rsplit('/', 1)[-1]}") from None


def adapt_input_conv(weight: paddle.Tensor | np.ndarray, in_channels: int) -> paddle.Tensor:
    """A pretrained first-conv weight [out, 3, k, k] for ``in_channels`` inputs (timm's rule):
    1 channel = the sum over the 3 (a gray image is R = G = B); k channels = the 3 repeated and
    scaled by 3 / k so the activations keep their scale."""
    w = weight if isinstance(weight, paddle.Tensor) else paddle.to_tensor(weight)
    c = int(w.shape[1])
    if in_channels == c:
        return w
    if in_channels == 1:
        return w.sum(axis=1, keepdim=True)
    reps = math.ceil(in_channels / c)
    return paddle.concat([w] * reps, axis=1)[:, :in_channels] * (c / in_channels)


class PretrainedMixin:
    """Loads ``pretrained`` into the model (now, and again in ``init_weights`` after ``Arch.init``)."""

    stem_weight = None  # name of the first conv's weight, adapted to in_channels on load

    def _setup_pretrained(self, arch: str, pretrained: bool | str | None, in_channels: int) -> None:
        self._arch = arch
        self._in_channels = in_channels
        self._pretrained = None
        self.pretrained_report = None
        if pretrained is None or pretrained is False:
            return
        if pretrained is True or (isinstance(pretrained, str) and pretrained.lower() == "imagenet"):
            self._pretrained = ("imagenet", download_imagenet(arch))
        elif isinstance(pretrained, str) and pretrained:
            self._pretrained = (pretrained, pretrained_file(pretrained, "Arch.pretrained"))
        else:
            raise ValueError(f"pretrained must be null, true/'imagenet' or a .pdparams path, got {pretrained!r}")
        self.load_pretrained()

    def load_pretrained(self) -> LoadReport | None:
        """Load the ``pretrained`` weights by name and shape; sets and returns ``pretrained_report``."""
        if self._pretrained is None:
            return None
        label, file = self._pretrained
        state = paddle.load(file)
        own = self.state_dict()
        k = self.stem_weight
        if k in state and k in own and list(state[k].shape) != list(own[k].shape):
            cs, ms = list(state[k].shape), list(own[k].shape)
            if cs[1] == 3 and cs[0] == ms[0] and cs[2:] == ms[2:]:  # only the channels differ
                state[k] = adapt_input_conv(state[k], self._in_channels)
        self.pretrained_report = load_matching(self, file, key="Arch.pretrained", state=state)
        return self.pretrained_report

    def init_weights(self) -> None:
        """Called by ``models.init.apply_init`` after the init scheme: the pretrained weights win."""
        if self._pretrained is not None:
            self.load_pretrained()


class VisionResNet(PretrainedMixin, _pv_resnet.ResNet):
    """``paddle.vision.models.ResNet`` (BasicBlock) with the small-input stem and any in_channels.

    Args:
        depth: 18 or 34 (34 is not registered: it doubled the model tests' time for little).
        num_classes: outputs of the ``fc`` head.
        in_channels: image channels.
        small_input: 3x3 stride-1 first conv, no max-pool.
    """

    stem_weight = "conv1.weight"

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, small_input: bool = True) -> None:
        super().__init__(_pv_resnet.BasicBlock, depth, num_classes=num_classes)
        if small_input:
            self.conv1 = nn.Conv2D(in_channels, 64, 3, stride=1, padding=1, bias_attr=False)
            self.maxpool = nn.Identity()
        elif in_channels != 3:
            self.conv1 = nn.Conv2D(in_channels, 64, 7, stride=2, padding=3, bias_attr=False)
        self.small_input = small_input
        self.num_features = 512

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> pooled features [N, 512]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return paddle.flatten(self.avgpool(x), 1)


class VisionMobileNetV2(PretrainedMixin, _pv_mobilenet.MobileNetV2):
    """``paddle.vision.models.MobileNetV2`` with the small-input strides and any in_channels.

    Args:
        num_classes: outputs of the ``classifier.1`` head (after dropout 0.2).
        in_channels: image channels.
        small_input: stride-1 first conv and first 24-channel block (total stride 8, not 32).
        scale: width multiplier (ImageNet weights exist for 1.0 only).
    """

    stem_weight = "features.0.0.weight"

    def __init__(self, num_classes: int = 10, in_channels: int = 3, small_input: bool = True,
                 scale: float = 1.0) -> None:
        super().__init__(scale=scale, num_classes=num_classes)
        first = self.features[0][0]
        if small_input or in_channels != 3:
            self.features[0] = ConvNormActivation(in_channels, first._out_channels, stride=1 if small_input else 2,
                                                  norm_layer=nn.BatchNorm2D, activation_layer=nn.ReLU6)
        if small_input:
            old = self.features[2]  # first block of the 24-channel stage, stride 2
            inp = int(old.conv[0][0]._in_channels)
            out = int(old.conv[-1]._num_features)
            self.features[2] = _pv_mobilenet.InvertedResidual(inp, out, 1, expand_ratio=6, norm_layer=nn.BatchNorm2D)
        self.small_input = small_input
        self.num_features = self.last_channel

    def forward_features(self, x: paddle.Tensor) -> paddle.Tensor:
        """[N, C, H, W] -> pooled features [N, 1280 * max(1, scale)]."""
        return paddle.flatten(self.pool2d_avg(self.features(x)), 1)


def _check(image_size: int) -> None:
    if image_size < 4:
        raise ValueError(f"image_size {image_size} is too small (needs >= 4)")


@register_model
def resnet18(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, stem: str = "auto",
             pretrained: bool | str | None = None) -> VisionResNet:
    """ResNet-18 from paddle.vision (11.2M parameters; 556M multiply-adds at 32x32 with the small-input stem).

    ``stem``: auto (small-input stem when image_size <= 64), small or imagenet. ``pretrained``:
    null, imagenet (download) or a local .pdparams file / run directory.
    """
    _check(image_size)
    model = VisionResNet(18, num_classes, in_channels, _small_stem(stem, image_size))
    model._setup_pretrained("resnet18", pretrained, in_channels)
    return model


@register_model
def mobilenet_v2(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, stem: str = "auto",
                 pretrained: bool | str | None = None, scale: float = 1.0) -> VisionMobileNetV2:
    """MobileNetV2 from paddle.vision (2.2M parameters at scale 1; 90M multiply-adds at 32x32 with the small-input strides).

    ``stem`` and ``pretrained`` as for ``resnet18``; ``scale`` is the width multiplier (ImageNet
    weights for 1.0 only; other widths load only the tensors whose shapes match).
    """
    _check(image_size)
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if (pretrained is True or str(pretrained).lower() == "imagenet") and scale != 1.0:
        raise ValueError(f"Paddle has ImageNet weights for mobilenet_v2 scale 1.0 only, got scale {scale}")
    model = VisionMobileNetV2(num_classes, in_channels, _small_stem(stem, image_size), scale)
    model._setup_pretrained("mobilenet_v2", pretrained, in_channels)
    return model
