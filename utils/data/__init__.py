"""Datasets and loaders built from the ``Data``, ``DataLoader`` and ``Transforms`` sections.

Sources (``Data.name``) are registered functions, one module each in ``utils/data/sources/``:
``digits`` and ``diabetes`` (scikit-learn, embedded), ``cifar10`` / ``cifar100`` (the python-version
tar.gz), ``folder`` (class folders) and ``filelist`` (PaddleClas/PaddleX lists); ``list_datasets()``
names them. Where the rest lives:

* :mod:`~utils.data.registry`: ``@register_dataset``, what a source returns, the checks sources share.
* :mod:`~utils.data.storage`: image files, their decoding and the stores holding the pixels.
* :mod:`~utils.data.build`: ``build_datasets`` (classes, splits, transforms, mean/std) and its
  decisions; :mod:`~utils.data.tabular` for regression tables; :mod:`~utils.data.bundle` the result.
* :mod:`~utils.data.splits`, :mod:`~utils.data.stats`: val carves and shards, mean/std.
* :mod:`~utils.data.datasets`, :mod:`~utils.data.loader`: the dataset classes and the loaders.
* :mod:`~utils.data.batched`: the batched in-memory loader (``DataLoader.batched``) and its batch ops;
  :mod:`~utils.data.cache`: the decoded-image cache of folder data under it.

Decisions of the image sources (documented for users in the config help):

* Channels of folder/filelist images: 1 (grayscale) when *every* image is grayscale
  (PIL modes L, LA, 1, I, I;16, F), otherwise 3 (RGB; alpha is dropped, palettes expanded).
* Preloading: with ``Data.preload: auto`` folder/filelist images are decoded once into
  memory when their estimated decoded size is below 1 GB (50,000 32x32 JPEGs: ~150 MB,
  decoded in a few seconds), else decoded at every access. Preloading decodes every file,
  so an unreadable image is reported when the dataset is built; without preloading the
  headers of all files are checked at build (up to 100,000 files) and decoding errors at
  load time name the file too.

The dataset classes and loaders subclass paddle's and load on first use (``__getattr__`` below),
so importing this package, as the config and the tools do before setting the thread count,
does not import paddle.
"""
from utils.data import sources  # noqa: F401  (registers the dataset sources)
from utils.data.batched import BATCH_OPS, EVAL_OPS, BatchedLoader, BatchPipeline
from utils.data.build import build_datasets
from utils.data.bundle import DataBundle
from utils.data.cache import cached_image_store
from utils.data.registry import ImageSource, TableSource, dataset_source, dataset_task, list_datasets, register_dataset
from utils.data.sources.cifar import CIFAR, CIFAR10_NAMES
from utils.data.splits import random_split, shard_range, stratified_split, stratified_subsample
from utils.data.stats import MEAN_STD_MAX_SAMPLES, compute_mean_std
from utils.data.storage import (
    GRAY_MODES,
    HEADER_SCAN_LIMIT,
    IMAGE_EXTS,
    PRELOAD_LIMIT_BYTES,
    ArrayStore,
    FileStore,
    ListStore,
    decode_image,
    list_images,
)

__all__ = [
    "BATCH_OPS", "EVAL_OPS", "BatchPipeline", "BatchedLoader", "cached_image_store",
    "CIFAR", "CIFAR10_NAMES", "GRAY_MODES", "HEADER_SCAN_LIMIT", "IMAGE_EXTS", "MEAN_STD_MAX_SAMPLES",
    "PRELOAD_LIMIT_BYTES", "ArrayStore", "DataBundle", "DataLoader", "FileStore", "ImageDataset", "ImageSource",
    "ListStore", "TableSource", "TabularDataset", "build_datasets", "build_eval_loader", "build_loaders",
    "compute_mean_std", "dataset_source", "dataset_task", "decode_image", "list_datasets", "list_images",
    "random_split", "register_dataset", "shard_range", "stratified_split", "stratified_subsample",
]


def __getattr__(name: str) -> object:
    # imports paddle: deferred until the thread count is set
    if name in ("ImageDataset", "TabularDataset"):
        from utils.data import datasets as module
    elif name in ("DataLoader", "build_loaders", "build_eval_loader"):
        from utils.data import loader as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)
