"""The decoded-image cache of image-file sources under ``DataLoader.batched``.

Decoding 50,000 CIFAR JPEGs takes ~5 s on this 2-core machine; reading the same pixels back from one
``.npy`` file (150 MB) takes ~0.1 s. :func:`cached_image_store` decodes the files once with the
preload path (:func:`~utils.data.storage.image_store` with ``preload=True``) and keeps the uint8
N x H x W x C array and the labels in ``<root>/.cache/<name>-<digest>.npy`` (+ ``.labels.npy``).

The digest covers every file's path relative to ``root``, byte size and modification time
(nanoseconds), in order: an added, removed, renamed or rewritten file gives another digest, so a
stale cache is never read (it is deleted when the new one is written). A cache that does not load
or does not match the scan (count, labels, dtype) is decoded again. When ``<root>/.cache`` cannot
be written (read-only data, a file of that name) the images are decoded on every run and one note
says why. Hidden entries (``.cache``) are skipped by the folder scan, so the cache never becomes
a class or an image.
"""
from __future__ import annotations

import glob
import hashlib
import os
import sys

import numpy as np

from utils.data.storage import ArrayStore, image_store
from utils.errors import DataError

CACHE_DIR = ".cache"


class PathArrayStore(ArrayStore):
    """Images in one uint8 array that remember the files they were decoded from."""

    def __init__(self, images: np.ndarray, paths: list[str]) -> None:
        super().__init__(images)
        self.paths = paths

    def path(self, i: int) -> str:
        """File of image i."""
        return self.paths[i]


def files_digest(paths: list[str], root: str) -> str:
    """16 hex digits over (path relative to root, size, mtime_ns) of every file, in order."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        rel = os.path.relpath(p, root)
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def cache_paths(root: str, name: str, digest: str) -> tuple[str, str]:
    """(images .npy, labels .npy) of the cache of ``name`` with ``digest`` under ``root``."""
    base = os.path.join(root, CACHE_DIR, f"{name}-{digest}")
    return base + ".npy", base + ".labels.npy"


def _load(images_path, labels_path, labels):
    """The cached array when it loads and matches the scan, else None."""
    if not (os.path.isfile(images_path) and os.path.isfile(labels_path)):
        return None
    try:
        images = np.load(images_path, allow_pickle=False)
        cached_labels = np.load(labels_path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # torn or foreign file: decode again (and overwrite it)
    if (images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3)
            or len(images) != len(labels) or not np.array_equal(cached_labels, labels)):
        return None
    return images


def _save(path, array):
    tmp = f"{path}.{os.getpid()}.tmp"  # whole or nothing: written beside, then renamed
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write(images_path, labels_path, images, labels, name):
    """Write the cache; True on success, False (one note printed) when the directory is not writable."""
    folder = os.path.dirname(images_path)
    try:
        os.makedirs(folder, exist_ok=True)
        _save(labels_path, labels)
        _save(images_path, images)
    except OSError as e:
        print(f"note: cannot write the decoded-image cache in {folder} ({e.strerror or e}): the images are "
              f"decoded again on every run; make {os.path.dirname(folder)} writable to keep them", file=sys.stderr,
              flush=True)
        return False
    keep = {os.path.basename(images_path), os.path.basename(labels_path)}
    for old in glob.glob(os.path.join(glob.escape(folder), f"{glob.escape(name)}-*.npy")):
        if os.path.basename(old) not in keep:  # caches of an older file list: never read again
            try:
                os.remove(old)
            except OSError:
                pass
    return True


def cached_image_store(paths: list[str], labels: np.ndarray, root: str,
                       name: str = "folder") -> tuple[PathArrayStore, int, bool]:
    """The decoded images of ``paths`` as one array, from ``<root>/.cache`` when it is up to date.

    Args:
        paths: image files, in sample order.
        labels: their int64 labels (stored beside the pixels and checked on reuse).
        root: the data directory the cache lives in.
        name: file-name prefix of the cache (the source's name).

    Returns:
        (store, channels, uniform=True) like :func:`~utils.data.storage.image_store`.

    Raises:
        DataError: the images do not all have one size (a batch is one array), or a file is unreadable.
    """
    labels = np.asarray(labels, np.int64)
    images_path, labels_path = cache_paths(root, name, files_digest(paths, root))
    images = _load(images_path, labels_path, labels)
    if images is None:
        store, _, uniform = image_store(paths, True)
        if not uniform:
            sizes = sorted({f"{a.shape[0]}x{a.shape[1]}" for a in store.images})
            raise DataError(f"DataLoader.batched holds the images as one array, but {root} has images of "
                            f"{len(sizes)} sizes ({', '.join(sizes[:4])}{', ...' if len(sizes) > 4 else ''}): "
                            f"resize the files to one size, or set DataLoader.batched false")
        images = store.images
        if _write(images_path, labels_path, images, labels, name):
            print(f"cached {len(images)} decoded images ({images.nbytes / 1e6:.0f} MB) in {images_path}; "
                  f"later runs read them instead of decoding", file=sys.stderr, flush=True)
    return PathArrayStore(images, paths), int(images.shape[3]), True
