"""Sample-position splits: the stratified val carve and ``Data.fraction`` / ``Data.val_fraction``
subsamples of class data, the random val carve and subsample of regression tables, and each
data-parallel rank's block of a split.

Every function is deterministic for a given seed and returns sorted positions.
"""
from __future__ import annotations

import numpy as np


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


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
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


def stratified_subsample(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions of a stratified ``fraction`` of the samples (at least one per class)."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    classes, counts = np.unique(labels, return_counts=True)
    keep = np.minimum(np.maximum(_stratified_counts(counts, fraction), 1), counts)
    out = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, keep)]
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def random_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, picked) sample positions with ceil(n * fraction) picked at random (seeded), both sorted."""
    k = int(np.ceil(n * fraction - 1e-9))
    perm = np.random.RandomState(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def random_subsample(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of ceil(n * fraction) samples (at least one when n > 0) picked at random (seeded)."""
    k = min(n, max(1, int(np.ceil(n * fraction - 1e-9)))) if n else 0
    return np.sort(np.random.RandomState(seed).permutation(n)[:k])


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of rank ``rank``'s contiguous block of ``n`` samples; blocks cover 0..n once, sizes differ by <= 1."""
    return n * rank // world, n * (rank + 1) // world
