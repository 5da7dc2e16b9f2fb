"""Batched, in-memory loading of image datasets of one size (``DataLoader.batched: true``).

A split's images stay one uint8 N x H x W x C array. Each batch is gathered from it, augmented by
whole-batch numpy functions on uint8 (no Python loop over the images), then converted to float32
N x C x H x W and normalized once. The loader yields ``[images, labels int64 [N, 1]]`` paddle
tensors, as ``paddle.io.DataLoader`` does, so ``paddle.Model.fit`` and our evaluation take it as is.

The ops come from ``Transforms.train`` / ``Transforms.eval`` (the same names): :data:`BATCH_OPS`
have a batch version, any other op is a ConfigError naming it. Eval loaders are ordered and
complete and take only :data:`EVAL_OPS` (no augmentation); their output equals the per-sample
pipeline's bit for bit. ``Resize`` is accepted only to the images' own size (a no-op).

Determinism: a training pass draws one number from numpy's global RNG when it starts (``iter``)
and seeds a local ``RandomState`` with it; the permutation and every augmentation parameter come
from that state, batch after batch. The trainer reseeds numpy with ``seed + epoch`` before each
epoch, so an epoch's batches repeat exactly, and skipping the first k batches of a resumed epoch
(loading them) leaves the rest identical.

``RandomHorizontalFlip: {mode: alternate}``: a fixed half of the samples (drawn from ``seed``,
i.e. ``Global.seed``) is flipped on even epochs and the other half on odd epochs, so every image is
seen both ways every two epochs. The epoch is the one given to :meth:`BatchedLoader.set_epoch`
(0-based, global across resumes); it is the only source of the epoch: the loader keeps no
counter of its own (a resumed run could not rebuild one), and it is 0 until ``set_epoch`` is
called. A second pass that starts without a ``set_epoch`` since the previous one repeats the
previous flips and warns once.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import numpy as np

from utils.data.storage import ArrayStore
from utils.data.transforms import (
    CenterCrop,
    Compose,
    Cutout,
    RandomCrop,
    RandomErasing,
    RandomHorizontalFlip,
    RandomVerticalFlip,
    Resize,
)
from utils.errors import ConfigError, DataError

BATCH_OPS = ("RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip", "Cutout", "RandomErasing",
             "CenterCrop", "Resize", "Normalize")
EVAL_OPS = ("CenterCrop", "Resize", "Normalize")

# --------------------------------------------------------------------------- batch functions (uint8 NHWC)


def pad_batch(x: np.ndarray, padding: int, mode: str = "constant") -> np.ndarray:
    """Pad H and W of an N x H x W x C batch by ``padding`` (numpy.pad ``mode``; constant = zeros)."""
    if padding == 0:
        return x
    return np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode=mode)


def crop_batch(x: np.ndarray, tops: np.ndarray, lefts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Window ``tops[i], lefts[i]`` of ``size`` (h, w) of every image: a new N x h x w x C array."""
    windows = np.lib.stride_tricks.sliding_window_view(x, size, axis=(1, 2))  # N, H', W', C, h, w (a view)
    # one fancy index per image: indexed N x C x h x w, stored (and returned) as N x h x w x C
    return windows[np.arange(len(x)), tops, lefts].transpose(0, 2, 3, 1)


def flip_batch(x: np.ndarray, mask: np.ndarray, axis: int = 2) -> np.ndarray:
    """Mirror the images where ``mask`` is true along ``axis`` (2 = left-right, 1 = top-bottom), in place."""
    if mask.any():
        x[mask] = np.flip(x[mask], axis=axis)
    return x


def box_mask(shape: tuple[int, int], tops: np.ndarray, lefts: np.ndarray, heights: np.ndarray | int,
             widths: np.ndarray | int) -> np.ndarray:
    """N x H x W boolean: True inside each image's box (tops, lefts, heights, widths)."""
    h, w = shape
    rows = np.arange(h)[None, :]
    cols = np.arange(w)[None, :]
    tops, lefts = np.asarray(tops)[:, None], np.asarray(lefts)[:, None]
    in_rows = (rows >= tops) & (rows < tops + np.asarray(heights).reshape(-1, 1))
    in_cols = (cols >= lefts) & (cols < lefts + np.asarray(widths).reshape(-1, 1))
    return in_rows[:, :, None] & in_cols[:, None, :]


def erase_batch(x: np.ndarray, mask: np.ndarray, fill: int | np.ndarray) -> np.ndarray:
    """Set every channel of the pixels in ``mask`` (N x H x W) to ``fill`` (a value, or an array like x), in place."""
    x[mask] = fill if np.isscalar(fill) else fill[mask]
    return x


def norm_coeffs(mean: tuple | None, std: tuple | None, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 scale and offset [1, C, 1, 1] with out = pixel * scale + offset, as the per-sample Compose computes them."""
    if mean is None:
        scale, offset = np.full(channels, 1 / 255.0), np.zeros(channels)
    else:
        m = np.broadcast_to(np.asarray(mean, np.float64), (channels,))
        s = np.broadcast_to(np.asarray(std, np.float64), (channels,))
        scale, offset = 1.0 / (255.0 * s), -m / s
    return scale.astype(np.float32)[None, :, None, None], offset.astype(np.float32)[None, :, None, None]


def to_float_batch(x: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """uint8 N x H x W x C -> normalized float32 N x C x H x W (C-contiguous)."""
    n, h, w, c = x.shape
    out = np.empty((n, c, h, w), np.float32)
    # uint8 * float32 computes in float32: the same values as converting first, one pass fewer
    np.multiply(x.transpose(0, 3, 1, 2), scale, out=out)
    out += offset
    return out


# --------------------------------------------------------------------------- ops -> batch steps

Step = Callable[[np.ndarray, np.random.RandomState, np.ndarray, int], np.ndarray]


def _crop_step(op, h, w):
    th, tw, p = *op.size, op.padding

    def step(x, rs, pos, epoch):
        n = len(x)
        tops = rs.randint(0, h + 2 * p - th + 1, n)
        lefts = rs.randint(0, w + 2 * p - tw + 1, n)
        return crop_batch(pad_batch(x, p, op.padding_mode), tops, lefts, (th, tw))
    return step


def _flip_step(op, axis, n_samples, seed):
    if getattr(op, "mode", "random") == "alternate":
        # a fixed half of the positions: flipped on even epochs, the others on odd epochs
        half = np.zeros(n_samples, bool)
        half[np.random.RandomState([int(seed) % (2**32), 0xF11F]).permutation(n_samples)[: n_samples // 2]] = True

        def alternate(x, rs, pos, epoch):
            return flip_batch(x, half[pos] != bool(epoch % 2), axis)
        alternate.uses_epoch = True
        return alternate

    def step(x, rs, pos, epoch):
        return flip_batch(x, rs.random_sample(len(x)) < op.p, axis)
    return step


def _cutout_step(op, h, w):
    s = op.size

    def step(x, rs, pos, epoch):
        n = len(x)
        apply = rs.random_sample(n) < op.p
        tops, lefts = rs.randint(0, h - s + 1, n), rs.randint(0, w - s + 1, n)
        return erase_batch(x, box_mask((h, w), tops, lefts, s, s) & apply[:, None, None], 0)
    return step


def _erasing_step(op, h, w):
    tries = 10  # as the per-sample op: 10 draws of area and aspect ratio, the first that fits

    def step(x, rs, pos, epoch):
        n = len(x)
        apply = rs.random_sample(n) < op.p
        area = h * w * rs.uniform(*op.scale, (n, tries))
        ratio = np.exp(rs.uniform(np.log(op.ratio[0]), np.log(op.ratio[1]), (n, tries)))
        eh, ew = np.rint(np.sqrt(area * ratio)).astype(np.int64), np.rint(np.sqrt(area / ratio)).astype(np.int64)
        fits = (eh > 0) & (eh < h) & (ew > 0) & (ew < w)
        first = fits.argmax(axis=1)
        eh, ew = eh[np.arange(n), first], ew[np.arange(n), first]
        apply &= fits.any(axis=1)
        tops = (rs.random_sample(n) * (h - eh + 1)).astype(np.int64)
        lefts = (rs.random_sample(n) * (w - ew + 1)).astype(np.int64)
        mask = box_mask((h, w), tops, lefts, eh, ew) & apply[:, None, None]
        fill = rs.randint(0, 256, x.shape, dtype=np.uint8) if op.value == "random" else op.value
        return erase_batch(x, mask, fill)
    return step


def _center_step(op, h, w):
    th, tw = op.size
    if th > h or tw > w:
        raise ConfigError(f"{op.where}: crop {th}x{tw} is larger than the image {h}x{w}; lower size")
    top, left = (h - th) // 2, (w - tw) // 2
    return lambda x, rs, pos, epoch: x[:, top:top + th, left:left + tw]


def unsupported(name: str, where: str, train: bool) -> ConfigError:
    """The error for an op with no batch version (or a random op in an eval list)."""
    if train or name not in BATCH_OPS:
        return ConfigError(f"{where}: {name} has no batched version (DataLoader.batched is true); batched "
                           f"ops: {', '.join(BATCH_OPS)}; remove {name} or set DataLoader.batched false")
    return ConfigError(f"{where}: {name} is random, and batched evaluation applies no augmentation "
                       f"(ops allowed there: {', '.join(EVAL_OPS)}); remove {name} or set DataLoader.batched false")


def check_op_names(op_list: list | None, where: str, train: bool = True) -> None:
    """ConfigError for the first op of a config list that the batched path cannot run (names only)."""
    allowed = BATCH_OPS if train else EVAL_OPS
    for i, entry in enumerate(op_list or []):
        name = entry if isinstance(entry, str) else next(iter(entry)) if isinstance(entry, dict) and entry else None
        if name is not None and name not in allowed:
            raise unsupported(str(name), f"{where}[{i}]", train)


def check_config_ops(cfg: dict) -> None:
    """:func:`check_op_names` on ``Transforms.train`` and ``Transforms.eval`` (before data is decoded)."""
    tc = cfg.get("Transforms") or {}
    check_op_names(tc.get("train"), "Transforms.train", True)
    check_op_names(tc.get("eval"), "Transforms.eval", False)


class BatchPipeline:
    """The ops of a per-sample :class:`~utils.data.transforms.Compose` as batch steps, then normalization.

    Args:
        compose: the split's pipeline (its ops and resolved mean/std).
        image_hw, channels: size and channels of the stored images.
        train: False = eval (deterministic ops only).
        where: config location for errors (``Transforms.train``).
        n_samples: samples of the split (the fixed half of the alternating flip).
        seed: seed of that fixed half (``Global.seed``).
    """

    def __init__(self, compose: Compose, image_hw: tuple[int, int], channels: int, train: bool = True,
                 where: str = "Transforms.train", n_samples: int = 0, seed: int = 0) -> None:
        h, w = image_hw
        self.steps: list[Step] = []
        allowed = BATCH_OPS if train else EVAL_OPS
        for op in compose.ops:
            name = type(op).__name__
            if name not in allowed:
                raise unsupported(name, where, train)
            if isinstance(op, RandomCrop):
                op.check(h, w)
                self.steps.append(_crop_step(op, h, w))
                h, w = op.size
            elif isinstance(op, (RandomHorizontalFlip, RandomVerticalFlip)):
                axis = 2 if isinstance(op, RandomHorizontalFlip) else 1
                self.steps.append(_flip_step(op, axis, n_samples, seed))
            elif isinstance(op, Cutout):
                op.check(h, w)
                self.steps.append(_cutout_step(op, h, w))
            elif isinstance(op, RandomErasing):
                self.steps.append(_erasing_step(op, h, w))
            elif isinstance(op, CenterCrop):
                self.steps.append(_center_step(op, h, w))
                h, w = op.size
            elif isinstance(op, Resize) and op.size != (h, w):
                raise ConfigError(f"{where}: Resize to {op.size[0]}x{op.size[1]} of {h}x{w} images has no batched "
                                  f"version (only Resize to the images' own size, a no-op); resize the files "
                                  f"beforehand, drop Data.image_size, or set DataLoader.batched false")
        self.out_hw = (h, w)
        self.uses_epoch = any(getattr(s, "uses_epoch", False) for s in self.steps)
        self.scale, self.offset = norm_coeffs(compose.mean, compose.std, channels)

    def __call__(self, x: np.ndarray, rs: np.random.RandomState | None, positions: np.ndarray,
                 epoch: int = 0) -> np.ndarray:
        """uint8 N x H x W x C (a fresh array: steps work in place) -> normalized float32 N x C x h x w."""
        for step in self.steps:
            x = step(x, rs, positions, epoch)
        return to_float_batch(x, self.scale, self.offset)


class BatchedLoader:
    """Batches of an in-memory uint8 image array: ``[float32 N x C x H x W, int64 N x 1]``.

    Args:
        images: uint8 M x H x W x C array holding the samples (and maybe others).
        index: int positions in ``images`` of this split's samples, in order.
        labels: int64 labels of the split's samples.
        pipeline: the :class:`BatchPipeline` applied to every batch.
        batch_size, shuffle, drop_last: as ``paddle.io.DataLoader``'s.
        train: True = a permutation (when ``shuffle``) and random augmentations drawn per pass;
            False = ordered, complete, deterministic (eval).
        to_tensor: yield paddle tensors (True) or numpy arrays.
    """

    def __init__(self, images: np.ndarray, index: np.ndarray, labels: np.ndarray, pipeline: BatchPipeline,
                 batch_size: int, shuffle: bool = False, drop_last: bool = False, train: bool = False,
                 to_tensor: bool = True) -> None:
        self.images = images
        self.index = np.asarray(index, np.int64)
        self.labels = np.asarray(labels, np.int64)
        self.pipeline = pipeline
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last, self.train = bool(shuffle), bool(drop_last), bool(train)
        self.to_tensor = to_tensor
        self.epoch = 0
        self._passes = 0
        self._epoch_given = False
        self._warned = False

    def set_epoch(self, epoch: int) -> None:
        """The 0-based global epoch of the next pass: the only source of the epoch (alternating flip)."""
        self.epoch = int(epoch)
        self._epoch_given = True

    def __len__(self) -> int:
        n = len(self.index)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list]:
        if not self.train:
            return self._batches(None, 0)
        if self.pipeline.uses_epoch and self._passes and not self._epoch_given and not self._warned:
            self._warned = True
            warnings.warn(f"BatchedLoader: pass {self._passes + 1} started without set_epoch(): the alternating "
                          f"flip repeats epoch {self.epoch}'s flips; call set_epoch(epoch) before every epoch",
                          RuntimeWarning, stacklevel=2)
        self._passes += 1
        self._epoch_given = False
        # One draw from the global RNG, which the trainer reseeds with seed + epoch before the epoch.
        rs = np.random.RandomState(int(np.random.randint(0, 2**31 - 1)))
        return self._batches(rs, self.epoch)

    def _batches(self, rs, epoch):
        n = len(self.index)
        order = rs.permutation(n) if rs is not None and self.shuffle else np.arange(n)
        bs = self.batch_size
        for b in range(len(self)):
            pos = order[b * bs:(b + 1) * bs]
            x = self.pipeline(self.images[self.index[pos]], rs, pos, epoch)
            y = self.labels[pos].reshape(-1, 1)
            if self.to_tensor:
                import paddle  # deferred: this module stays paddle-free for the config and the tools

                yield [paddle.to_tensor(x), paddle.to_tensor(y)]
            else:
                yield [x, y]

    def __repr__(self) -> str:
        kind = "train" if self.train else "eval"
        return f"BatchedLoader({kind}: {len(self.index)} samples, batch {self.batch_size}, {len(self)} batches)"


def image_array(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 M x H x W x C array, positions of ``dataset``'s samples in it) of an image dataset.

    Array stores are used as they are (no copy); other stores are decoded once into a new array.
    """
    store = dataset.store
    if isinstance(store, ArrayStore) and isinstance(store.images, np.ndarray):
        images, index = store.images, dataset.indices
    else:
        raws = [dataset.raw(i)[0] for i in range(len(dataset))]
        shapes = sorted({"x".join(map(str, r.shape[:2])) for r in raws})
        if len(shapes) > 1:
            raise DataError(f"DataLoader.batched holds the images as one array, but the {dataset.split} split has "
                            f"images of {len(shapes)} sizes ({', '.join(shapes[:4])}): resize the files to one "
                            f"size, or set DataLoader.batched false")
        images, index = np.stack(raws), np.arange(len(dataset))
    if images.ndim == 3:
        images = images[..., None]
    return images, index


def batched_loader(dataset, batch_size: int, train: bool, shuffle: bool = False, drop_last: bool = False,
                   seed: int = 0, where: str | None = None, to_tensor: bool = True) -> BatchedLoader:
    """A :class:`BatchedLoader` over an image dataset (``ImageDataset``) with its own transform's ops."""
    if not hasattr(dataset, "store"):
        raise ConfigError("DataLoader.batched is for image datasets; this data is a table: "
                          "set DataLoader.batched false")
    images, index = image_array(dataset)
    where = where or ("Transforms.train" if train else "Transforms.eval")
    pipeline = BatchPipeline(dataset.transform, images.shape[1:3], images.shape[3], train, where, len(index), seed)
    return BatchedLoader(images, index, dataset.labels, pipeline, batch_size, shuffle and train,
                         drop_last and train, train, to_tensor)


def refuse_alternate(transform: Compose | None) -> None:
    """ConfigError when a per-sample pipeline asks for the alternating flip (batched loaders only)."""
    for op in getattr(transform, "ops", ()):
        if getattr(op, "mode", None) == "alternate":
            raise ConfigError(f"{op.where}: mode alternate needs the batched loader, which knows each image's "
                              f"position and the epoch: set DataLoader.batched true, or use mode random")
