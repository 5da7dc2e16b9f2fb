"""``digits``: scikit-learn's 8x8 digits, embedded (no download).

1,797 images with values 0..16, scaled to 0..255; 1 channel, 10 classes. No val/test set:
val is carved from train.
"""
from __future__ import annotations

import numpy as np

from utils.data.registry import ImageSource, register_dataset
from utils.data.storage import ArrayStore


@register_dataset("digits")
def load_digits(cfg: dict) -> ImageSource:
    """The digits as one uint8 array 1797 x 8 x 8 x 1, all in the train split."""
    from sklearn.datasets import load_digits  # scikit-learn takes ~0.9 s to import: only when used

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int64)
    return ImageSource(ArrayStore(images), {"train": (np.arange(len(labels)), labels)},
                       [str(i) for i in range(10)], 1, where="digits (scikit-learn)")
