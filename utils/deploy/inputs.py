"""What ``tools/infer.py`` is given and what it prints: command-line inputs expanded into image
paths (files, folders, PaddleClas file lists with labels), and the table of predictions.
"""
from __future__ import annotations

import os
import re

from utils.errors import UserError


def collect_inputs(args: list[str]) -> list[tuple[str, int | None]]:
    """Expand command-line inputs into ``[(image path, true label or None)]``.

    Each argument is an image file, a folder (searched recursively for .jpg/.jpeg/.png/.bmp)
    or a file list: a text file of ``path`` or PaddleClas ``path label`` lines, paths relative
    to the list's folder.

    Raises:
        UserError: a missing path, an empty folder or list, a list line naming no file.
    """
    from utils.data import IMAGE_EXTS, list_images  # imports paddle: deferred until the thread count is set

    out = []
    for arg in args:
        if os.path.isdir(arg):
            files = list_images(arg)
            if not files:
                raise UserError(f"{arg}: no {'/'.join(IMAGE_EXTS)} images in this folder (searched recursively)")
            out += [(f, None) for f in files]
        elif os.path.isfile(arg):
            if arg.lower().endswith(IMAGE_EXTS):
                out.append((arg, None))
            else:
                out += _read_file_list(arg)
        else:
            raise UserError(f"{arg}: no such image, folder or file list")
    return out


def _read_file_list(path: str) -> list[tuple[str, int | None]]:
    root = os.path.dirname(os.path.abspath(path))
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable file list ({type(e).__name__}); give images, a folder, "
                        f"or a text file of 'path [label]' lines") from None
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.rsplit(None, 1)
        label = None
        if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
            text, label = parts[0].strip(), int(parts[1])
        p = text if os.path.isabs(text) else os.path.join(root, text)
        if not os.path.isfile(p):
            raise UserError(f"{path}:{lineno}: image not found: {p} (paths are relative to the list's folder)")
        rows.append((p, label))
    if not rows:
        raise UserError(f"{path}: empty file list: expected 'path' or 'path label' lines")
    return rows


def format_table(results: list[dict], labels: list[int | None] | None = None,
                 class_names: list[str] | None = None) -> str:
    """Plain-text table of :meth:`~utils.deploy.predictor.Predictor.predict` results (with the true label when known)."""
    labels = labels or [None] * len(results)
    names = [str(r["input"]) for r in results]
    w = min(60, max([5, *map(len, names)]))
    known = any(lab is not None for lab in labels)
    head = f"{'image':<{w}}  " + (f"{'true':<8}  " if known else "") + "top-k (label probability)"
    lines = [head]
    for r, name, lab in zip(results, names, labels):
        shown = name if len(name) <= w else "..." + name[-(w - 3):]
        true = ""
        if known:
            t = "-" if lab is None else (class_names[lab] if class_names and 0 <= lab < len(class_names) else str(lab))
            true = f"{t:<8}  "
        preds = "  ".join(f"{n} {s:.4f}" for n, s in zip(r["label_names"], r["scores"]))
        lines.append(f"{shown:<{w}}  {true}{preds}")
    if known:
        pairs = [(r["class_ids"][0], lab) for r, lab in zip(results, labels) if lab is not None]
        acc = sum(p == t for p, t in pairs) / len(pairs)
        lines.append(f"top-1 accuracy on the {len(pairs)} labelled images: {acc:.4f}")
    return "\n".join(lines)
