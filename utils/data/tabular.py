"""The :class:`~utils.data.bundle.DataBundle` of a regression table (a source registered with
``task="regression"``): the val carve, ``Data.fraction``, feature standardization, target normalization.
"""
from __future__ import annotations

import numpy as np

from utils.data.bundle import DataBundle
from utils.data.registry import dataset_source
from utils.data.splits import random_split
from utils.errors import ConfigError, DataError


def build_tabular(cfg: dict) -> DataBundle:
    """The :class:`DataBundle` of the regression table ``Data.name``.

    Val is a seeded random ``Data.val_split`` of the samples (stratification needs classes);
    ``Data.fraction`` subsamples train after that. Features are standardized per feature when
    ``Transforms.train``/``eval`` hold ``Normalize`` (the default), with ``Transforms.mean``/``std``
    as lists of one value per feature in the table's units (null or 'auto': computed on train);
    the target with ``Data.normalize_target`` (``Data.target_mean``/``target_std``, null: computed
    on train). Computed statistics are rounded to 6 significant decimals and are the ones used.
    """
    from utils.data.datasets import TabularDataset  # imports paddle: deferred until the thread count is set

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
    features, targets, _ = dataset_source(name)(cfg)
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
