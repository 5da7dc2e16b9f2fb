"""``folder``: a class-folder tree.

``data_dir/train/<class>/*`` (+ optional ``data_dir/val/<class>/``, ``data_dir/test/<class>/``) or
``data_dir/<class>/*``. Classes = sorted folder names of the training split (bytes of a name that
are not UTF-8 shown as ``\\xe9`` escapes); JPEG/PNG/BMP files, searched recursively inside each class folder.
With ``DataLoader.batched`` the images are decoded once into one array (``Data.preload`` is not read) and
cached in ``data_dir/.cache/`` (:mod:`utils.data.cache`).
"""
from __future__ import annotations

import os

import numpy as np

from utils.data.batched import check_config_ops
from utils.data.cache import cached_image_store
from utils.data.registry import ImageSource, register_dataset, require_data_dir
from utils.data.storage import IMAGE_EXTS, image_store, list_images
from utils.errors import DataError, did_you_mean


@register_dataset("folder")
def load_folder(cfg: dict) -> ImageSource:
    """The images of every split folder, labelled by their class folder."""
    root = require_data_dir(cfg)
    train_dir = os.path.join(root, "train")
    split_dirs = {"train": train_dir if os.path.isdir(train_dir) else root}
    if split_dirs["train"] == train_dir:
        for s in ("val", "test"):
            if os.path.isdir(os.path.join(root, s)):
                split_dirs[s] = os.path.join(root, s)
    tdir = split_dirs["train"]
    classes = sorted(d for d in os.listdir(tdir) if not d.startswith(".") and os.path.isdir(os.path.join(tdir, d)))
    if not classes:
        raise DataError(f"no class folders in {tdir}: expected {tdir}/<class>/*.jpg "
                        f"(or {os.path.join(root, 'train')}/<class>/ with optional val/ and test/)")
    paths, splits = [], {}
    for split, sdir in split_dirs.items():
        found = sorted(d for d in os.listdir(sdir) if not d.startswith(".") and os.path.isdir(os.path.join(sdir, d)))
        unknown = [d for d in found if d not in classes]
        if unknown:
            raise DataError(f"{os.path.join(sdir, unknown[0])}: class folder not in {tdir}"
                            f"{did_you_mean(unknown[0], classes)}; classes: {', '.join(classes)}")
        start, labels = len(paths), []
        for c in found:
            files = list_images(os.path.join(sdir, c))
            if not files:
                raise DataError(f"empty class folder {os.path.join(sdir, c)}: no {'/'.join(IMAGE_EXTS)} images; "
                                f"add images or remove the folder")
            paths += files
            labels += [classes.index(c)] * len(files)
        if not labels:
            raise DataError(f"no images in {sdir}: expected {sdir}/<class>/*.jpg")
        splits[split] = (np.arange(start, len(paths)), np.asarray(labels, np.int64))
    if (cfg.get("DataLoader") or {}).get("batched"):
        # one uint8 array for the batched loader, decoded once and cached under root/.cache
        check_config_ops(cfg)  # an op without a batch version fails before the decoding
        labels = np.concatenate([lab for _, lab in splits.values()])
        store, channels, uniform = cached_image_store(paths, labels, root)
    else:
        store, channels, uniform = image_store(paths, cfg["Data"]["preload"])
    return ImageSource(store, splits, [printable(c) for c in classes], channels, uniform, where=root)


def printable(name: str) -> str:
    """A folder name as a class name that prints and saves: bytes that are not UTF-8 (a cp1252 'café'
    from a Windows archive) become ``\\xe9`` escapes instead of lone surrogates, which VisualDL,
    JSON and YAML writers refuse."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
