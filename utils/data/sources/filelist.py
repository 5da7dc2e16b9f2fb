"""``filelist``: PaddleClas/PaddleX lists of ``relative/path.jpg label_id`` lines, relative to data_dir.

``Data.train_list`` (required) and ``Data.val_list`` (optional); ``Data.label_file`` (optional) holds
one class name per line or ``id name`` per line. Without a label file, classes are named by id.
"""
from __future__ import annotations

import os
import re

import numpy as np

from utils.data.registry import ImageSource, register_dataset, require_data_dir
from utils.data.storage import image_store
from utils.errors import DataError

_ID_NAME = re.compile(r"^(\d+)\s+(\S.*)$")


def _read_label_file(path):
    """Class names from 'name' or 'id name' lines."""
    with open(path, encoding="utf-8") as f:
        lines = [(i + 1, ln.strip()) for i, ln in enumerate(f) if ln.strip()]
    if not lines:
        raise DataError(f"label file {path} is empty: one class name per line, or 'id name' per line")
    matches = [_ID_NAME.match(t) for _, t in lines]
    if not all(matches):
        return [t for _, t in lines]
    names = {}
    for (lineno, _), m in zip(lines, matches):
        cid = int(m.group(1))
        if cid in names:
            raise DataError(f"{path}:{lineno}: class id {cid} appears twice")
        names[cid] = m.group(2).strip()
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(max(names) + 1)) - set(names))
        raise DataError(f"{path}: class ids must be 0..{len(names) - 1} without gaps, id {missing[0]} is missing")
    return [names[i] for i in range(len(names))]


def _read_list(list_path, root):
    """[(lineno, image path, label)] of a 'relative/path.jpg label' file."""
    out = []
    with open(list_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
                raise DataError(f"{list_path}:{lineno}: malformed line {text[:80]!r}: expected 'relative/path.jpg label_id'")
            rel, label = parts[0].strip(), int(parts[1])
            path = os.path.join(root, rel)
            if not os.path.isfile(path):
                raise DataError(f"{list_path}:{lineno}: image not found: {path}; fix the line or add the file")
            out.append((lineno, path, label))
    if not out:
        raise DataError(f"{list_path}: no samples (lines 'relative/path.jpg label_id')")
    return out


@register_dataset("filelist")
def load_filelist(cfg: dict) -> ImageSource:
    """The images of the train (and val) list, with the label file's class names."""
    root = require_data_dir(cfg)
    dc = cfg["Data"]
    train_list = os.path.join(root, dc["train_list"])
    if not os.path.isfile(train_list):
        raise DataError(f"train list not found: {train_list} (Data.train_list, relative to Data.data_dir)")
    lists = {"train": (train_list, _read_list(train_list, root))}
    val_list = os.path.join(root, dc["val_list"])
    if os.path.isfile(val_list):
        lists["val"] = (val_list, _read_list(val_list, root))
    label_file = os.path.join(root, dc["label_file"]) if dc["label_file"] else None
    if label_file and os.path.isfile(label_file):
        names = _read_label_file(label_file)
        limit, source = len(names), f"{len(names)} classes in {label_file}"
    else:
        top = max(lab for _, (_, rows) in lists.items() for _, _, lab in rows) + 1
        limit = max(top, dc["num_classes"] or 0)
        names = [str(i) for i in range(limit)]
        source = "Data.num_classes" if dc["num_classes"] else "no label file"
        limit = dc["num_classes"] or limit
    paths, splits = [], {}
    for split, (lpath, rows) in lists.items():
        for lineno, _, lab in rows:
            if not 0 <= lab < limit:
                raise DataError(f"{lpath}:{lineno}: label {lab} outside [0, {limit}) ({source})")
        start = len(paths)
        paths += [p for _, p, _ in rows]
        splits[split] = (np.arange(start, len(paths)), np.asarray([lab for _, _, lab in rows], np.int64))
    store, channels, uniform = image_store(paths, dc["preload"])
    return ImageSource(store, splits, names, channels, uniform, where=root)
