"""Small synthetic datasets in the real on-disk formats, for tests and quickstarts.

Images are class-dependent so a model can learn them: each class has its own colour and
stripe orientation/frequency; every image adds a random shift of the stripes, a brightness
jitter and pixel noise.

* :func:`make_cifar_tarball`: the python-version archive of CIFAR-10 or CIFAR-100.
* :func:`make_class_folders`: ``root/<class>/NNNN.<fmt>``.
* :func:`make_filelist`: images plus PaddleClas/PaddleX ``train_list.txt`` / ``val_list.txt`` /
  ``labels.txt``.
"""
from __future__ import annotations

import colorsys
import io
import os
import pickle
import tarfile
from collections.abc import Sequence

import numpy as np
from PIL import Image

from utils.data.sources.cifar import CIFAR10_NAMES


def class_images(labels: Sequence[int] | np.ndarray, num_classes: int, size: int = 32, channels: int = 3,
                 seed: int = 0) -> np.ndarray:
    """uint8 images N x size x size x channels whose content depends on the label."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.RandomState(seed)
    n = len(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.empty((n, size, size, channels), np.uint8)
    golden = 0.6180339887
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        hue = (c * golden) % 1.0
        colour = np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.9), np.float32) * 255
        if channels == 1:
            colour = np.array([40 + 175 * ((c * golden) % 1.0)], np.float32)
        angle = np.pi * c / max(num_classes, 1)
        freq = 2 + (c % 4)
        phase = rng.uniform(0, 2 * np.pi, size=len(idx)).astype(np.float32)
        proj = (np.cos(angle) * xx + np.sin(angle) * yy)[None] * (2 * np.pi * freq)
        stripes = 0.5 + 0.5 * np.sin(proj + phase[:, None, None])            # [k, H, W]
        bright = rng.uniform(0.8, 1.2, size=(len(idx), 1, 1, 1)).astype(np.float32)
        img = (0.45 + 0.55 * stripes[..., None]) * colour * bright
        img += rng.normal(0, 12, size=img.shape).astype(np.float32)
        out[idx] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _balanced_labels(n, num_classes, rng):
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    return labels.astype(np.int64)


def _add_pickle(tf, name, obj):
    data = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tf.addfile(info, io.BytesIO(data))


def make_cifar_tarball(path: str, n_train: int = 500, n_test: int = 100, num_classes: int = 10, seed: int = 0) -> str:
    """Write a CIFAR python-version tar.gz with synthetic images; return ``path``.

    num_classes=10: ``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta``
    (keys b'data' N x 3072 uint8 in R,G,B planes, b'labels', b'filenames', b'batch_label').
    num_classes=100: ``cifar-100-python/train``, ``test``, ``meta`` (b'fine_labels',
    b'coarse_labels', b'fine_label_names', b'coarse_label_names').
    """
    if num_classes not in (10, 100):
        raise ValueError("num_classes must be 10 or 100")
    rng = np.random.RandomState(seed)
    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = _balanced_labels(n, num_classes, rng)
        imgs = class_images(labels, num_classes, 32, 3, seed=rng.randint(1 << 30))
        splits[split] = (imgs.transpose(0, 3, 1, 2).reshape(n, 3072).copy(), labels)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        if num_classes == 10:
            top = "cifar-10-batches-py"
            data, labels = splits["train"]
            for b, chunk in enumerate(np.array_split(np.arange(len(labels)), 5), 1):
                _add_pickle(tf, f"{top}/data_batch_{b}", {
                    b"batch_label": f"training batch {b} of 5".encode(),
                    b"labels": [int(v) for v in labels[chunk]],
                    b"data": data[chunk],
                    b"filenames": [f"synthetic_{i}.png".encode() for i in chunk]})
            data, labels = splits["test"]
            _add_pickle(tf, f"{top}/test_batch", {
                b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in labels],
                b"data": data, b"filenames": [f"synthetic_test_{i}.png".encode() for i in range(len(labels))]})
            _add_pickle(tf, f"{top}/batches.meta", {
                b"num_cases_per_batch": max(1, n_train // 5), b"label_names": [n.encode() for n in CIFAR10_NAMES],
                b"num_vis": 3072})
        else:
            top = "cifar-100-python"
            for split in ("train", "test"):
                data, labels = splits[split]
                _add_pickle(tf, f"{top}/{split}", {
                    b"filenames": [f"synthetic_{split}_{i}.png".encode() for i in range(len(labels))],
                    b"batch_label": f"{split}ing batch 1 of 1".encode(),
                    b"fine_labels": [int(v) for v in labels],
                    b"coarse_labels": [int(v) // 5 for v in labels],
                    b"data": data})
            _add_pickle(tf, f"{top}/meta", {
                b"fine_label_names": [f"class_{i:02d}".encode() for i in range(100)],
                b"coarse_label_names": [f"super_{i:02d}".encode() for i in range(20)]})
    return path


def _save(img, path, fmt):
    arr = img[:, :, 0] if img.shape[2] == 1 else img
    im = Image.fromarray(arr)
    if fmt in ("jpg", "jpeg"):
        im.save(path, format="JPEG", quality=90)
    else:
        im.save(path, format={"png": "PNG", "bmp": "BMP"}[fmt])


def make_class_folders(root: str, classes: int | list[str], n_per_class: int | list[int], size: int = 32,
                       fmt: str = "jpg", gray: bool = False, seed: int = 0) -> list[str]:
    """Write ``root/<class>/NNNN.<fmt>`` images; return the list of class names.

    Args:
        classes: class names, or an int k for names class0..class{k-1}.
        n_per_class: images per class (int) or a list with one count per class.
        fmt: jpg, png or bmp. gray: write 1-channel (L) images.
    """
    if isinstance(classes, int):
        classes = [f"class{i}" for i in range(classes)]
    counts = n_per_class if isinstance(n_per_class, (list, tuple)) else [n_per_class] * len(classes)
    labels = np.concatenate([np.full(k, c) for c, k in enumerate(counts)]).astype(np.int64)
    imgs = class_images(labels, len(classes), size, 1 if gray else 3, seed=seed)
    pos = 0
    for c, name in enumerate(classes):
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        for j in range(counts[c]):
            _save(imgs[pos], os.path.join(d, f"{j:04d}.{fmt}"), fmt)
            pos += 1
    return list(classes)


def make_filelist(root: str, classes: int | list[str] = 3, n_train_per_class: int = 10, n_val_per_class: int = 0,
                  size: int = 32, fmt: str = "jpg", label_file: str | None = "names", seed: int = 0) -> dict[str, str | None]:
    """Write images under ``root/images/`` plus train_list.txt (and val_list.txt, labels.txt).

    Args:
        classes: class names or an int k.
        n_val_per_class: 0 = no val_list.txt.
        label_file: 'names' (one name per line, PaddleX 2), 'id_name' ('id name' per line,
            PaddleClas / PaddleX 3) or None (no labels.txt).

    Returns:
        dict with the written paths: train_list, val_list (or None), label_file (or None).
    """
    if isinstance(classes, int):
        classes = [f"class{i}" for i in range(classes)]
    k = len(classes)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    out = {"train_list": None, "val_list": None, "label_file": None}
    for split, n in (("train", n_train_per_class), ("val", n_val_per_class)):
        if n <= 0:
            continue
        labels = np.repeat(np.arange(k), n)
        imgs = class_images(labels, k, size, 3, seed=seed + (split == "val"))
        lines = []
        for i, (img, lab) in enumerate(zip(imgs, labels)):
            rel = f"images/{split}_{classes[lab]}_{i:04d}.{fmt}"
            _save(img, os.path.join(root, rel), fmt)
            lines.append(f"{rel} {int(lab)}\n")
        list_path = os.path.join(root, f"{split}_list.txt")
        with open(list_path, "w", encoding="utf-8") as f:
            f.writelines(lines)
        out[f"{split}_list"] = list_path
    if label_file:
        path = os.path.join(root, "labels.txt")
        with open(path, "w", encoding="utf-8") as f:
            for i, name in enumerate(classes):
                f.write(f"{i} {name}\n" if label_file == "id_name" else f"{name}\n")
        out["label_file"] = path
    return out
