"""Per-channel pixel statistics: the mean/std ``Transforms.mean/std: auto`` and the tools compute."""
from __future__ import annotations

import numpy as np

from utils.errors import DataError

MEAN_STD_MAX_SAMPLES = 2_000       # images used to compute mean/std of non-preloaded data


def compute_mean_std(data: object, max_samples: int | None = None, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0,1] units (population std over all pixels).

    Args:
        data: an :class:`~utils.data.datasets.ImageDataset` (its raw images), a uint8 array
            N x H x W x C (or N x H x W), a list of HWC arrays, or a float array already in [0,1].
        max_samples: use at most this many images (a fixed-seed random subset).
        seed: seed of that subset.

    Returns:
        (mean, std): lists of floats, one per channel.
    """
    # A dataset is recognised by its raw-image iterator rather than by class, so this module
    # needs no import of ImageDataset (and so of paddle): tools read statistics before setting threads.
    if hasattr(data, "iter_raw_chunks"):
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
