"""``filelist``: PaddleClas/PaddleX lists of ``relative/path.jpg label_id`` lines, relative to data_dir.

``Data.train_list`` (required) and ``Data.val_list`` (optional); ``Data.label_file`` (optional) holds
one class name per line or ``id name`` per line. Without a label file, classes are named by id.
The default names are PaddleClas's and PaddleX 2's (``train_list.txt``, ``val_list.txt``,
``labels.txt``); when such a file is missing, PaddleX 3's name for it (``train.txt``, ``val.txt``,
``label.txt``, its ClsDataset layout) is read instead.
"""
from __future__ import annotations

import os
import re

import numpy as np

from utils.data.registry import MAX_CLASSES, ImageSource, read_text, register_dataset, require_data_dir
from utils.data.storage import image_store
from utils.errors import DataError

_ID_NAME = re.compile(r"^(\d+)\s+(\S.*)$")
# Data.* key -> (its default, PaddleClas / PaddleX 2 name; PaddleX 3's name for the same file)
PADDLEX3_NAMES = {"train_list": ("train_list.txt", "train.txt"), "val_list": ("val_list.txt", "val.txt"),
                  "label_file": ("labels.txt", "label.txt")}


def list_path(root: str, dc: dict, key: str) -> str:
    """``root/Data.<key>``; at the default name with no such file, PaddleX 3's name when that exists."""
    path = os.path.join(root, dc[key])
    default, paddlex3 = PADDLEX3_NAMES[key]
    if dc[key] == default and not os.path.isfile(path) and os.path.isfile(os.path.join(root, paddlex3)):
        return os.path.join(root, paddlex3)
    return path


def _read_label_file(path):
    """Class names from 'name' or 'id name' lines (UTF-8, a BOM dropped)."""
    text = read_text(path, "label file (Data.label_file)")
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.split("\n")) if ln.strip()]
    if not lines:
        raise DataError(f"label file {path} is empty: one class name per line, or 'id name' per line")
    matches = [_ID_NAME.match(t) for _, t in lines]
    if not all(matches):
        first = {}
        for lineno, name in lines:
            if name in first:
                raise DataError(f"{path}:{lineno}: class name {name!r} appears twice (also at line {first[name]})")
            first[name] = lineno
        return [t for _, t in lines]
    names, first = {}, {}
    for (lineno, _), m in zip(lines, matches):
        cid, name = int(m.group(1)), m.group(2).strip()
        if cid in names:
            raise DataError(f"{path}:{lineno}: class id {cid} appears twice")
        if name in first:
            raise DataError(f"{path}:{lineno}: class name {name!r} appears twice (also at line {first[name]})")
        names[cid], first[name] = name, lineno
    if sorted(names) != list(range(len(names))):
        missing = next(i for i in range(len(names)) if i not in names)  # never range(max id): ids may be huge
        raise DataError(f"{path}: class ids must be 0..{len(names) - 1} without gaps, id {missing} is missing")
    return [names[i] for i in range(len(names))]


def _read_list(list_path, root, key):
    """[(lineno, image path, label)] of a 'relative/path.jpg label' file (UTF-8, a BOM dropped)."""
    out = []
    for lineno, line in enumerate(read_text(list_path, f"file list ({key})").split("\n"), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.rsplit(None, 1)
        if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
            raise DataError(f"{list_path}:{lineno}: malformed line {text[:80]!r}: expected 'relative/path.jpg label_id'")
        rel, label = parts[0].strip(), int(parts[1])
        if label >= MAX_CLASSES:
            raise DataError(f"{list_path}:{lineno}: label {label} is not a class id: at most {MAX_CLASSES - 1:,} "
                            f"(labels are 0..k-1)")
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            columns = len(text.split())
            extra = f" (the line has {columns} columns, expected 2: 'relative/path.jpg label_id')" if columns > 2 else ""
            raise DataError(f"{list_path}:{lineno}: image not found: {path}{extra}; fix the line or add the file")
        out.append((lineno, path, label))
    if not out:
        raise DataError(f"{list_path}: no samples (lines 'relative/path.jpg label_id')")
    return out


@register_dataset("filelist")
def load_filelist(cfg: dict) -> ImageSource:
    """The images of the train (and val) list, with the label file's class names."""
    root = require_data_dir(cfg)
    dc = cfg["Data"]
    train_list = list_path(root, dc, "train_list")
    if not os.path.isfile(train_list):
        also = (f" nor {PADDLEX3_NAMES['train_list'][1]} (PaddleX 3)"
                if dc["train_list"] == PADDLEX3_NAMES["train_list"][0] else "")
        raise DataError(f"train list not found: {train_list}{also} (Data.train_list, relative to Data.data_dir)")
    lists = {"train": (train_list, _read_list(train_list, root, "Data.train_list"))}
    val_list = list_path(root, dc, "val_list")
    if os.path.isfile(val_list):
        lists["val"] = (val_list, _read_list(val_list, root, "Data.val_list"))
    label_file = list_path(root, dc, "label_file") if dc["label_file"] else None
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
