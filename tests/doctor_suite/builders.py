"""Defective data written the way a user writes it, and user models registered the documented way.

Image data are scikit-learn's digits (8x8, 0..16 scaled to 0..255) written as PNG files: a
PaddleClas file list (``images/*.png`` + ``train_list.txt``/``val_list.txt``) or a class-folder
tree (``train/<class>/*.png``, ``val/<class>/*.png``). Tabular data is a CSV read by a regression
source registered with ``@register_dataset(..., task="regression")``. Each builder takes the case's
work directory and returns the ``-o`` overrides that point the run at what it wrote.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import paddle.nn as nn
from PIL import Image

from models import list_models, register_model
from utils.data.registry import TableSource, list_datasets, register_dataset

VAL_SHARE = 0.2  # as configs/_base_/digits.yml carves it


def digits() -> tuple[np.ndarray, np.ndarray]:
    """Digits as uint8 N x 8 x 8 (0..255) and int64 labels, in scikit-learn's order."""
    from sklearn.datasets import load_digits  # scikit-learn is slow to import: only when a builder runs

    d = load_digits()
    return np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8), d.target.astype(np.int64)


def split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded 80/20 train/val split of range(n)."""
    idx = np.random.default_rng(seed).permutation(n)
    k = int(round(n * VAL_SHARE))
    return idx[k:], idx[:k]


def _png(img: np.ndarray, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(img, mode="L").save(path, format="PNG")


def write_filelist(root: str, images: np.ndarray, train: list[tuple[int, int]], val: list[tuple[int, int]]) -> list[str]:
    """Write every image once and the two lists of (image index, label); return the overrides."""
    for i in {i for i, _ in train} | {i for i, _ in val}:
        _png(images[i], os.path.join(root, "images", f"{i:05d}.png"))
    for name, rows in (("train_list.txt", train), ("val_list.txt", val)):
        with open(os.path.join(root, name), "w", encoding="utf-8") as f:
            f.writelines(f"images/{i:05d}.png {lab}\n" for i, lab in rows)
    return ["Data.name=filelist", f"Data.data_dir={root}"]


def write_folders(root: str, images: np.ndarray, labels: np.ndarray, train: np.ndarray, val: np.ndarray) -> list[str]:
    """Write ``train/<digit>/`` and ``val/<digit>/`` folders; return the overrides."""
    for part, idx in (("train", train), ("val", val)):
        for i in idx:
            _png(images[i], os.path.join(root, part, str(labels[i]), f"{i:05d}.png"))
    return ["Data.name=folder", f"Data.data_dir={root}"]


# -- data defects ------------------------------------------------------------------------------

def labels_permuted(root: str) -> list[str]:
    """train_list.txt written after sorting the image names but not the labels: labels permuted."""
    images, labels = digits()
    tr, va = split(len(labels))
    shuffled = np.random.default_rng(1).permutation(labels[tr])
    return write_filelist(root, images, list(zip(tr, shuffled)), list(zip(va, labels[va])))


def sorted_unshuffled(root: str) -> list[str]:
    """train_list.txt sorted by class (as `ls */*.png` gives it) and DataLoader.shuffle=false."""
    images, labels = digits()
    tr, va = split(len(labels))
    tr = tr[np.argsort(labels[tr], kind="stable")]
    return [*write_filelist(root, images, [(i, labels[i]) for i in tr], [(i, labels[i]) for i in va]),
            "DataLoader.shuffle=false"]


def class_relabelled(root: str) -> list[str]:
    """The training list maps digit 3 to label 5 (a label map off by one entry); val is right."""
    images, labels = digits()
    tr, va = split(len(labels))
    train = [(i, 5 if labels[i] == 3 else labels[i]) for i in tr]
    return write_filelist(root, images, train, [(i, labels[i]) for i in va])


def constant_images(root: str) -> list[str]:
    """An export bug wrote every image as one flat grey level; the folders (labels) are right."""
    images, labels = digits()
    flat = np.full_like(images, 128)
    tr, va = split(len(labels))
    return write_folders(root, flat, labels, tr, va)


def val_overlaps_train(root: str) -> list[str]:
    """val/ made by copying 360 images of train/ (the real held-out images never written)."""
    images, labels = digits()
    tr, _ = split(len(labels))
    return write_folders(root, images, labels, tr, tr[: int(round(len(labels) * VAL_SHARE))])


# -- tabular (a user's regression source over a CSV) -----------------------------------------------

# Tabular sources take no Data.data_dir: a user's source names its file itself (here: the last one written).
CSV_PATH = {"path": ""}


def _register_csv_source() -> None:
    if "diabetes_csv" in list_datasets():
        return

    @register_dataset("diabetes_csv", task="regression")
    def diabetes_csv(cfg: dict) -> TableSource:
        """table.csv: a header, ten feature columns, the target last."""
        path = CSV_PATH["path"]
        with open(path, encoding="utf-8") as f:
            names = f.readline().strip().split(",")[:-1]
        table = np.genfromtxt(path, delimiter=",", skip_header=1)  # an empty cell reads as NaN
        return TableSource(table[:, :-1], table[:, -1], names)


def _write_csv(root: str, transform) -> list[str]:
    from sklearn.datasets import load_diabetes  # slow import: only when a builder runs

    _register_csv_source()
    d = load_diabetes(scaled=False)
    x, y = transform(d.data.astype(np.float64), d.target.astype(np.float64))
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "table.csv"), "w", encoding="utf-8") as f:
        f.write(",".join([*d.feature_names, "target"]) + "\n")
        for row, t in zip(x, y):
            f.write(",".join("" if np.isnan(v) else f"{v:g}" for v in [*row, t]) + "\n")
    CSV_PATH["path"] = os.path.join(root, "table.csv")
    return ["Data.name=diabetes_csv"]


def csv_missing_cell(root: str) -> list[str]:
    """One empty cell (a missing blood-pressure reading) in the CSV."""
    def t(x, y):
        x = x.copy()
        x[17, 3] = np.nan
        return x, y
    return _write_csv(root, t)


def csv_targets_shifted(root: str) -> list[str]:
    """The target column pasted in after sorting it: every row has another patient's target."""
    return _write_csv(root, lambda x, y: (x, np.random.default_rng(3).permutation(y)))


# -- user models (models/<file>.py + @register_model, as the README shows) ------------------------

class SoftmaxMLP(nn.Layer):
    """An MLP whose forward ends in softmax, as copied from an inference script."""

    def __init__(self, num_classes: int, in_features: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x):
        return nn.functional.softmax(self.net(x), axis=-1)


class LinearMLP(nn.Layer):
    """Three Linear layers and no activation between them: a linear model."""

    def __init__(self, num_classes: int, in_features: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 128), nn.Linear(128, 64),
                                 nn.Linear(64, num_classes))

    def forward(self, x):
        return self.net(x)


class ReluLogits(nn.Layer):
    """The activation loop also wraps the last layer: ReLU on the logits."""

    def __init__(self, num_classes: int, in_features: int):
        super().__init__()
        layers, width = [nn.Flatten()], in_features
        for h in (128, 64, num_classes):
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class DeadBranch(nn.Layer):
    """Two branches; forward computes both but feeds only the first to the head (the sum was forgotten)."""

    def __init__(self, num_classes: int, in_features: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.a = nn.Sequential(nn.Linear(in_features, 64), nn.ReLU())
        self.b = nn.Sequential(nn.Linear(in_features, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.flatten(x)
        a, b = self.a(x), self.b(x)
        h = a + 0 * b  # meant a + b
        return self.head(h)


class HeadThenBN(nn.Layer):
    """BatchNorm placed after the classifier: the logits are re-standardized every batch."""

    def __init__(self, num_classes: int, in_features: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 128), nn.ReLU(), nn.Linear(128, num_classes),
                                 nn.BatchNorm1D(num_classes))

    def forward(self, x):
        return self.net(x)


class DeepSigmoid(nn.Layer):
    """Ten sigmoid layers of 64 units, no normalization: the 1990s recipe."""

    def __init__(self, num_classes: int, in_features: int):
        super().__init__()
        layers, width = [nn.Flatten()], in_features
        for _ in range(10):
            layers += [nn.Linear(width, 64), nn.Sigmoid()]
            width = 64
        self.net = nn.Sequential(*layers, nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)


USER_MODELS = {"user_softmax_mlp": SoftmaxMLP, "user_linear_mlp": LinearMLP, "user_relu_logits": ReluLogits,
               "user_dead_branch": DeadBranch, "user_head_then_bn": HeadThenBN, "user_deep_sigmoid": DeepSigmoid}


def _factory(name: str, cls: type):
    def factory(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Layer:
        return cls(num_classes, in_channels * image_size * image_size)
    factory.__name__ = name
    return factory


def user_model(name: str):
    """A builder that registers ``name`` (once per process) and selects it with Arch.name."""
    def build(root: str) -> list[str]:
        if name not in list_models():
            register_model(_factory(name, USER_MODELS[name]))
        return [f"Arch.name={name}"]
    return build



@contextlib.contextmanager
def registries_restored() -> Iterator[None]:
    """Undo the registrations a case makes on leaving: in a pytest session other tests compare the
    model and dataset registries (and configs/README.md built from them) with what the project ships.
    There is no public unregister, so the two registry dicts are restored directly."""
    import models.registry as model_registry
    import utils.data.registry as data_registry

    saved = [(r, dict(r)) for r in (model_registry._REGISTRY, data_registry._REGISTRY)]
    try:
        yield
    finally:
        for reg, copy in saved:
            reg.clear()
            reg.update(copy)
