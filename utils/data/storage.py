"""Where a dataset's pixels live: image files, their headers, and the stores that hold images.

A store maps a sample index to an HWC uint8 array (``get``) and to its file (``path``, None for
array-backed sources). :func:`image_store` picks the store of a list of image files: decoded
into memory once (``Data.preload``) or decoded at every access.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from utils.errors import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
GRAY_MODES = ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F")
PRELOAD_LIMIT_BYTES = 1 << 30      # 'auto' preloads below this decoded size
HEADER_SCAN_LIMIT = 100_000        # check every header at build up to this many files


class ArrayStore:
    """Images held in one uint8 array N x H x W x C."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def get(self, i: int) -> np.ndarray:
        """Image i (HWC uint8)."""
        return self.images[i]

    def path(self, i: int) -> str | None:
        """None: array images have no file."""
        return None


class ListStore:
    """Decoded images of different sizes: a list of HWC uint8 arrays."""

    def __init__(self, images: list[np.ndarray], paths: list[str] | None = None) -> None:
        self.images = images
        self.paths = paths

    def __len__(self) -> int:
        return len(self.images)

    def get(self, i: int) -> np.ndarray:
        """Image i (HWC uint8)."""
        return self.images[i]

    def path(self, i: int) -> str | None:
        """File of image i, or None when the images were given without paths."""
        return self.paths[i] if self.paths is not None else None


class FileStore:
    """Image files decoded with PIL at every access (``mode``: 'RGB' or 'L')."""

    def __init__(self, paths: list[str], mode: str) -> None:
        self.paths = paths
        self.mode = mode

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, i: int) -> np.ndarray:
        """Image i, decoded now (HWC uint8)."""
        return decode_image(self.paths[i], self.mode)

    def path(self, i: int) -> str:
        """File of image i."""
        return self.paths[i]


class _PathStore(ArrayStore):
    """A preloaded ArrayStore that remembers the files it came from."""

    def __init__(self, images, paths):
        super().__init__(images)
        self.paths = paths

    def path(self, i):
        return self.paths[i]


Store = ArrayStore | ListStore | FileStore


def _unreadable(path, err):
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DataError(f"unreadable image {path}: {reason}; remove or replace the file")


def decode_image(path: str, mode: str | None = None) -> np.ndarray:
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


def image_header(path: str) -> tuple[int, int, bool]:
    """(height, width, is_gray) from the file header; DataError when unreadable."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            return h, w, im.mode in GRAY_MODES
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _unreadable(path, e) from None


def image_store(paths: list[str], preload: bool | str) -> tuple[Store, int, bool]:
    """Build the store of a list of image files.

    Returns (store, channels, uniform) where uniform says all images share one size.
    """
    n = len(paths)
    if preload == "auto":
        step = max(1, n // 256)
        heads = [image_header(p) for p in paths[::step]]
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
        heads = [image_header(p) for p in paths]
    else:
        heads = [image_header(p) for p in paths[:: max(1, n // 2000)]]
    channels = 1 if all(g for _, _, g in heads) else 3
    uniform = len({(h, w) for h, w, _ in heads}) == 1
    return FileStore(paths, "L" if channels == 1 else "RGB"), channels, uniform


def list_images(folder: str) -> list[str]:
    """Image files (:data:`IMAGE_EXTS`) under ``folder``, recursively, sorted; hidden entries skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(filenames)
                if not f.startswith(".") and f.lower().endswith(IMAGE_EXTS)]
    return out
