"""``diabetes`` (``Global.task: regression``): scikit-learn's diabetes table, embedded.

442 patients x 10 raw features (age, sex, bmi, bp, s1-s6); the target is a disease-progression
score 25..346 (mean 152, std 77). :func:`utils.data.tabular.build_tabular` splits and standardizes it.
"""
from __future__ import annotations

import numpy as np

from utils.data.registry import TableSource, register_dataset


@register_dataset("diabetes", task="regression")
def load_diabetes(cfg: dict) -> TableSource:
    """The raw (unscaled) table and target."""
    from sklearn.datasets import load_diabetes  # scikit-learn takes ~0.9 s to import: only when used

    d = load_diabetes(scaled=False)
    return TableSource(d.data.astype(np.float64), d.target.astype(np.float64), list(d.feature_names))
