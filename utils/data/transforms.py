"""Image transform ops built from ``Transforms.train`` / ``Transforms.eval``.

A config lists ops in order, each as ``{OpName: {param: value}}`` (or a bare ``OpName``)::

    Transforms:
      train:
        - RandomCrop: {size: 32, padding: 4}
        - RandomHorizontalFlip: {}
        - Normalize: {}

Ops for photos: ``RandomResizedCrop``, ``ColorJitter``, ``RandomRotation``, ``RandomErasing``,
``RandomGrayscale`` and ``RandomVerticalFlip`` beside the crops, flips, ``Cutout`` and resizes of small images.
With ``DataLoader.batched: true`` the same lists run as whole-batch numpy functions
(:mod:`utils.data.batched`), which support a subset of the ops.

Ops take and return one image as an HWC ``uint8`` numpy array (grayscale images are
H x W x 1). They use only numpy and PIL (no OpenCV) and draw their randomness from the
global ``np.random`` state, so reseeding numpy at the start of an epoch repeats the
augmentations (Paddle's DataLoader workers are seeded from it too).

Every pipeline ends with a conversion to a float32 C x H x W array scaled to [0, 1];
``Normalize`` (which, when used, must be the last op) then subtracts the mean and divides
by the std, both given in [0, 1] units. Without ``Normalize`` the output stays in [0, 1].
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance

from utils.errors import ConfigError, did_you_mean

OPS: dict[str, type] = {}


def register_op(cls: type) -> type:
    """Class decorator: make ``cls`` available to configs under its class name."""
    OPS[cls.__name__] = cls
    return cls


def _size2(value, where, name="size"):
    """An int or [h, w] of positive ints -> (h, w)."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        value = [value, value]
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return int(value[0]), int(value[1])
    raise ConfigError(f"{where}: {name} must be a positive int or [height, width], got {value!r}")


def _as_gray_pil(img):
    return Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)


PADDING_MODES = ("constant", "reflect", "edge", "symmetric")  # numpy.pad's names, as Paddle's RandomCrop
FLIP_MODES = ("random", "alternate")


@register_op
class RandomCrop:
    """Crop a random size x size window after padding each border by `padding` pixels (padding_mode: constant = zeros, reflect, edge, symmetric)."""

    def __init__(self, size: int | list[int], padding: int = 0, padding_mode: str = "constant",
                 where: str = "RandomCrop") -> None:
        self.size = _size2(size, where)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ConfigError(f"{where}: padding must be an int >= 0, got {padding!r}")
        if padding_mode not in PADDING_MODES:
            raise ConfigError(f"{where}: padding_mode must be one of {', '.join(PADDING_MODES)}, got {padding_mode!r}")
        self.padding = padding
        self.padding_mode = padding_mode
        self.where = where

    def check(self, h: int, w: int) -> None:
        """ConfigError when the window does not fit the padded h x w image or reflect padding exceeds it."""
        th, tw = self.size
        p = self.padding
        if th > h + 2 * p or tw > w + 2 * p:
            raise ConfigError(f"{self.where}: crop {th}x{tw} is larger than the padded image "
                              f"{h + 2 * p}x{w + 2 * p} (image {h}x{w}, padding {p}); lower size or raise padding")
        if self.padding_mode == "reflect" and p >= min(h, w):
            raise ConfigError(f"{self.where}: reflect padding {p} needs images larger than {p} pixels "
                              f"(image {h}x{w}); lower padding or use padding_mode constant")

    def __call__(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        th, tw = self.size
        p = self.padding
        self.check(h, w)
        # Offsets of the window in the padded image, drawn from the global numpy state.
        top = np.random.randint(0, h + 2 * p - th + 1) - p
        left = np.random.randint(0, w + 2 * p - tw + 1) - p
        if p == 0 or (top >= 0 and left >= 0 and top + th <= h and left + tw <= w):
            return img[top:top + th, left:left + tw]
        if self.padding_mode != "constant":
            padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode=self.padding_mode)
            return padded[top + p:top + p + th, left + p:left + p + tw]
        out = np.zeros((th, tw, img.shape[2]), dtype=img.dtype)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + th, h), min(left + tw, w)
        out[y0 - top:y1 - top, x0 - left:x1 - left] = img[y0:y1, x0:x1]
        return out


@register_op
class RandomHorizontalFlip:
    """Mirror the image left-right with probability p; mode alternate (DataLoader.batched only): each image flipped every other epoch."""

    def __init__(self, p: float = 0.5, mode: str = "random", where: str = "RandomHorizontalFlip") -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ConfigError(f"{where}: p must be a probability in [0, 1], got {p!r}")
        if mode not in FLIP_MODES:
            raise ConfigError(f"{where}: mode must be one of {', '.join(FLIP_MODES)}, got {mode!r}")
        if mode == "alternate" and p != 0.5:
            raise ConfigError(f"{where}: mode alternate flips half of the images every epoch (p 0.5), got p {p!r}; "
                              f"drop p or use mode random")
        self.p = float(p)
        self.mode = mode
        self.where = where

    def __call__(self, img: np.ndarray) -> np.ndarray:
        # mode alternate needs the sample's position and the epoch, which only the batched loader
        # knows (the per-sample loaders refuse it); a single image (previews, shape probes) gets
        # a random flip, the same marginal distribution.
        if np.random.random() < self.p:
            return img[:, ::-1]
        return img


@register_op
class Resize:
    """Resize to size x size (int) or [height, width] with PIL bilinear interpolation (aspect ratio not kept)."""

    def __init__(self, size: int | list[int], where: str = "Resize") -> None:
        self.size = _size2(size, where)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        h, w = self.size
        if img.shape[0] == h and img.shape[1] == w:
            return img
        out = np.asarray(_as_gray_pil(np.ascontiguousarray(img)).resize((w, h), Image.BILINEAR))
        return out[:, :, None] if out.ndim == 2 else out


@register_op
class CenterCrop:
    """Crop the central size x size (int) or [height, width] window."""

    def __init__(self, size: int | list[int], where: str = "CenterCrop") -> None:
        self.size = _size2(size, where)
        self.where = where

    def __call__(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        th, tw = self.size
        if th > h or tw > w:
            raise ConfigError(f"{self.where}: crop {th}x{tw} is larger than the image {h}x{w}; "
                              f"add a Resize before it or lower size")
        top, left = (h - th) // 2, (w - tw) // 2
        return img[top:top + th, left:left + tw]


def _prob(p, where: str, name: str = "p") -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ConfigError(f"{where}: {name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _range(value, where: str, name: str, low: float, high: float | None = None, symmetric: bool = False,
           center: float | None = None) -> tuple[float, float]:
    """A number or [min, max] -> (min, max) within [low, high].

    ``symmetric``: a single number d means [-d, d]; ``center``: a single number d means
    [center - d, center + d] clipped at ``low`` (ColorJitter's factors around 1).
    """
    def num(v):
        return not isinstance(v, bool) and isinstance(v, (int, float)) and np.isfinite(v)

    top = "inf" if high is None else f"{high:g}"
    if num(value):
        if value < 0:
            raise ConfigError(f"{where}: {name} must be >= 0 or [min, max], got {value!r}")
        lo, hi = ((-value, value) if symmetric else (max(low, center - value), center + value) if center is not None
                  else (value, value))
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(num(v) for v in value):
        lo, hi = float(value[0]), float(value[1])
        if lo > hi:
            raise ConfigError(f"{where}: {name} [min, max] needs min <= max, got {list(value)}")
    else:
        raise ConfigError(f"{where}: {name} must be a number or [min, max], got {value!r}")
    if lo < low or (high is not None and hi > high):
        raise ConfigError(f"{where}: {name} must lie within [{low:g}, {top}], got {value!r}")
    return float(lo), float(hi)


def _to_pil(img: np.ndarray) -> Image.Image:
    return _as_gray_pil(np.ascontiguousarray(img))


def _from_pil(pil: Image.Image) -> np.ndarray:
    out = np.asarray(pil)
    return out[:, :, None] if out.ndim == 2 else out


@register_op
class RandomResizedCrop:
    """Crop a random area (scale) and aspect ratio (ratio), resized to size: the ImageNet training crop."""

    def __init__(self, size: int | list[int], scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (0.75, 1.3333), where: str = "RandomResizedCrop") -> None:
        self.size = _size2(size, where)
        self.scale = _range(scale, where, "scale", 0.0, 1.0)
        if self.scale[1] <= 0:
            raise ConfigError(f"{where}: scale must allow a positive area, got {scale!r}")
        self.ratio = _range(ratio, where, "ratio", 1e-3, 1e3)

    def window(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop; 10 draws, then the central crop at the nearest ratio."""
        area = h * w
        log_r = (np.log(self.ratio[0]), np.log(self.ratio[1]))
        for _ in range(10):
            target = area * np.random.uniform(*self.scale)
            r = float(np.exp(np.random.uniform(*log_r)))
            cw, ch = int(round(np.sqrt(target * r))), int(round(np.sqrt(target / r)))
            if 0 < cw <= w and 0 < ch <= h:
                return np.random.randint(0, h - ch + 1), np.random.randint(0, w - cw + 1), ch, cw
        r = w / h
        if r < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif r > self.ratio[1]:
            ch, cw = h, int(round(h * self.ratio[1]))
        else:
            ch, cw = h, w
        ch, cw = max(1, min(ch, h)), max(1, min(cw, w))
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def __call__(self, img: np.ndarray) -> np.ndarray:
        top, left, ch, cw = self.window(*img.shape[:2])
        th, tw = self.size
        crop = _to_pil(img[top:top + ch, left:left + cw])
        return _from_pil(crop.resize((tw, th), Image.BILINEAR))


@register_op
class RandomVerticalFlip:
    """Mirror the image top-bottom with probability p."""

    def __init__(self, p: float = 0.5, where: str = "RandomVerticalFlip") -> None:
        self.p = _prob(p, where)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if np.random.random() < self.p:
            return img[::-1]
        return img


@register_op
class ColorJitter:
    """Random brightness, contrast, saturation (factors 1 +- value) and hue (shift +- value <= 0.5), in random order."""

    def __init__(self, brightness: float | list[float] = 0, contrast: float | list[float] = 0,
                 saturation: float | list[float] = 0, hue: float | list[float] = 0,
                 where: str = "ColorJitter") -> None:
        self.factors = [_range(v, where, n, 0.0, None, center=1.0) for n, v in
                        (("brightness", brightness), ("contrast", contrast), ("saturation", saturation))]
        self.hue = _range(hue, where, "hue", -0.5, 0.5, symmetric=True)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        color = img.shape[2] == 3
        pil = _to_pil(img)
        # One permutation and one draw per adjustment, whether or not it is enabled, so enabling
        # one adjustment does not change the draws of the ops after this one.
        order = np.random.permutation(4)
        draws = [np.random.uniform(lo, hi) for lo, hi in (*self.factors, self.hue)]
        for i in order:
            f = draws[i]
            if i == 0 and f != 1:
                pil = ImageEnhance.Brightness(pil).enhance(f)
            elif i == 1 and f != 1:
                pil = ImageEnhance.Contrast(pil).enhance(f)
            elif i == 2 and f != 1 and color:
                pil = ImageEnhance.Color(pil).enhance(f)
            elif i == 3 and f != 0 and color:
                h, sat, v = pil.convert("HSV").split()
                shift = int(round(f * 255))
                h = Image.fromarray((np.asarray(h).astype(np.int16) + shift).astype(np.uint8))
                pil = Image.merge("HSV", (h, sat, v)).convert("RGB")
        return _from_pil(pil)


@register_op
class RandomRotation:
    """Rotate by a random angle in [-degrees, degrees] (or [min, max]), bilinear; corners filled with fill (0-255)."""

    def __init__(self, degrees: float | list[float], fill: int = 0, where: str = "RandomRotation") -> None:
        self.degrees = _range(degrees, where, "degrees", -360.0, 360.0, symmetric=True)
        if isinstance(fill, bool) or not isinstance(fill, int) or not 0 <= fill <= 255:
            raise ConfigError(f"{where}: fill must be an int in [0, 255] (a pixel value), got {fill!r}")
        self.fill = fill

    def __call__(self, img: np.ndarray) -> np.ndarray:
        angle = float(np.random.uniform(*self.degrees))
        pil = _to_pil(img)
        fill = self.fill if pil.mode == "L" else (self.fill,) * 3
        return _from_pil(pil.rotate(angle, resample=Image.BILINEAR, fillcolor=fill))


@register_op
class RandomGrayscale:
    """With probability p, replace the colours by their luminance (channels kept; 1-channel images unchanged)."""

    def __init__(self, p: float = 0.1, where: str = "RandomGrayscale") -> None:
        self.p = _prob(p, where)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if np.random.random() >= self.p or img.shape[2] == 1:
            return img
        gray = np.asarray(_to_pil(img).convert("L"))
        return np.repeat(gray[:, :, None], img.shape[2], axis=2)


@register_op
class RandomErasing:
    """With probability p, fill a random box (area scale, aspect ratio) with value (0-255) or random noise."""

    def __init__(self, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.33),
                 ratio: tuple[float, float] = (0.3, 3.3), value: int | str = 0, where: str = "RandomErasing") -> None:
        self.p = _prob(p, where)
        self.scale = _range(scale, where, "scale", 0.0, 1.0)
        self.ratio = _range(ratio, where, "ratio", 1e-3, 1e3)
        if not (value == "random" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255)):
            raise ConfigError(f"{where}: value must be an int in [0, 255] or 'random', got {value!r}")
        self.value = value

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if np.random.random() >= self.p:
            return img
        h, w = img.shape[:2]
        log_r = (np.log(self.ratio[0]), np.log(self.ratio[1]))
        for _ in range(10):
            target = h * w * np.random.uniform(*self.scale)
            r = float(np.exp(np.random.uniform(*log_r)))
            eh, ew = int(round(np.sqrt(target * r))), int(round(np.sqrt(target / r)))
            if 0 < eh < h and 0 < ew < w:
                top, left = np.random.randint(0, h - eh + 1), np.random.randint(0, w - ew + 1)
                out = img.copy()
                if self.value == "random":
                    out[top:top + eh, left:left + ew] = np.random.randint(0, 256, (eh, ew, img.shape[2]), dtype=np.uint8)
                else:
                    out[top:top + eh, left:left + ew] = self.value
                return out
        return img


@register_op
class Cutout:
    """With probability p, set a random size x size square, wholly inside the image, to 0 (pixel value)."""

    def __init__(self, size: int, p: float = 1.0, where: str = "Cutout") -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"{where}: size must be a positive int (the side of the square), got {size!r}")
        self.size = size
        self.p = _prob(p, where)
        self.where = where

    def check(self, h: int, w: int) -> None:
        """ConfigError when the square does not fit an h x w image."""
        if self.size > min(h, w):
            raise ConfigError(f"{self.where}: square {self.size}x{self.size} is larger than the image {h}x{w}; "
                              f"lower size")

    def __call__(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        self.check(h, w)
        if np.random.random() >= self.p:
            return img
        top, left = np.random.randint(0, h - self.size + 1), np.random.randint(0, w - self.size + 1)
        out = img.copy()
        out[top:top + self.size, left:left + self.size] = 0
        return out


@register_op
class Normalize:
    """Last op: (x/255 - mean) / std per channel; mean/std in [0,1] units, null = Transforms.mean/std or the dataset's."""

    def __init__(self, mean: float | list[float] | None = None, std: float | list[float] | None = None,
                 where: str = "Normalize") -> None:
        self.mean = None if mean is None else _channel_values(mean, f"{where}: mean")
        self.std = None if std is None else _channel_values(std, f"{where}: std", positive=True)

    def __call__(self, img: np.ndarray) -> np.ndarray:  # the work is done by the final conversion of Compose
        return img


def _channel_values(value, where, positive=False):
    """A number or list of numbers -> tuple of floats."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{where}: expected a list of per-channel numbers in [0,1] units, got {value!r}")
    if positive and any(v <= 0 for v in value):
        raise ConfigError(f"{where}: std values must be > 0, got {list(value)}")
    if any(v < 0 or v > 1 for v in value):
        raise ConfigError(f"{where}: values are in [0,1] units (pixel/255), got {list(value)}; "
                          f"divide 0-255 values by 255")
    return tuple(float(v) for v in value)


def op_params(cls: type) -> dict[str, object]:
    """{param: default or inspect.Parameter.empty} of an op (``where`` excluded)."""
    sig = inspect.signature(cls.__init__)
    return {n: p.default for n, p in sig.parameters.items() if n not in ("self", "where")}


def list_ops() -> list[str]:
    """Registered op names."""
    return list(OPS)


class Compose:
    """Apply ops in order, then convert to float32 CHW in [0,1] and normalize.

    Args:
        ops: op instances (callables on HWC uint8 arrays).
        mean, std: per-channel tuples in [0,1] units, or None for no normalization.
    """

    def __init__(self, ops: list[Callable[[np.ndarray], np.ndarray]], mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        self.ops = list(ops)
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self._cache = {}

    def _coeffs(self, channels):
        """scale, offset arrays [C,1,1] with out = x * scale + offset."""
        if channels not in self._cache:
            if self.mean is None:
                scale = np.full(channels, 1 / 255.0)
                offset = np.zeros(channels)
            else:
                mean = np.broadcast_to(np.asarray(self.mean, np.float64), (channels,))
                std = np.broadcast_to(np.asarray(self.std, np.float64), (channels,))
                scale, offset = 1.0 / (255.0 * std), -mean / std
            self._cache[channels] = (scale.astype(np.float32)[:, None, None],
                                     offset.astype(np.float32)[:, None, None])
        return self._cache[channels]

    def __call__(self, img: np.ndarray | Image.Image) -> np.ndarray:
        if isinstance(img, Image.Image):
            img = np.asarray(img if img.mode in ("L", "RGB") else img.convert("RGB"))
        if img.ndim == 2:
            img = img[:, :, None]
        for op in self.ops:
            img = op(img)
        scale, offset = self._coeffs(img.shape[2])
        out = np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32)
        out *= scale
        out += offset
        return out

    def __repr__(self) -> str:
        names = ", ".join(type(op).__name__ for op in self.ops)
        return f"Compose([{names}], mean={self.mean}, std={self.std})"


def _parse_entry(entry, where):
    """{Name: params} or 'Name' -> (name, params dict)."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        (name, params), = entry.items()
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: parameters of {name} must be a mapping like {{size: 32}}, got {params!r}")
        return str(name), params
    raise ConfigError(f"{where}: each op must be {{OpName: {{params}}}} or OpName, got {entry!r}; "
                      f"valid ops: {', '.join(OPS)}")


def build_transforms(op_list: list | None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     where: str = "Transforms.train", channels: int | None = None) -> Compose:
    """Build a :class:`Compose` from a config op list.

    Args:
        op_list: list of ``{OpName: {params}}`` (or bare op names).
        mean, std: per-channel values in [0,1] units used by a ``Normalize`` that gives none
            (``Transforms.mean/std`` resolved, or the dataset's defaults).
        where: config location for error messages.
        channels: image channels, to check the length of mean/std (optional).

    Raises:
        ConfigError: unknown op or parameter, bad value, Normalize not last.
    """
    if op_list is None:
        op_list = []
    if not isinstance(op_list, list):
        raise ConfigError(f"{where}: expected a list of ops like [{{RandomHorizontalFlip: {{}}}}], got {op_list!r}")
    ops, norm = [], None
    for i, entry in enumerate(op_list):
        at = f"{where}[{i}]"
        name, params = _parse_entry(entry, at)
        cls = OPS.get(name)
        if cls is None:
            raise ConfigError(f"{at}: unknown transform op '{name}'{did_you_mean(name, OPS)}; "
                              f"valid ops: {', '.join(OPS)}")
        valid = op_params(cls)
        for p in params:
            if p not in valid:
                raise ConfigError(f"{at}: unknown parameter '{p}' of {name}{did_you_mean(p, valid)}; "
                                  f"valid parameters of {name}: {', '.join(valid) or 'none'}")
        missing = [p for p, d in valid.items() if d is inspect.Parameter.empty and p not in params]
        if missing:
            raise ConfigError(f"{at}: {name} needs parameter(s) {', '.join(missing)}; "
                              f"valid parameters of {name}: {', '.join(valid)}")
        op = cls(**params, where=f"{at}.{name}")
        if isinstance(op, Normalize):
            if i != len(op_list) - 1:
                raise ConfigError(f"{at}: Normalize must be the last op (the pipeline converts to float there)")
            norm = op
        else:
            ops.append(op)
    if norm is None:
        return Compose(ops)
    n_mean = norm.mean if norm.mean is not None else mean
    n_std = norm.std if norm.std is not None else std
    if n_mean is None or n_std is None:
        raise ConfigError(f"{where}: Normalize has no mean/std: give them as parameters or set Transforms.mean/std")
    n_mean = _channel_values(n_mean, f"{where}: Normalize mean")
    n_std = _channel_values(n_std, f"{where}: Normalize std", positive=True)
    if channels is not None:
        for label, vals in (("mean", n_mean), ("std", n_std)):
            if len(vals) not in (1, channels):
                raise ConfigError(f"{where}: Normalize {label} has {len(vals)} values but the images have "
                                  f"{channels} channel(s): give 1 or {channels} values")
    return Compose(ops, n_mean, n_std)


def has_op(op_list: list | None, name: str) -> bool:
    """Whether a config op list contains op ``name``."""
    for entry in op_list or []:
        if (entry == name) or (isinstance(entry, dict) and name in entry):
            return True
    return False


def transforms_markdown() -> str:
    """The op reference as a Markdown table (appended to the config docs)."""
    out = ["## Transform ops", "",
           "`Transforms.train` / `Transforms.eval` list ops in order as `{OpName: {param: value}}`.",
           "Every pipeline ends with a conversion to float32 CHW in [0, 1]; `Normalize`, when used, is last.", "",
           "| op | parameters | effect |", "| --- | --- | --- |"]
    for name, cls in OPS.items():
        params = []
        for p, d in op_params(cls).items():
            d = list(d) if isinstance(d, tuple) else d  # YAML writes lists
            params.append(f"`{p}`" if d is inspect.Parameter.empty else f"`{p}={d!r}`".replace("None", "null"))
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        out.append(f"| `{name}` | {', '.join(params) or '-'} | {doc} |")
    out.append("")
    return "\n".join(out)
