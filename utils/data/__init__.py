"""Datasets and loaders built from the ``Data``, ``DataLoader`` and ``Transforms`` sections.

Sources (``Data.name``):

* ``digits``: scikit-learn's 8x8 digits (1,797 images, values 0..16 scaled to 0..255), 1 channel,
  10 classes, embedded (no download). No val/test set: val is carved from train.
* ``cifar10`` / ``cifar100``: the official *python version* tar.gz, read directly with
  tarfile + pickle into uint8 arrays. ``Data.data_dir`` is the .tar.gz file, a folder holding
  it under its official name, or null for Paddle's cache (~/.cache/paddle/dataset/cifar/).
  Val is carved from train (45k/5k at ``val_split: 0.1``); the official test set is ``test``.
* ``folder``: ``data_dir/train/<class>/*`` (+ optional ``data_dir/val/<class>/``,
  ``data_dir/test/<class>/``) or ``data_dir/<class>/*``. Classes = sorted folder names;
  JPEG/PNG/BMP files, searched recursively inside each class folder.
* ``filelist``: PaddleClas/PaddleX lists ``relative/path.jpg label_id`` relative to data_dir;
  optional ``label_file`` with one class name per line or ``id name`` per line.
* ``diabetes`` (``Global.task: regression``): scikit-learn's diabetes table, embedded: 442
  samples x 10 raw features, target 25..346. A :class:`TabularDataset`; see :func:`_build_tabular`.

Decisions (documented for users in the config help):

* Channels of folder/filelist images: 1 (grayscale) when *every* image is grayscale
  (PIL modes L, LA, 1, I, I;16, F), otherwise 3 (RGB; alpha is dropped, palettes expanded).
* Preloading: with ``Data.preload: auto`` folder/filelist images are decoded once into
  memory when their estimated decoded size is below 1 GB (50,000 32x32 JPEGs: ~150 MB,
  decoded in a few seconds), else decoded at every access. Preloading decodes every file,
  so an unreadable image is reported when the dataset is built; without preloading the
  headers of all files are checked at build (up to 100,000 files) and decoding errors at
  load time name the file too.
* ``Data.image_size``: when set, a ``Resize`` to image_size x image_size is prepended to
  ``Transforms.train`` and ``Transforms.eval`` unless that list already has a Resize (the
  user's Resize then decides). ``bundle.image_size`` is the side of the images the pipeline
  actually outputs (an int, or (h, w) when not square).
* Images of different native sizes need a Resize in both lists (or ``Data.image_size``).
* ``Data.classes`` keeps classes in the order given (names or indices) and relabels them
  0..k-1; it applies to every split. ``Data.fraction`` subsamples the training split only
  (after the val carve), so val stays comparable across fractions.
* mean/std: ``Transforms.mean/std`` lists are used as given; ``auto`` computes them on the
  training split (after class/fraction selection); null = dataset default (CIFAR) or computed.
  Computed values are rounded to 4 decimals and are the ones the pipeline uses. They are
  resolved even when no op normalizes, so the run's config records concrete values;
  non-preloaded data is measured on a fixed subset of at most 2,000 training images.
"""
import dataclasses
import gc
import os
import pickle
import random
import re
import shutil
import tarfile
import threading
import warnings
from typing import Optional

import numpy as np
from PIL import Image

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*ccache.*")
    import paddle

from utils.data.transforms import Compose, build_transforms, has_op
from utils.errors import ConfigError, DataError, UserError, did_you_mean

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
GRAY_MODES = ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F")
PRELOAD_LIMIT_BYTES = 1 << 30      # 'auto' preloads below this decoded size
HEADER_SCAN_LIMIT = 100_000        # check every header at build up to this many files
MEAN_STD_MAX_SAMPLES = 2_000       # images used to compute mean/std of non-preloaded data

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclasses.dataclass(frozen=True)
class _CifarSpec:
    title: str
    file: str
    url: str          # Paddle's mirror (what paddle.vision.datasets downloads)
    md5: str
    official_url: str
    mean: tuple
    std: tuple


CIFAR = {
    "cifar10": _CifarSpec("CIFAR-10", "cifar-10-python.tar.gz",
                          "https://dataset.bj.bcebos.com/cifar/cifar-10-python.tar.gz",
                          "c58f30108f718f92721af3b95e74349a",
                          "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                          (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": _CifarSpec("CIFAR-100", "cifar-100-python.tar.gz",
                           "https://dataset.bj.bcebos.com/cifar/cifar-100-python.tar.gz",
                           "eb9058c3a382ffc7106e4002c42a8d85",
                           "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                           (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


# --------------------------------------------------------------------------- storage

class ArrayStore:
    """Images held in one uint8 array N x H x W x C."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def get(self, i):
        return self.images[i]

    def path(self, i):
        return None


class ListStore:
    """Decoded images of different sizes: a list of HWC uint8 arrays."""

    def __init__(self, images, paths=None):
        self.images = images
        self.paths = paths

    def __len__(self):
        return len(self.images)

    def get(self, i):
        return self.images[i]

    def path(self, i):
        return self.paths[i] if self.paths is not None else None


class FileStore:
    """Image files decoded with PIL at every access (``mode``: 'RGB' or 'L')."""

    def __init__(self, paths, mode):
        self.paths = paths
        self.mode = mode

    def __len__(self):
        return len(self.paths)

    def get(self, i):
        return decode_image(self.paths[i], self.mode)

    def path(self, i):
        return self.paths[i]


class _PathStore(ArrayStore):
    """A preloaded ArrayStore that remembers the files it came from."""

    def __init__(self, images, paths):
        super().__init__(images)
        self.paths = paths

    def path(self, i):
        return self.paths[i]


def _unreadable(path, err):
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DataError(f"unreadable image {path}: {reason}; remove or replace the file")


def decode_image(path, mode=None):
    """Decode one file to an HWC uint8 array; mode None = 'L' for grayscale files else 'RGB'."""
    try:
        with Image.open(path) as im:
            if mode is None:
                mode = "L" if im.mode in GRAY_MODES else "RGB"
            if im.mode != mode:
                im = im.convert(mode)
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def _header(path):
    """(height, width, is_gray) from the file header; DataError when unreadable."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            return h, w, im.mode in GRAY_MODES
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from None


def _image_store(paths, preload):
    """Build the store of a list of image files.

    Returns (store, channels, uniform) where uniform says all images share one size.
    """
    n = len(paths)
    if preload == "auto":
        step = max(1, n // 256)
        heads = [_header(p) for p in paths[::step]]
        est = np.mean([h * w * (1 if g else 3) for h, w, g in heads]) * n
        preload = bool(est < PRELOAD_LIMIT_BYTES)
    if preload:
        # Serial on purpose: small JPEGs decode in ~0.1 ms, mostly under the GIL, and a thread
        # pool measured slower (50,000 CIFAR JPEGs: ~5 s serial).
        arrays = [decode_image(p) for p in paths]
        channels = 1 if all(a.shape[2] == 1 for a in arrays) else 3
        if channels == 3:
            arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
        shapes = {a.shape for a in arrays}
        if len(shapes) == 1:
            return _PathStore(np.stack(arrays), paths), channels, True
        return ListStore(arrays, paths), channels, False
    if n <= HEADER_SCAN_LIMIT:
        heads = [_header(p) for p in paths]
    else:
        heads = [_header(p) for p in paths[:: max(1, n // 2000)]]
    channels = 1 if all(g for _, _, g in heads) else 3
    uniform = len({(h, w) for h, w, _ in heads}) == 1
    return FileStore(paths, "L" if channels == 1 else "RGB"), channels, uniform


# --------------------------------------------------------------------------- dataset

class ImageDataset(paddle.io.Dataset):
    """A split: yields ``(float32 [C,H,W], int64 [1])``.

    ``raw(i)`` gives the untransformed ``(uint8 HWC, label)``; ``labels`` is the numpy
    int64 label array; ``path(i)`` the image file (None for array-backed sources).
    """

    def __init__(self, store, indices, labels, transform=None, class_names=None, split="train"):
        super().__init__()
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform if transform is not None else Compose([])
        self.class_names = list(class_names) if class_names is not None else None
        self.split = split

    def __len__(self):
        return len(self.indices)

    def _image(self, i):
        img = self.store.get(self.indices[i])
        return img[:, :, None] if img.ndim == 2 else img

    def __getitem__(self, i):
        return self.transform(self._image(i)), np.array([self.labels[i]], dtype=np.int64)

    def raw(self, i):
        """Untransformed (uint8 HWC array, int label) of sample i."""
        return self._image(i), int(self.labels[i])

    def path(self, i):
        """File of sample i, or None when the source is an array (CIFAR, digits)."""
        return self.store.path(self.indices[i])

    @property
    def preloaded(self):
        return not isinstance(self.store, FileStore)

    def subset(self, positions, split=None):
        """A new dataset with samples ``positions`` (indices into this one)."""
        positions = np.asarray(positions, dtype=np.int64)
        return ImageDataset(self.store, self.indices[positions], self.labels[positions],
                            self.transform, self.class_names, split or self.split)

    def with_transform(self, transform):
        """The same samples with another transform (e.g. the eval pipeline on train)."""
        return ImageDataset(self.store, self.indices, self.labels, transform, self.class_names, self.split)

    def iter_raw_chunks(self, chunk=2048):
        """Yield uint8 arrays N x H x W x C (array stores) or lists of HWC arrays."""
        if isinstance(self.store, ArrayStore):
            for s in range(0, len(self), chunk):
                yield self.store.images[self.indices[s:s + chunk]]
        else:
            for s in range(0, len(self), chunk):
                yield [self._image(i) for i in range(s, min(s + chunk, len(self)))]

    def __repr__(self):
        return f"ImageDataset({self.split}: {len(self)} samples, transform={self.transform})"


@dataclasses.dataclass
class DataBundle:
    """What :func:`build_datasets` returns; mean/std are the values the pipelines use."""
    train: ImageDataset
    val: Optional[ImageDataset]
    test: Optional[ImageDataset]
    num_classes: int
    class_names: list
    in_channels: int
    image_size: object
    mean: list
    std: list
    name: str = ""
    train_transform: Optional[Compose] = None
    eval_transform: Optional[Compose] = None
    # Regression (tabular data): the network sees num_features x 1 x 1 inputs (in_channels =
    # num_features, image_size = 1) and one output; target_mean/std are the normalization of the
    # target (None = not normalized): prediction * target_std + target_mean is in target units.
    task: str = "classification"
    num_features: Optional[int] = None
    target_mean: Optional[float] = None
    target_std: Optional[float] = None

    def summary(self):
        """One line: source, split sizes, classes, input shape, normalization."""
        size = self.image_size if isinstance(self.image_size, tuple) else (self.image_size, self.image_size)
        parts = [f"{len(self.train)} train"]
        parts.append(f"{len(self.val)} val" if self.val is not None else "no val")
        if self.test is not None:
            parts.append(f"{len(self.test)} test")
        return (f"{self.name}: {' / '.join(parts)}, {self.num_classes} classes, "
                f"{self.in_channels}x{size[0]}x{size[1]}, mean {self.mean} std {self.std}")


# --------------------------------------------------------------------------- statistics

def compute_mean_std(data, max_samples=None, seed=0):
    """Per-channel mean and std in [0,1] units (population std over all pixels).

    Args:
        data: an :class:`ImageDataset` (its raw images), a uint8 array N x H x W x C
            (or N x H x W), a list of HWC arrays, or a float array already in [0,1].
        max_samples: use at most this many images (a fixed-seed random subset).
        seed: seed of that subset.

    Returns:
        (mean, std): lists of floats, one per channel.
    """
    if isinstance(data, ImageDataset):
        ds = data
        if max_samples is not None and len(ds) > max_samples:
            pick = np.sort(np.random.RandomState(seed).choice(len(ds), max_samples, replace=False))
            ds = ds.subset(pick)
        chunks = ds.iter_raw_chunks()
    else:
        if isinstance(data, np.ndarray) and data.ndim == 3 and data.dtype == np.uint8:
            data = data[..., None]
        if max_samples is not None and len(data) > max_samples:
            pick = np.sort(np.random.RandomState(seed).choice(len(data), max_samples, replace=False))
            data = data[pick] if isinstance(data, np.ndarray) else [data[i] for i in pick]
        chunks = [data]
    hist = None
    sums = sq = None
    count = 0
    for chunk in chunks:
        arrays = [chunk] if isinstance(chunk, np.ndarray) else [a if a.ndim == 3 else a[:, :, None] for a in chunk]
        for a in arrays:
            if a.size == 0:
                continue
            c = a.shape[-1]
            if a.dtype == np.uint8:
                if hist is None:
                    hist = np.zeros((c, 256), np.float64)
                for k in range(c):
                    hist[k] += np.bincount(a[..., k].ravel(), minlength=256)
            else:
                x = a.reshape(-1, c).astype(np.float64)
                if sums is None:
                    sums, sq = np.zeros(c), np.zeros(c)
                sums += x.sum(0)
                sq += (x * x).sum(0)
                count += x.shape[0]
    if hist is None and sums is None:
        raise DataError("compute_mean_std: no images")
    if hist is not None:
        v = np.arange(256) / 255.0
        n = hist.sum(1)
        mean = (hist * v).sum(1) / n
        var = (hist * v * v).sum(1) / n - mean ** 2
    else:
        mean = sums / count
        var = sq / count - mean ** 2
    return [float(m) for m in mean], [float(s) for s in np.sqrt(np.maximum(var, 0.0))]


# --------------------------------------------------------------------------- splits

def _stratified_counts(counts, fraction):
    """Per-class picks summing to ceil(total * fraction), as scikit-learn sizes a test split
    (1,797 digits at 0.2: 360), spread over classes by largest remainder."""
    quota = counts * fraction
    base = np.floor(quota).astype(np.int64)
    rest = int(np.ceil(counts.sum() * fraction - 1e-9)) - int(base.sum())
    if rest > 0:
        order = np.argsort(-(quota - base), kind="stable")
        base[order[:rest]] += 1
    return base


def stratified_split(labels, fraction, seed):
    """Split sample positions into (rest, picked) with ``fraction`` of each class picked.

    Every class keeps at least one sample in ``rest``; deterministic for a given seed.
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    classes, counts = np.unique(labels, return_counts=True)
    picks = np.minimum(_stratified_counts(counts, fraction), counts - 1)
    picked = []
    for c, k in zip(classes, picks):
        idx = np.flatnonzero(labels == c)
        picked.append(rng.permutation(idx)[:k])
    picked = np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), picked)
    return rest, picked


def stratified_subsample(labels, fraction, seed):
    """Positions of a stratified ``fraction`` of the samples (at least one per class)."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    classes, counts = np.unique(labels, return_counts=True)
    keep = np.minimum(np.maximum(_stratified_counts(counts, fraction), 1), counts)
    out = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, keep)]
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


# --------------------------------------------------------------------------- sources

@dataclasses.dataclass
class _Source:
    store: object
    splits: dict            # split -> (indices into store, labels)
    class_names: list
    channels: int
    uniform: bool = True
    mean: Optional[tuple] = None
    std: Optional[tuple] = None
    where: str = ""


def _load_digits(cfg):
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int64)
    return _Source(ArrayStore(images), {"train": (np.arange(len(labels)), labels)},
                   [str(i) for i in range(10)], 1, where="digits (scikit-learn)")


class TabularDataset(paddle.io.Dataset):
    """A regression split of a feature table: yields ``(float32 [F, 1, 1], float32 [1])``.

    ``features`` and ``targets`` are kept in their original units; each item is normalized on
    the way out (features with the per-feature ``mean``/``std``, the target with
    ``target_mean``/``target_std``; std 1 and mean 0 = unchanged). ``targets`` is the target
    array in original units.
    """

    def __init__(self, features, targets, mean, std, target_mean=0.0, target_std=1.0, split="train"):
        super().__init__()
        self.features = np.asarray(features, np.float64)
        self.targets = np.asarray(targets, np.float64)
        self.mean = np.asarray(mean, np.float64)
        self.std = np.asarray(std, np.float64)
        self.target_mean = float(target_mean)
        self.target_std = float(target_std)
        self.split = split
        self.class_names = None

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = ((self.features[i] - self.mean) / self.std).astype(np.float32)
        y = np.array([(self.targets[i] - self.target_mean) / self.target_std], np.float32)
        return x.reshape(-1, 1, 1), y

    def subset(self, positions, split=None):
        positions = np.asarray(positions, dtype=np.int64)
        return TabularDataset(self.features[positions], self.targets[positions], self.mean, self.std,
                              self.target_mean, self.target_std, split or self.split)

    def __repr__(self):
        return f"TabularDataset({self.split}: {len(self)} samples x {self.features.shape[1]} features)"


def _load_diabetes():
    """scikit-learn's diabetes table: 442 patients x 10 raw features (age, sex, bmi, bp, s1-s6),
    target a disease-progression score 25..346 (mean 152, std 77)."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    return d.data.astype(np.float64), d.target.astype(np.float64), list(d.feature_names)


TABULAR = {"diabetes": _load_diabetes}


def random_split(n, fraction, seed):
    """(rest, picked) sample positions with ceil(n * fraction) picked at random (seeded), both sorted."""
    k = int(np.ceil(n * fraction - 1e-9))
    perm = np.random.RandomState(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _build_tabular(cfg):
    """The :class:`DataBundle` of a regression table (``Data.name`` in :data:`TABULAR`).

    Val is a seeded random ``Data.val_split`` of the samples (stratification needs classes);
    ``Data.fraction`` subsamples train after that. Features are standardized per feature when
    ``Transforms.train``/``eval`` hold ``Normalize`` (the default), with ``Transforms.mean``/``std``
    as lists of one value per feature in the table's units (null or 'auto': computed on train);
    the target with ``Data.normalize_target`` (``Data.target_mean``/``target_std``, null: computed
    on train). Computed statistics are rounded to 6 significant decimals and are the ones used.
    """
    dc, tc = cfg["Data"], cfg["Transforms"]
    name = dc["name"]
    if not 0 <= dc["val_split"] < 1:
        raise ConfigError(f"Data.val_split must be in [0, 1), got {dc['val_split']}")
    if not 0 < dc["fraction"] <= 1:
        raise ConfigError(f"Data.fraction must be in (0, 1], got {dc['fraction']}")
    for key in ("classes", "image_size", "data_dir"):
        if dc[key] is not None:
            raise ConfigError(f"Data.{key} does not apply to the tabular dataset {name}: set it to null")
    if dc["num_classes"] not in (None, 1):
        raise ConfigError(f"Data.num_classes is {dc['num_classes']} but {name} is a regression table with one "
                          f"target: set it to null")
    features, targets, feature_names = TABULAR[name]()
    nf = features.shape[1]
    ops = {}
    for key in ("train", "eval"):
        names = [next(iter(op)) if isinstance(op, dict) else str(op) for op in (tc[key] or [])]
        bad = [n for n in names if n != "Normalize"]
        if bad:
            raise ConfigError(f"Transforms.{key}: {bad[0]} does not apply to the tabular dataset {name} "
                              f"(its samples are feature vectors): only Normalize, or an empty list")
        ops[key] = bool(names)
    if ops["train"] != ops["eval"]:
        raise ConfigError("Transforms.train and Transforms.eval must both have Normalize or both not "
                          f"(the tabular dataset {name} standardizes features in both or neither)")
    rest, picked = random_split(len(targets), dc["val_split"], dc["split_seed"])
    if dc["val_split"] > 0 and len(picked) == 0:
        raise DataError(f"{name}: Data.val_split {dc['val_split']} leaves no validation sample")
    if dc["fraction"] < 1:
        keep = np.sort(np.random.RandomState(dc["split_seed"] + 1).permutation(len(rest))[
            :max(1, int(np.ceil(len(rest) * dc["fraction"] - 1e-9)))])
        rest = rest[keep]
    x_train, y_train = features[rest], targets[rest]

    def stat(key, computed):
        v = tc[key]
        if v is None or v == "auto":
            return [round(float(c), 6) for c in computed]
        if isinstance(v, str):
            raise ConfigError(f"Transforms.{key}: expected a list of per-feature values or 'auto', got {v!r}")
        if len(v) not in (1, nf) or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v):
            raise ConfigError(f"Transforms.{key}: {v!r} must list 1 or {nf} numbers (one per feature of {name})")
        return [float(c) for c in v] * (nf if len(v) == 1 else 1)

    mean = stat("mean", x_train.mean(axis=0))
    std = stat("std", np.maximum(x_train.std(axis=0), 1e-6))
    if any(v <= 0 for v in std):
        raise ConfigError(f"Transforms.std: {std!r}: values must be > 0")
    use_mean, use_std = (mean, std) if ops["train"] else ([0.0] * nf, [1.0] * nf)

    t_mean = t_std = None
    if dc["normalize_target"]:
        t_mean = dc["target_mean"] if dc["target_mean"] is not None else round(float(y_train.mean()), 6)
        t_std = dc["target_std"] if dc["target_std"] is not None else round(float(max(y_train.std(), 1e-6)), 6)
        if t_std <= 0:
            raise ConfigError(f"Data.target_std must be > 0, got {t_std}")
    elif dc["target_mean"] is not None or dc["target_std"] is not None:
        raise ConfigError("Data.target_mean/target_std are set but Data.normalize_target is false: "
                          "set normalize_target: true or the statistics to null")

    def make(pos, split):
        return TabularDataset(features[pos], targets[pos], use_mean, use_std,
                              t_mean if t_mean is not None else 0.0, t_std if t_std is not None else 1.0, split)

    return DataBundle(train=make(rest, "train"), val=make(picked, "val") if len(picked) else None, test=None,
                      num_classes=1, class_names=[], in_channels=nf, image_size=1, mean=mean, std=std,
                      name=name, task="regression", num_features=nf, target_mean=t_mean, target_std=t_std)


def _cifar_path(cfg, spec):
    data_dir = cfg["Data"]["data_dir"]
    if data_dir is None:
        from paddle.dataset.common import DATA_HOME
        path = os.path.join(DATA_HOME, "cifar", spec.file)
    elif os.path.isdir(data_dir):
        path = os.path.join(data_dir, spec.file)
    else:
        path = data_dir
    if os.path.isfile(path):
        return path
    if cfg["Data"]["download"]:
        return _download_cifar(spec, path)
    raise DataError(f"{spec.title} archive not found: {path}; download the python version from "
                    f"{spec.official_url} to that path (keep it as .tar.gz), set Data.data_dir to where it is, "
                    f"or pass -o Data.download=true")


def _download_cifar(spec, target):
    """Download with Paddle into its cache (~/.cache/paddle/dataset/cifar/), copy to target."""
    from paddle.dataset.common import download

    try:
        got = download(spec.url, "cifar", spec.md5)
    except Exception as e:  # network errors come in many types
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise DataError(f"downloading {spec.url} failed ({reason}); download {spec.official_url} by hand "
                        f"to {target}") from None
    if os.path.abspath(got) != os.path.abspath(target):
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        shutil.copyfile(got, target)
    return target


def _pget(d, key):
    """Value of a CIFAR pickle key, stored as bytes (official files) or str."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _read_cifar(path, name):
    spec = CIFAR[name]
    hint = f"expected the python version of {spec.title} ({spec.official_url})"
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{path}: not a readable tar archive ({e}); {hint}") from None
    parts = {"train": [], "test": []}
    names = None
    label_key = "labels" if name == "cifar10" else "fine_labels"
    with tf:
        try:
            members = sorted((m for m in tf.getmembers() if m.isfile()), key=lambda m: m.name)
            for m in members:
                base = os.path.basename(m.name)
                if name == "cifar10":
                    split = "train" if "data_batch" in base else "test" if "test_batch" in base else None
                    is_meta = base == "batches.meta"
                else:
                    split = base if base in ("train", "test") else None
                    is_meta = base == "meta"
                if split is None and not is_meta:
                    continue
                d = pickle.load(tf.extractfile(m), encoding="bytes")
                if is_meta:
                    raw = _pget(d, "label_names" if name == "cifar10" else "fine_label_names")
                    if raw is not None:
                        names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
                    continue
                data, labels = _pget(d, "data"), _pget(d, label_key)
                if data is None or labels is None:
                    raise DataError(f"{path}: member {m.name} has no '{label_key}' entry; {hint}")
                parts[split].append((np.asarray(data, dtype=np.uint8), np.asarray(labels, dtype=np.int64)))
        except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError) as e:
            raise DataError(f"{path}: corrupt archive ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                            f"download it again ({spec.official_url})") from None
    if not parts["train"]:
        other = "cifar100" if name == "cifar10" else "cifar10"
        raise DataError(f"{path}: no {spec.title} training batches found; {hint} "
                        f"(for {CIFAR[other].title} use -o Data.name={other})")
    num_classes = 10 if name == "cifar10" else 100
    if names is None or len(names) != num_classes:
        names = CIFAR10_NAMES if name == "cifar10" else [str(i) for i in range(100)]

    def stack(items):
        data = np.concatenate([d for d, _ in items])
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{path}: image rows have {data.shape[-1]} values, expected 3072 (32x32x3); {hint}")
        return (np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)),
                np.concatenate([lab for _, lab in items]))

    train_x, train_y = stack(parts["train"])
    arrays, splits = [train_x], {"train": (np.arange(len(train_y)), train_y)}
    if parts["test"]:
        test_x, test_y = stack(parts["test"])
        arrays.append(test_x)
        splits["test"] = (np.arange(len(test_y)) + len(train_y), test_y)
    store = ArrayStore(np.concatenate(arrays) if len(arrays) > 1 else train_x)
    for split, (_, labels) in splits.items():
        _check_range(labels, num_classes, f"{path} ({split})")
    return _Source(store, splits, names, 3, mean=spec.mean, std=spec.std, where=path)


def _load_cifar(cfg, name):
    return _read_cifar(_cifar_path(cfg, CIFAR[name]), name)


def _data_dir(cfg):
    d = cfg["Data"]["data_dir"]
    if d is None:
        raise ConfigError(f"Data.data_dir is required for Data.name={cfg['Data']['name']}: "
                          f"set it to the dataset root (-o Data.data_dir=PATH)")
    if not os.path.isdir(d):
        what = "file" if os.path.exists(d) else "path"
        raise DataError(f"data directory not found: {d} (Data.data_dir; this {what} is not a directory)")
    return d


def list_images(folder):
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(filenames)
                if not f.startswith(".") and f.lower().endswith(IMAGE_EXTS)]
    return out


def _load_folder(cfg):
    root = _data_dir(cfg)
    train_dir = os.path.join(root, "train")
    split_dirs = {"train": train_dir if os.path.isdir(train_dir) else root}
    if split_dirs["train"] == train_dir:
        for s in ("val", "test"):
            if os.path.isdir(os.path.join(root, s)):
                split_dirs[s] = os.path.join(root, s)
    tdir = split_dirs["train"]
    classes = sorted(d for d in os.listdir(tdir) if not d.startswith(".") and os.path.isdir(os.path.join(tdir, d)))
    if not classes:
        raise DataError(f"no class folders in {tdir}: expected {tdir}/<class>/*.jpg "
                        f"(or {os.path.join(root, 'train')}/<class>/ with optional val/ and test/)")
    paths, splits = [], {}
    for split, sdir in split_dirs.items():
        found = sorted(d for d in os.listdir(sdir) if not d.startswith(".") and os.path.isdir(os.path.join(sdir, d)))
        unknown = [d for d in found if d not in classes]
        if unknown:
            raise DataError(f"{os.path.join(sdir, unknown[0])}: class folder not in {tdir}"
                            f"{did_you_mean(unknown[0], classes)}; classes: {', '.join(classes)}")
        start, labels = len(paths), []
        for c in found:
            files = list_images(os.path.join(sdir, c))
            if not files:
                raise DataError(f"empty class folder {os.path.join(sdir, c)}: no {'/'.join(IMAGE_EXTS)} images; "
                                f"add images or remove the folder")
            paths += files
            labels += [classes.index(c)] * len(files)
        if not labels:
            raise DataError(f"no images in {sdir}: expected {sdir}/<class>/*.jpg")
        splits[split] = (np.arange(start, len(paths)), np.asarray(labels, np.int64))
    store, channels, uniform = _image_store(paths, cfg["Data"]["preload"])
    return _Source(store, splits, classes, channels, uniform, where=root)


_ID_NAME = re.compile(r"^(\d+)\s+(\S.*)$")


def _read_label_file(path):
    """Class names from 'name' or 'id name' lines."""
    with open(path, encoding="utf-8") as f:
        lines = [(i + 1, ln.strip()) for i, ln in enumerate(f) if ln.strip()]
    if not lines:
        raise DataError(f"label file {path} is empty: one class name per line, or 'id name' per line")
    matches = [_ID_NAME.match(t) for _, t in lines]
    if not all(matches):
        return [t for _, t in lines]
    names = {}
    for (lineno, _), m in zip(lines, matches):
        cid = int(m.group(1))
        if cid in names:
            raise DataError(f"{path}:{lineno}: class id {cid} appears twice")
        names[cid] = m.group(2).strip()
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(max(names) + 1)) - set(names))
        raise DataError(f"{path}: class ids must be 0..{len(names) - 1} without gaps, id {missing[0]} is missing")
    return [names[i] for i in range(len(names))]


def _read_list(list_path, root):
    """[(lineno, image path, label)] of a 'relative/path.jpg label' file."""
    out = []
    with open(list_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
                raise DataError(f"{list_path}:{lineno}: malformed line {text[:80]!r}: expected 'relative/path.jpg label_id'")
            rel, label = parts[0].strip(), int(parts[1])
            path = os.path.join(root, rel)
            if not os.path.isfile(path):
                raise DataError(f"{list_path}:{lineno}: image not found: {path}; fix the line or add the file")
            out.append((lineno, path, label))
    if not out:
        raise DataError(f"{list_path}: no samples (lines 'relative/path.jpg label_id')")
    return out


def _load_filelist(cfg):
    root = _data_dir(cfg)
    dc = cfg["Data"]
    train_list = os.path.join(root, dc["train_list"])
    if not os.path.isfile(train_list):
        raise DataError(f"train list not found: {train_list} (Data.train_list, relative to Data.data_dir)")
    lists = {"train": (train_list, _read_list(train_list, root))}
    val_list = os.path.join(root, dc["val_list"])
    if os.path.isfile(val_list):
        lists["val"] = (val_list, _read_list(val_list, root))
    label_file = os.path.join(root, dc["label_file"]) if dc["label_file"] else None
    if label_file and os.path.isfile(label_file):
        names = _read_label_file(label_file)
        limit, source = len(names), f"{len(names)} classes in {label_file}"
    else:
        top = max(lab for _, (_, rows) in lists.items() for _, _, lab in rows) + 1
        limit = max(top, dc["num_classes"] or 0)
        names = [str(i) for i in range(limit)]
        source = "Data.num_classes" if dc["num_classes"] else "no label file"
        limit = dc["num_classes"] or limit
    paths, splits = [], {}
    for split, (lpath, rows) in lists.items():
        for lineno, _, lab in rows:
            if not 0 <= lab < limit:
                raise DataError(f"{lpath}:{lineno}: label {lab} outside [0, {limit}) ({source})")
        start = len(paths)
        paths += [p for _, p, _ in rows]
        splits[split] = (np.arange(start, len(paths)), np.asarray([lab for _, _, lab in rows], np.int64))
    store, channels, uniform = _image_store(paths, dc["preload"])
    return _Source(store, splits, names, channels, uniform, where=root)


def _check_range(labels, n, where):
    bad = np.flatnonzero((labels < 0) | (labels >= n))
    if len(bad):
        raise DataError(f"{where}: label {int(labels[bad[0]])} of sample {int(bad[0])} outside [0, {n})")


# --------------------------------------------------------------------------- build

def _select_classes(sel, names):
    """Data.classes -> list of original class indices, in the order given."""
    if not sel:
        raise ConfigError("Data.classes is empty: list class names or indices, or set it to null for all")
    shown = ", ".join(names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
    keep = []
    for c in sel:
        if isinstance(c, bool) or not isinstance(c, (int, str)):
            raise ConfigError(f"Data.classes: {c!r} is neither a class name nor an index; valid classes: {shown}")
        if isinstance(c, str) and c in names:
            idx = names.index(c)
        elif isinstance(c, int) or (isinstance(c, str) and c.isdigit()):
            idx = int(c)
            if not 0 <= idx < len(names):
                raise ConfigError(f"Data.classes: index {idx} outside [0, {len(names)}); valid classes: {shown}")
        else:
            raise ConfigError(f"Data.classes: unknown class {c!r}{did_you_mean(c, names)}; valid classes: {shown}")
        if idx in keep:
            raise ConfigError(f"Data.classes: class {names[idx]!r} is listed twice")
        keep.append(idx)
    return keep


def _resolve_stat(value, key, computed, default):
    if isinstance(value, str):
        if value != "auto":
            raise ConfigError(f"Transforms.{key}: expected a list of per-channel values or 'auto', got {value!r}")
        return computed()
    if value is None:
        return list(default) if default is not None else computed()
    return value


def build_datasets(cfg):
    """Build train/val/test datasets from ``cfg['Data']`` and ``cfg['Transforms']``.

    Returns:
        :class:`DataBundle`.

    Raises:
        DataError: missing/unreadable/inconsistent data. ConfigError: bad Data/Transforms values.
    """
    dc = cfg["Data"]
    name = dc["name"]
    if name in TABULAR:
        return _build_tabular(cfg)
    if not 0 <= dc["val_split"] < 1:
        raise ConfigError(f"Data.val_split must be in [0, 1), got {dc['val_split']}")
    if not 0 < dc["fraction"] <= 1:
        raise ConfigError(f"Data.fraction must be in (0, 1], got {dc['fraction']}")
    if dc["image_size"] is not None and dc["image_size"] <= 0:
        raise ConfigError(f"Data.image_size must be a positive int or null, got {dc['image_size']}")
    if dc["num_classes"] is not None and dc["num_classes"] <= 0:
        raise ConfigError(f"Data.num_classes must be a positive int or null, got {dc['num_classes']}")

    if name == "digits":
        src = _load_digits(cfg)
    elif name in CIFAR:
        src = _load_cifar(cfg, name)
    elif name == "folder":
        src = _load_folder(cfg)
    elif name == "filelist":
        src = _load_filelist(cfg)
    else:  # the schema's choices make this unreachable
        raise ConfigError(f"Data.name: unknown dataset {name!r}")

    names = list(src.class_names)
    n_data = len(names)
    for split, (_, labels) in src.splits.items():
        _check_range(labels, n_data, f"{src.where} ({split})")

    # classes subset, relabelled 0..k-1 in the order given
    splits = dict(src.splits)
    if dc["classes"] is not None:
        keep = _select_classes(dc["classes"], names)
        remap = np.full(n_data, -1, np.int64)
        remap[keep] = np.arange(len(keep))
        for split, (idx, labels) in list(splits.items()):
            mask = remap[labels] >= 0
            splits[split] = (idx[mask], remap[labels[mask]])
        names = [names[i] for i in keep]
    num_classes = len(names)
    want = dc["num_classes"]
    if want is not None and want != num_classes and not (dc["classes"] is not None and want == n_data):
        raise ConfigError(f"Data.num_classes is {want} but the data has {num_classes} classes ({src.where}): "
                          f"set Data.num_classes to {num_classes} or null")

    def make(split, transform=None):
        if split not in splits:
            return None
        idx, labels = splits[split]
        if len(idx) == 0:
            raise DataError(f"{src.where}: the {split} split is empty after Data.classes selection")
        return ImageDataset(src.store, idx, labels, transform, names, split)

    train, val, test = make("train"), make("val"), make("test")
    if val is None and dc["val_split"] > 0:
        rest, picked = stratified_split(train.labels, dc["val_split"], dc["split_seed"])
        if len(picked) == 0:
            raise DataError(f"{src.where}: Data.val_split {dc['val_split']} of {len(train)} training samples "
                            f"leaves no validation sample; raise val_split or add data")
        train, val = train.subset(rest, "train"), train.subset(picked, "val")
    if dc["fraction"] < 1:
        train = train.subset(stratified_subsample(train.labels, dc["fraction"], dc["split_seed"] + 1))

    # transforms
    tc = cfg["Transforms"]
    train_ops, eval_ops = list(tc["train"] or []), list(tc["eval"] or [])
    if dc["image_size"]:
        resize = {"Resize": {"size": dc["image_size"]}}
        if not has_op(train_ops, "Resize"):
            train_ops.insert(0, resize)
        if not has_op(eval_ops, "Resize"):
            eval_ops.insert(0, resize)
    if not src.uniform and not (has_op(train_ops, "Resize") and has_op(eval_ops, "Resize")):
        raise DataError(f"images in {src.where} have different sizes: set Data.image_size "
                        f"(e.g. -o Data.image_size=64) or start Transforms.train and Transforms.eval with a Resize")

    stats = {}

    def computed():
        if "v" not in stats:
            limit = None if train.preloaded else MEAN_STD_MAX_SAMPLES
            m, s = compute_mean_std(train, max_samples=limit, seed=dc["split_seed"])
            stats["v"] = ([round(x, 4) for x in m], [max(round(x, 4), 1e-4) for x in s])
        return stats["v"]

    # Always resolved (also without Normalize) so the run's config records concrete values.
    mean = _resolve_stat(tc["mean"], "mean", lambda: computed()[0], src.mean)
    std = _resolve_stat(tc["std"], "std", lambda: computed()[1], src.std)
    for key, vals in (("mean", mean), ("std", std)):
        if not isinstance(vals, list) or len(vals) not in (1, src.channels):
            raise ConfigError(f"Transforms.{key}: {vals!r} must list 1 or {src.channels} values "
                              f"(the images have {src.channels} channel(s))")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in vals):
            raise ConfigError(f"Transforms.{key}: {vals!r}: values are in [0,1] units (pixel/255)")
    if any(v <= 0 for v in std):
        raise ConfigError(f"Transforms.std: {std!r}: values must be > 0")
    mean = [float(v) for v in mean]
    std = [float(v) for v in std]
    train_t = build_transforms(train_ops, mean, std, "Transforms.train", src.channels)
    eval_t = build_transforms(eval_ops, mean, std, "Transforms.eval", src.channels)

    # output shape: run both pipelines on one image without touching the global RNG
    img, _ = train.raw(0)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        out_train, out_eval = train_t(img), eval_t(img)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    if out_train.shape != out_eval.shape:
        raise ConfigError(f"Transforms.train gives {'x'.join(map(str, out_train.shape))} images but Transforms.eval "
                          f"gives {'x'.join(map(str, out_eval.shape))}: the model needs one input size "
                          f"(add a CenterCrop or Resize to Transforms.eval)")
    c, h, w = out_eval.shape
    train.transform = train_t
    for ds in (val, test):
        if ds is not None:
            ds.transform = eval_t
    return DataBundle(train=train, val=val, test=test, num_classes=num_classes, class_names=names,
                      in_channels=c, image_size=h if h == w else (h, w), mean=mean, std=std, name=name,
                      train_transform=train_t, eval_transform=eval_t)


# --------------------------------------------------------------------------- loaders

def _check_loader_cfg(lc):
    for key in ("batch_size", "eval_batch_size"):
        if lc[key] <= 0:
            raise ConfigError(f"DataLoader.{key} must be > 0, got {lc[key]}")
    if lc["num_workers"] < 0:
        raise ConfigError(f"DataLoader.num_workers must be >= 0, got {lc['num_workers']}")


# Paddle pitfall: with num_workers > 0 an exception in a worker is re-raised in the loader's
# background thread (printed with a traceback by threading.excepthook) while the main thread
# only gets "SystemError: (Fatal) Blocking queue is killed". The hook below keeps UserErrors
# from that thread and the iterator re-raises them in the main thread as themselves.
_worker_errors = []
_worker_errors_seen = False
_hook_installed = False


def _install_worker_error_hook():
    global _hook_installed
    if _hook_installed:
        return
    previous = threading.excepthook

    def hook(args):
        if isinstance(args.exc_value, UserError) and str(args.exc_value).startswith("DataLoader worker("):
            lines = [ln for ln in str(args.exc_value).strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else ""
            prefix = f"{type(args.exc_value).__module__}.{type(args.exc_value).__name__}: "
            _worker_errors.append(type(args.exc_value)(last[len(prefix):] if last.startswith(prefix) else last))
            return
        previous(args)

    threading.excepthook = hook
    _hook_installed = True


class _CheckedIter:
    """Iterator wrapper that turns a dead worker's UserError back into that error."""

    def __init__(self, it):
        self._it = it

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._it)

    def _shutdown(self):
        global _worker_errors_seen
        _worker_errors_seen = True
        it, self._it = self._it, None
        thread = getattr(it, "_thread", None)
        if thread is not None:
            thread.join(timeout=10)  # lets the hook record the worker's error
        # Stop the workers now. Left to the garbage collector, the dead iterator can be
        # finalized inside a worker forked for the next epoch, which then deadlocks.
        try:
            it._try_shutdown_all()
        except Exception:
            pass

    def __next__(self):
        if self._it is None:
            raise StopIteration
        try:
            return next(self._it)
        except SystemError:
            self._shutdown()
            err = _worker_errors.pop() if _worker_errors else None
            _worker_errors.clear()
            if err is None:
                raise
        # Raised outside the except block (no __context__ pointing at Paddle's iterator) and
        # without a frame -> exception reference cycle, so nothing waits for the GC.
        try:
            raise err
        finally:
            del err


class DataLoader(paddle.io.DataLoader):
    """paddle.io.DataLoader whose worker processes report data errors as DataError."""

    def __iter__(self):
        if self.num_workers > 0:
            if _worker_errors_seen:
                gc.collect()  # finalize dead iterators here, not in the workers about to be forked
            return _CheckedIter(super().__iter__())
        return super().__iter__()


def _loader(dataset, batch_size, shuffle, drop_last, lc, batch_sampler=None):
    if lc["num_workers"] > 0:
        _install_worker_error_hook()
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=lc["num_workers"],
                          use_shared_memory=lc["use_shared_memory"], return_list=True)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=lc["num_workers"], use_shared_memory=lc["use_shared_memory"],
                      return_list=True)


def build_loaders(cfg, bundle, rank=0, world=1):
    """(train_loader, val_loader) over ``bundle``; val_loader is None when there is no val split.

    Shuffling uses Paddle's RandomSampler, which draws from ``np.random``; workers are seeded
    from ``np.random`` when each epoch's iterator starts. Reseeding numpy before an epoch
    therefore repeats its order and augmentations.

    Data parallel (``world`` > 1, this process being ``rank``): hapi's ``fit`` shards only a
    ``Dataset`` it is given, so the shard is made here. The train loader draws from a
    ``DistributedBatchSampler`` (``DataLoader.batch_size`` images per rank and step; it pads the
    set with up to ``world - 1`` repeated samples so every rank runs the same number of steps, and
    shuffles with its own ``RandomState(epoch)``: the trainer sets that epoch, see
    ``utils.addons.distributed.EpochShuffle``). The val loader covers this rank's contiguous block of the
    validation set (:func:`shard_range`; no padding, so no sample is counted twice).
    """
    lc = cfg["DataLoader"]
    _check_loader_cfg(lc)
    per_rank = -(-len(bundle.train) // world)
    if lc["drop_last"] and per_rank < lc["batch_size"]:
        shard = f" per process ({world} processes)" if world > 1 else ""
        raise ConfigError(f"DataLoader.drop_last with batch_size {lc['batch_size']} and {per_rank} "
                          f"training samples{shard} gives no batch: lower batch_size or set drop_last false")
    if world > 1:
        sampler = paddle.io.DistributedBatchSampler(bundle.train, batch_size=lc["batch_size"], num_replicas=world,
                                                    rank=rank, shuffle=lc["shuffle"], drop_last=lc["drop_last"])
        train = _loader(bundle.train, lc["batch_size"], lc["shuffle"], lc["drop_last"], lc, batch_sampler=sampler)
    else:
        train = _loader(bundle.train, lc["batch_size"], lc["shuffle"], lc["drop_last"], lc)
    val = None
    if bundle.val is not None:
        dataset = bundle.val
        if world > 1:
            lo, hi = shard_range(len(dataset), rank, world)
            dataset = dataset.subset(np.arange(lo, hi))
        val = build_eval_loader(cfg, dataset)
    return train, val


def shard_range(n, rank, world):
    """[lo, hi) of rank ``rank``'s contiguous block of ``n`` samples; blocks cover 0..n once, sizes differ by <= 1."""
    return n * rank // world, n * (rank + 1) // world


def build_eval_loader(cfg, dataset):
    """An ordered, complete loader over ``dataset`` with ``DataLoader.eval_batch_size``."""
    lc = cfg["DataLoader"]
    _check_loader_cfg(lc)
    return _loader(dataset, lc["eval_batch_size"], False, False, lc)
