"""``build_datasets``: a config's ``Data`` and ``Transforms`` sections -> a :class:`DataBundle`.

The source registered as ``Data.name`` (:mod:`utils.data.registry`) gives the raw data; a
regression table goes to :func:`~utils.data.tabular.build_tabular`, images through the pipeline
here. Decisions (documented for users in the config help):

* ``Data.image_size``: when set, a ``Resize`` to image_size x image_size is prepended to
  ``Transforms.train`` and ``Transforms.eval`` unless that list already has a Resize (the
  user's Resize then decides). ``bundle.image_size`` is the side of the images the pipeline
  actually outputs (an int, or (h, w) when not square).
* Images of different native sizes need a Resize in both lists (or ``Data.image_size``).
* ``Data.classes`` keeps classes in the order given (names or indices) and relabels them
  0..k-1; it applies to every split. ``Data.fraction`` subsamples the training split only
  (after the val carve), so val stays comparable across fractions; ``Data.val_fraction``
  subsamples the validation split (carved or given; stratified, seed ``split_seed + 2``) for
  quick runs where 5,000 CIFAR validation images would dominate.
* mean/std: ``Transforms.mean/std`` lists are used as given; ``auto`` computes them on the
  training split (after class/fraction selection); null = dataset default (CIFAR) or computed.
  Computed values are rounded to 4 decimals and are the ones the pipeline uses. They are
  resolved even when no op normalizes, so the run's config records concrete values;
  non-preloaded data is measured on a fixed subset of at most 2,000 training images.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from utils.data.bundle import DataBundle
from utils.data.registry import ImageSource, check_label_range, dataset_source, dataset_task
from utils.data.splits import random_subsample, stratified_split, stratified_subsample
from utils.data.stats import MEAN_STD_MAX_SAMPLES, compute_mean_std
from utils.data.tabular import build_tabular
from utils.data.transforms import build_transforms, has_op
from utils.errors import ConfigError, DataError, did_you_mean

if TYPE_CHECKING:  # the dataset classes import paddle: _datasets imports them when it runs
    from utils.data.datasets import ImageDataset


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


def _check_values(dc: dict) -> None:
    if not 0 <= dc["val_split"] < 1:
        raise ConfigError(f"Data.val_split must be in [0, 1), got {dc['val_split']}")
    if not 0 < dc["fraction"] <= 1:
        raise ConfigError(f"Data.fraction must be in (0, 1], got {dc['fraction']}")
    if not 0 < dc.get("val_fraction", 1.0) <= 1:
        raise ConfigError(f"Data.val_fraction must be in (0, 1], got {dc['val_fraction']}")
    if dc["image_size"] is not None and dc["image_size"] <= 0:
        raise ConfigError(f"Data.image_size must be a positive int or null, got {dc['image_size']}")
    if dc["num_classes"] is not None and dc["num_classes"] <= 0:
        raise ConfigError(f"Data.num_classes must be a positive int or null, got {dc['num_classes']}")


def _class_splits(dc: dict, src: ImageSource) -> tuple[dict, list[str]]:
    """The source's splits and class names after ``Data.classes`` (relabelled 0..k-1 in the order given)."""
    names = list(src.class_names)
    n_data = len(names)
    for split, (_, labels) in src.splits.items():
        check_label_range(labels, n_data, f"{src.where} ({split})")
    splits = dict(src.splits)
    if dc["classes"] is not None:
        keep = _select_classes(dc["classes"], names)
        remap = np.full(n_data, -1, np.int64)
        remap[keep] = np.arange(len(keep))
        for split, (idx, labels) in list(splits.items()):
            mask = remap[labels] >= 0
            splits[split] = (idx[mask], remap[labels[mask]])
        names = [names[i] for i in keep]
    want = dc["num_classes"]
    if want is not None and want != len(names) and not (dc["classes"] is not None and want == n_data):
        raise ConfigError(f"Data.num_classes is {want} but the data has {len(names)} classes ({src.where}): "
                          f"set Data.num_classes to {len(names)} or null")
    return splits, names


def _datasets(dc: dict, src: ImageSource, splits: dict,
              names: list[str]) -> tuple[ImageDataset, ImageDataset | None, ImageDataset | None]:
    """(train, val, test) ImageDatasets: the source's splits, the val carve, then ``Data.fraction`` of train
    and ``Data.val_fraction`` of val."""
    from utils.data.datasets import ImageDataset  # imports paddle: deferred until the thread count is set

    def make(split):
        if split not in splits:
            return None
        idx, labels = splits[split]
        if len(idx) == 0:
            raise DataError(f"{src.where}: the {split} split is empty after Data.classes selection")
        return ImageDataset(src.store, idx, labels, None, names, split)

    train, val, test = make("train"), make("val"), make("test")
    if val is None and dc["val_split"] > 0:
        rest, picked = stratified_split(train.labels, dc["val_split"], dc["split_seed"])
        if len(picked) == 0:
            raise DataError(f"{src.where}: Data.val_split {dc['val_split']} of {len(train)} training samples "
                            f"leaves no validation sample; raise val_split or add data")
        train, val = train.subset(rest, "train"), train.subset(picked, "val")
    if dc["fraction"] < 1:
        train = train.subset(stratified_subsample(train.labels, dc["fraction"], dc["split_seed"] + 1))
    if val is not None and dc.get("val_fraction", 1.0) < 1:
        val = val.subset(stratified_subsample(val.labels, dc["val_fraction"], dc["split_seed"] + 2))
    return train, val, test


def _op_lists(cfg: dict, src: ImageSource) -> tuple[list, list]:
    """``Transforms.train``/``eval`` with the ``Data.image_size`` Resize prepended where they have none."""
    dc, tc = cfg["Data"], cfg["Transforms"]
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
    return train_ops, eval_ops


def _mean_std(cfg: dict, src: ImageSource, train: ImageDataset) -> tuple[list[float], list[float]]:
    """``Transforms.mean/std`` resolved (given, the source's default, or computed on train) and checked."""
    dc, tc = cfg["Data"], cfg["Transforms"]
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
    return [float(v) for v in mean], [float(v) for v in std]


def _output_shape(train: ImageDataset, train_t: Callable, eval_t: Callable) -> tuple[int, int, int]:
    """C, H, W the pipelines output: both run on one image without touching the global RNG."""
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
    return out_eval.shape


def _shrink_tabular_val(bundle: DataBundle, dc: dict) -> DataBundle:
    """``Data.val_fraction`` of a regression bundle's val: a seeded random subset (no classes to stratify)."""
    frac = dc.get("val_fraction", 1.0)
    if not 0 < frac <= 1:
        raise ConfigError(f"Data.val_fraction must be in (0, 1], got {frac}")
    if bundle.val is not None and frac < 1:
        bundle.val = bundle.val.subset(random_subsample(len(bundle.val), frac, dc["split_seed"] + 2))
    return bundle


def build_datasets(cfg: dict) -> DataBundle:
    """Build train/val/test datasets from ``cfg['Data']`` and ``cfg['Transforms']``.

    Returns:
        :class:`DataBundle`.

    Raises:
        DataError: missing/unreadable/inconsistent data. ConfigError: bad Data/Transforms values.
    """
    dc = cfg["Data"]
    name = dc["name"]
    if dataset_task(name) == "regression":
        return _shrink_tabular_val(build_tabular(cfg), dc)
    _check_values(dc)
    src = dataset_source(name)(cfg)
    splits, names = _class_splits(dc, src)
    train, val, test = _datasets(dc, src, splits, names)
    train_ops, eval_ops = _op_lists(cfg, src)
    mean, std = _mean_std(cfg, src, train)
    train_t = build_transforms(train_ops, mean, std, "Transforms.train", src.channels)
    eval_t = build_transforms(eval_ops, mean, std, "Transforms.eval", src.channels)
    c, h, w = _output_shape(train, train_t, eval_t)
    train.transform = train_t
    for ds in (val, test):
        if ds is not None:
            ds.transform = eval_t
    return DataBundle(train=train, val=val, test=test, num_classes=len(names), class_names=names,
                      in_channels=c, image_size=h if h == w else (h, w), mean=mean, std=std, name=name,
                      train_transform=train_t, eval_transform=eval_t)
