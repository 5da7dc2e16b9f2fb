"""Dataset registry: ``@register_dataset(name)`` on a source function, ``dataset_source(name)`` to look it up.

A source function ``fn(cfg: dict)`` takes the validated config (``cfg["Data"]`` holds its keys: ``data_dir``,
``preload``, ``train_list``, ...) and returns the raw data; :func:`utils.data.build.build_datasets`
does the rest (Data.classes, the val carve, Data.fraction, transforms, mean/std):

* classification (the default task) returns an :class:`ImageSource`: a store of images, the splits
  the data comes with (``train`` always, ``val``/``test`` when the data has them) and class names.
* ``task="regression"`` returns a :class:`TableSource`: a feature table and its real-valued target.

``list_datasets()`` gives the names in registration order (the order of the imports in
``utils/data/sources/__init__.py``); unknown names fail with ConfigError listing the registered ones.
The helpers at the bottom are the checks most sources share.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import numpy as np

from utils.data.storage import Store
from utils.errors import ConfigError, DataError, UserError, did_you_mean

TASKS = ("classification", "regression")
# Most classes a dataset may have: ImageNet-21k has 21,841; a million class names are ~8 MB. Label ids
# beyond it are typos (a list line '7 1000000000000' would otherwise name 10**12 classes, for ever).
MAX_CLASSES = 1_000_000


@dataclasses.dataclass
class ImageSource:
    """What a classification source returns.

    Attributes:
        store: the images (:mod:`utils.data.storage`: ArrayStore for a uint8 N x H x W x C array,
            ``image_store(paths, preload)`` for image files).
        splits: split name (``train``, ``val``, ``test``) -> (indices into ``store``, int64 labels).
        class_names: one name per label 0..k-1.
        channels: 1 or 3.
        uniform: all images share one size (else a Resize is required).
        mean, std: the dataset's per-channel defaults in [0,1] units, None = computed on train.
        where: how messages name the data (a path, or e.g. 'digits (scikit-learn)').
    """
    store: Store
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    class_names: list[str]
    channels: int
    uniform: bool = True
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    where: str = ""


class TableSource(NamedTuple):
    """What a regression source returns: features N x F and targets N (float64, in the table's units)."""
    features: np.ndarray
    targets: np.ndarray
    feature_names: list[str]


SourceFn = TypeVar("SourceFn", bound=Callable[[dict], ImageSource | TableSource])


@dataclasses.dataclass(frozen=True)
class _Entry:
    fn: Callable[[dict], ImageSource | TableSource]
    task: str


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(*names: str, task: str = "classification") -> Callable[[SourceFn], SourceFn]:
    """Decorator: make a source function available as ``Data.name: <name>`` (one or more names).

    A function registered under several names reads the one in use from ``cfg["Data"]["name"]``.
    """
    if not names:
        raise ValueError("register_dataset needs at least one name")
    if task not in TASKS:
        raise ValueError(f"dataset '{names[0]}': task must be one of {', '.join(TASKS)}, got {task!r}")

    def register(fn: SourceFn) -> SourceFn:
        for name in names:
            if name in _REGISTRY:
                raise ValueError(f"dataset '{name}' is registered twice")
            _REGISTRY[name] = _Entry(fn, task)
        return fn

    return register


def list_datasets(task: str | None = None) -> list[str]:
    """Registered dataset names in registration order; ``task`` keeps those of one task."""
    return [n for n, e in _REGISTRY.items() if task is None or e.task == task]


def _entry(name):
    if name not in _REGISTRY:
        raise ConfigError(f"Data.name: unknown dataset {name!r}{did_you_mean(name, _REGISTRY)}; "
                          f"registered datasets: {', '.join(list_datasets())}")
    return _REGISTRY[name]


def dataset_source(name: str) -> Callable[[dict], ImageSource | TableSource]:
    """The source function registered as ``name``; unknown names raise ConfigError listing the valid ones."""
    return _entry(name).fn


def dataset_task(name: str) -> str:
    """``classification`` or ``regression``: the task dataset ``name`` was registered for."""
    return _entry(name).task


# --------------------------------------------------------------------------- shared checks

def read_text(path: str, what: str, error: type[UserError] = DataError) -> str:
    """The text of a UTF-8 file (a leading BOM dropped), newlines as ``\\n``.

    Configs, file lists and label files go through here. Anything else is an ``error`` (a
    one-line :class:`~utils.errors.UserError`) naming ``path``, ``what`` it is, the first bad
    byte and the fix, instead of a UnicodeDecodeError traceback.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:  # a directory, no permission, ...
        raise error(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise error(f"{path}: {what} is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise error(f"{path}:{line}: {what} is not UTF-8 (byte 0x{raw[e.start]:02x} at column {column}); save it "
                    f"as UTF-8 (e.g. iconv -f latin1 -t UTF-8, or your editor's 'save with encoding')") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise error(f"{path}:{line}: {what} holds NUL bytes (UTF-16 without a BOM, or a binary file?); "
                    f"save it as UTF-8 text")
    # universal newlines, as open() in text mode reads them
    return text.replace("\r\n", "\n").replace("\r", "\n")


def require_data_dir(cfg: dict) -> str:
    """``Data.data_dir``, which must be an existing directory (ConfigError when null, else DataError)."""
    d = cfg["Data"]["data_dir"]
    if d is None:
        raise ConfigError(f"Data.data_dir is required for Data.name={cfg['Data']['name']}: "
                          f"set it to the dataset root (-o Data.data_dir=PATH)")
    if not os.path.isdir(d):
        what = "file" if os.path.exists(d) else "path"
        raise DataError(f"data directory not found: {d} (Data.data_dir; this {what} is not a directory)")
    return d


def check_label_range(labels: np.ndarray, n: int, where: str) -> None:
    """DataError naming the first label outside [0, n)."""
    bad = np.flatnonzero((labels < 0) | (labels >= n))
    if len(bad):
        raise DataError(f"{where}: label {int(labels[bad[0]])} of sample {int(bad[0])} outside [0, {n})")
