"""Malformed input through the real ``tools/train.py``: one clear line and exit 2, never a traceback,
never silently accepted.

:data:`CASES` holds over 300 malformed configs, ``_base_`` files, ``-o`` overrides and file lists. Each runs
in-process through ``tools/train.py``'s ``main(argv)`` (its ``run_tool`` wrapper turns a UserError into
``error: ...`` and ``SystemExit(2)``), with ``paddle.Model.fit`` replaced by a guard that raises
:class:`WouldTrain`: a case the tool accepts stops there instead of training, and counts as silently
accepted. Each must exit 2 with exactly one ``error:`` line naming its key or file, and leave no run
directory under its output directory. :data:`VALID` holds inputs that look odd but are fine (a BOM,
CRLF line ends, YAML merge keys) and must reach training. A handful of cases also run as real
subprocesses. The last tests hold the other half of the rule: a VisualDL logging failure never ends
a run (one warning, that part switched off).

The figures (clean / unclear / traceback / silently accepted, and the valid inputs reaching training)
on this tree, or on another copy of the project such as a pristine HEAD::

    python tests/test_malformed.py
    mkdir -p /tmp/head && git archive HEAD | tar -x -C /tmp/head && python tests/test_malformed.py /tmp/head
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import traceback
from typing import Callable, NamedTuple

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE = """\
Global: {epochs: 1, verbose: 0, print_flops: false}
Arch: {name: mlp, hidden: [16]}
Data: {name: digits, val_split: 0.2}
DataLoader: {batch_size: 64}
VisualDL: {enable: false}
Doctor: {enable: false}
"""
# the filelist dataset of make_images(): 3 + 3 images of classes cat (0) and dog (1)
FILELIST = BASE.replace("Data: {name: digits, val_split: 0.2}", "Data: {name: filelist, data_dir: '{d}/ds', val_split: 0.0}")
REGRESSION = BASE.replace("Data: {name: digits, val_split: 0.2}", "Data: {name: diabetes, val_split: 0.2}").replace(
    "verbose: 0,", "verbose: 0, task: regression,")
GMLP = BASE.replace("Arch: {name: mlp, hidden: [16]}", "Arch: {name: gmlp_tiny, patch_size: 2, dim: 16, depth: 1}")
TRAIN_LIST = "".join(f"images/{c}{i}.png {lab}\n" for c, lab in (("a", 0), ("b", 1)) for i in range(3))
LABELS = "cat\ndog\n"


class Case(NamedTuple):
    id: str
    argv: list[str]            # after the tool name; '{d}' is the case's directory
    files: dict[str, str | bytes]
    expect: tuple[str, ...]    # fragments the error line must hold (the key or the file)
    images: bool = False       # write the filelist dataset under {d}/ds


def cfg(id: str, text: str | bytes, *expect: str, files: dict | None = None, argv: tuple = (), images: bool = False) -> Case:
    """A case whose config file {d}/c.yml is ``text``."""
    return Case(id, ["-c", "{d}/c.yml", *argv], {"c.yml": text, **(files or {})}, expect, images)


def ovr(*overrides: str, expect: tuple[str, ...] | None = None, base: str = BASE, id: str | None = None) -> Case:
    """A case of ``-o`` overrides on a valid config; by default the error names the first override's key."""
    argv = [a for o in overrides for a in ("-o", o)]
    return Case(id or " ".join(overrides), ["-c", "{d}/c.yml", *argv], {"c.yml": base},
                expect if expect is not None else (overrides[-1].split("=", 1)[0],), base is FILELIST)


def fl(id: str, *expect: str, files: dict | None = None, argv: tuple = ()) -> Case:
    """A filelist case: the dataset's lists replaced or added by ``files`` (under ds/)."""
    ds = {"ds/train_list.txt": TRAIN_LIST, "ds/labels.txt": LABELS}
    ds.update({f"ds/{k}": v for k, v in (files or {}).items()})
    return cfg(id, FILELIST, *expect, files={k: v for k, v in ds.items() if v is not None}, argv=argv, images=True)


LATIN1 = "# résumé of the run\n".encode("latin-1")
# a base config and the file that inherits it
INHERIT = "_base_: base.yml\nGlobal: {epochs: 1}\n"

CASES = [
    # -- encodings of configs, _base_ files and file lists
    cfg("config latin-1", BASE.encode() + LATIN1, "c.yml:7", "UTF-8"),
    cfg("config latin-1 value", BASE.encode() + "Global: {run_name: café}\n".encode("cp1252"), "c.yml:7", "UTF-8"),
    cfg("config UTF-16", BASE.encode("utf-16"), "c.yml", "UTF-16"),
    cfg("config UTF-16 no BOM", BASE.encode("utf-16-le"), "c.yml", "NUL"),
    cfg("config binary", b"\x89PNG\r\n\x1a\n" + bytes(64), "c.yml:1", "UTF-8"),
    cfg("base latin-1", INHERIT, "base.yml:7", "UTF-8", files={"base.yml": BASE.encode() + LATIN1}),
    cfg("base UTF-16", INHERIT, "base.yml", "UTF-16", files={"base.yml": BASE.encode("utf-16")}),
    fl("train list latin-1", "train_list.txt:7", "UTF-8", files={"train_list.txt": TRAIN_LIST.encode() + LATIN1}),
    fl("val list latin-1", "val_list.txt:2", "UTF-8", files={"val_list.txt": b"images/a0.png 0\n# \xe9\n"}),
    fl("labels latin-1", "labels.txt:1", "UTF-8", files={"labels.txt": "caf\xe9\ndog\n".encode("latin-1")}),
    fl("label.txt cp1252", "label.txt:2", "UTF-8", files={"label.txt": "0 cat\n1 d\xf6g\n".encode("cp1252")},
       argv=("-o", "Data.label_file=label.txt")),
    fl("train list UTF-16", "train_list.txt", "UTF-16", files={"train_list.txt": TRAIN_LIST.encode("utf-16")}),
    fl("train list NUL", "train_list.txt:1", "NUL", files={"train_list.txt": b"images/a0.png 0\x00\n"}),
    fl("train list BOM, bad line 2", "train_list.txt:2", files={"train_list.txt": "\ufeffimages/a0.png 0\nimages/a1.png x\n"}),
    fl("labels BOM, name twice", "labels.txt:2", "cat", files={"labels.txt": "\ufeffcat\ncat\n"}),
    # -- YAML: empty files, structure, syntax, duplicate keys
    cfg("empty file", "", "config is empty", "c.yml"),
    cfg("blank lines", "\n\n   \n", "config is empty", "c.yml"),
    cfg("comments only", "# Global:\n#   epochs: 3\n", "config is empty", "c.yml"),
    cfg("document marker only", "---\n", "config is empty", "c.yml"),
    cfg("null document", "~\n", "config is empty", "c.yml"),
    cfg("empty mapping", "{}\n", "config is empty", "c.yml"),
    cfg("top level list", "- Global: {epochs: 1}\n", "c.yml", "top level"),
    cfg("top level scalar", "hello\n", "c.yml", "top level"),
    cfg("top level number", "42\n", "c.yml", "top level"),
    cfg("two documents", BASE + "---\nGlobal: {epochs: 2}\n", "c.yml:7"),
    cfg("tab indent", "Global:\n\tepochs: 1\n", "c.yml:2"),
    cfg("bad indent", "Global:\n  epochs: 1\n   seed: 2\n", "c.yml:3"),
    cfg("missing colon", "Global:\n  epochs 1\n  seed: 2\n", "c.yml:3"),
    cfg("unclosed brace", "Global: {epochs: 1\nArch: {name: mlp}\n", "c.yml"),
    cfg("unclosed quote", "Global: {run_name: 'abc}\n", "c.yml"),
    cfg("python tag", "Global: !!python/object/apply:os.system ['true']\n", "c.yml:1"),
    cfg("unhashable key", "? [a, b]\n: 1\n", "c.yml"),
    cfg("section twice", BASE + "Global: {epochs: 2}\n", "c.yml:7", "duplicate key 'Global'", "line 1"),
    cfg("key twice", "Global:\n  epochs: 1\n  verbose: 0\n  epochs: 2\n", "c.yml:4", "'Global.epochs'", "line 2"),
    cfg("key twice in flow mapping", BASE + "Optimizer: {lr: 0.1, lr: 0.2}\n", "c.yml:7", "'Optimizer.lr'"),
    cfg("Arch key twice", BASE.replace("hidden: [16]", "hidden: [16], hidden: [32]"), "c.yml:2", "'Arch.hidden'"),
    cfg("op parameter twice", BASE + "Transforms:\n  train:\n    - RandomCrop: {size: 8, size: 6}\n",
        "c.yml:9", "Transforms.train[0].RandomCrop.size"),
    cfg("base key twice", INHERIT, "base.yml:3", "'Global.seed'", files={"base.yml": "Global:\n  seed: 1\n  seed: 2\n"}),
    cfg("section is a list", BASE + "Optimizer: [1, 2]\n", "c.yml:7", "'Optimizer'"),
    cfg("section list, then -o", BASE + "Optimizer: [1, 2]\n", "c.yml:7", "'Optimizer'", argv=("-o", "Optimizer.lr=0.1")),
    cfg("section is a number", "Global: 5\n", "c.yml:1", "'Global'"),
    cfg("section is a string", BASE.replace("Data: {name: digits, val_split: 0.2}", "Data: digits"), "c.yml:3", "'Data'"),
    cfg("base section is a list", INHERIT, "base.yml:1", "'Optimizer'", files={"base.yml": "Optimizer: [0.1]\n"}),
    cfg("unknown section", BASE + "Optimzer: {lr: 0.1}\n", "c.yml:7", "Optimzer", "did you mean 'Optimizer'"),
    cfg("lowercase section", BASE + "optimizer: {lr: 0.1}\n", "c.yml:7", "optimizer"),
    cfg("number as section", BASE + "1: {lr: 0.1}\n", "c.yml:7", "'1'"),
    cfg("unknown key", BASE + "Optimizer:\n  lrr: 0.1\n", "c.yml:8", "Optimizer.lrr", "did you mean 'lr'"),
    cfg("mapping for a number", BASE + "Optimizer: {lr: {value: 0.1}}\n", "c.yml:7", "Optimizer.lr"),
    cfg("list for a number", BASE + "Optimizer: {lr: [0.1]}\n", "c.yml:7", "Optimizer.lr"),
    cfg("null for a number", BASE.replace("epochs: 1", "epochs: null"), "c.yml:1", "Global.epochs"),
    cfg("huge YAML float", BASE + "Optimizer: {lr: 1.0e400}\n", "c.yml:7", "Optimizer.lr"),
    cfg("YAML .nan", BASE + "Optimizer: {momentum: .nan}\n", "c.yml:7", "Optimizer.momentum"),
    cfg("YAML -.inf", BASE + "LRScheduler: {eta_min: -.inf}\n", "c.yml:7", "LRScheduler.eta_min"),
    cfg("epochs 10**20 in file", BASE.replace("epochs: 1", "epochs: 100000000000000000000"), "c.yml:1", "Global.epochs"),
    cfg("seed 2**64 in file", BASE.replace("epochs: 1", "epochs: 1, seed: 18446744073709551616"), "c.yml:1", "Global.seed"),
    cfg("inf op parameter", BASE + "Transforms: {train: [{RandomCrop: {size: 8, padding: .inf}}]}\n", "c.yml:7",
        "Transforms.train[0].RandomCrop.padding"),
    # -- _base_
    cfg("_base_ a number", "_base_: 3\n" + BASE, "c.yml:1", "_base_"),
    cfg("_base_ list with a number", "_base_: [base.yml, 3]\n" + BASE, "c.yml:1", "_base_", files={"base.yml": BASE}),
    cfg("_base_ null", "_base_:\n" + BASE, "c.yml:1", "_base_"),
    cfg("_base_ missing", "_base_: missing.yml\n" + BASE, "missing.yml", "_base_"),
    cfg("_base_ absolute missing", "_base_: /nonexistent/base.yml\n" + BASE, "/nonexistent/base.yml"),
    cfg("_base_ a directory", "_base_: sub\n" + BASE, "sub", "directory", files={"sub/x.yml": BASE}),
    cfg("_base_ cycle", "_base_: b.yml\n" + BASE, "cycle", "b.yml", files={"b.yml": "_base_: c.yml\n"}),
    cfg("_base_ self", "_base_: c.yml\n" + BASE, "cycle", "c.yml"),
    cfg("_base_ empty", INHERIT, "config is empty", "base.yml", files={"base.yml": "# nothing yet\n"}),
    cfg("_base_ top level list", INHERIT, "base.yml", "top level", files={"base.yml": "- 1\n"}),
    cfg("_base_ bad YAML", INHERIT, "base.yml:3", files={"base.yml": "Global:\n  epochs 1\n  seed: 2\n"}),
    cfg("_base_ unknown key", INHERIT, "base.yml:2", "Global.epoch", files={"base.yml": "Global:\n  epoch: 1\n"}),
    cfg("_base_ out of range", INHERIT, "base.yml:1", "Optimizer.lr", files={"base.yml": "Optimizer: {lr: -1}\n"}),
    Case("-c missing", ["-c", "{d}/nope.yml"], {}, ("nope.yml", "not found")),
    Case("-c a directory", ["-c", "{d}/sub"], {"sub/c.yml": BASE}, ("sub", "directory")),
    Case("--resume not a run", ["--resume", "{d}/nothere"], {}, ("nothere",)),
    # -- -o syntax
    ovr("Global.epochs", expect=("Global.epochs", "KEY=VALUE")),
    ovr("=5", expect=("'=5'",)),
    ovr(".epochs=5", expect=(".epochs",)),
    ovr("Global.=5", expect=("Global.",)),
    ovr("Global..epochs=5", expect=("Global..epochs",)),
    ovr("Global.epochs.x=5", expect=("Global.epochs.x",)),
    ovr("Global=5", expect=("Global",)),
    ovr("Nope.x=1", expect=("Nope",)),
    ovr("Global.nope=1"),
    ovr("Global.epochs=[1"),
    ovr("Global.epochs="),
    ovr("Global.epochs=1.5"),
    ovr("Global.epochs=true"),
    ovr("Global.epochs=10**20"),
    ovr("Global.device=tpu"),
    ovr("Global.task=segmentation"),
    ovr("Data.name=imagenet"),
    ovr("Arch.name=nope", expect=("nope",)),
    ovr("Arch.nonexistent=1"),
    ovr("Arch.init=he"),
    ovr("Optimizer.name=SGDD"),
    ovr("Optimizer.regularizer=L3"),
    ovr("Optimizer.grad_clip=clip"),
    ovr("Loss.name=hinge"),
    ovr("LRScheduler.name=cosinee"),
    ovr("LRScheduler.mode=up"),
    ovr("EarlyStopping.mode=best"),
    ovr("EarlyStopping.monitor=f1"),
    ovr("EarlyStopping.monitor=acc_top3"),
    ovr("LRScheduler.monitor=accuracy"),
    ovr("Doctor.lang=fr"),
    ovr("AMP.level=O3"),
    ovr("Data.preload=maybe"),
    ovr("DataLoader.shuffle=2"),
    ovr("Checkpoint.save_best=2"),
    ovr("VisualDL.hparams=1"),
    # -- numbers out of range, non-finite, too big for int64
    *(ovr(f"Global.epochs={v}") for v in ("0", "-1", "1000001", "100000000000000000000")),
    *(ovr(f"Global.seed={v}") for v in ("-1", "4294967296", "18446744073709551616")),
    *(ovr(f"Global.num_threads={v}") for v in ("-1", "100000")),
    ovr("Global.eval_every_epochs=-1"),
    ovr("Global.eval_every_iters=-1"),
    ovr("Global.eval_every_iters=9223372036854775808"),
    ovr("Global.log_every_iters=-5"),
    *(ovr(f"Global.verbose={v}") for v in ("3", "-1")),
    *(ovr("Arch.init=normal", f"Arch.init_std={v}") for v in ("0", "-0.1", ".inf", ".nan", "nan")),
    *(ovr(f"Arch.dropout={v}") for v in ("2.0", "1.0", "-0.1", ".nan", "abc")),
    *(ovr(f"Arch.hidden={v}") for v in ("[a]", "abc", "[-1]", "[0]", "1.5", "[.inf]")),
    ovr("Arch.act_layer=Nope"),
    *(ovr(f"Arch.{v}", base=GMLP) for v in ("drop_path=2.0", "drop_path=-1", "depth=.inf", "dim=0", "depth=0",
                                            "dim=100000000000000000000", "patch_size=3", "ffn_ratio=-2")),
    *(ovr(f"Data.val_split={v}") for v in ("1.0", "-0.1", ".nan")),
    *(ovr(f"Data.fraction={v}") for v in ("0", "1.5", "-1", ".nan")),
    *(ovr(f"Data.image_size={v}") for v in ("0", "-8", "100000000000")),
    *(ovr(f"Data.num_classes={v}") for v in ("0", "-3", "2000000", "3")),
    *(ovr("Data.fraction=0.5", f"Data.split_seed={v}") for v in ("-1", "4294967295", "99999999999999999999")),
    *(ovr(f"Data.classes={v}") for v in ("[99]", "[]", "[a]", "[1.5]", "5", "[true]")),
    *(ovr(f"Data.target_mean={v}", base=REGRESSION) for v in (".inf", ".nan", "1e999")),
    *(ovr(f"Data.target_std={v}", base=REGRESSION) for v in ("0", "-1", ".inf", ".nan")),
    *(ovr(f"Transforms.mean={v}") for v in ("[.nan]", "[a]", "abc", "[2]")),
    *(ovr(f"Transforms.std={v}") for v in ("[0]", "[-1]", "[.nan]", "auto2")),
    *(ovr(f"Transforms.{k}=[.inf]", base=REGRESSION) for k in ("mean", "std")),
    *(ovr(f"Transforms.train={v}", expect=("Transforms.train",)) for v in (
        "[{Bogus: {}}]", "5", "[5]", "[{Resize: 5}]", "[{RandomCrop: {size: -1}}]", "[{RandomCrop: {size: 6, padding: .nan}}]")),
    *(ovr(f"DataLoader.batch_size={v}") for v in ("0", "-1", "1000000000000", "1.5")),
    ovr("DataLoader.eval_batch_size=0"),
    *(ovr(f"DataLoader.num_workers={v}") for v in ("-1", "100000")),
    *(ovr(f"Loss.label_smoothing={v}") for v in ("1.5", "1.0", "-0.1", ".nan")),
    *(ovr(f"Metric.topk={v}") for v in ("[a]", "[0]", "[-1]", "5", "[1.5]", "[true]", "[2000000]")),
    *(ovr(f"Optimizer.lr={v}") for v in (".inf", "-.inf", ".nan", "-0.1", "nan", "inf", "1e999", "Infinity")),
    *(ovr(f"Optimizer.momentum={v}") for v in ("-1", "1.5", ".nan")),
    ovr("Optimizer.name=Adam", "Optimizer.beta1=1.0"),
    ovr("Optimizer.name=Adam", "Optimizer.beta2=2"),
    *(ovr("Optimizer.name=Adam", f"Optimizer.epsilon={v}") for v in ("0", "-1e-8")),
    ovr("Optimizer.name=RMSProp", "Optimizer.rho=2"),
    *(ovr(f"Optimizer.weight_decay={v}") for v in ("-1", ".inf")),
    *(ovr("Optimizer.grad_clip=norm", f"Optimizer.clip_value={v}") for v in ("0", "-1")),
    *(ovr("LRScheduler.name=step", v) for v in ("LRScheduler.step_size=0", "LRScheduler.gamma=0")),
    ovr("LRScheduler.gamma=-1"),
    *(ovr("LRScheduler.name=multistep", f"LRScheduler.milestones={v}") for v in ("[a]", "5", "[-1]")),
    ovr("LRScheduler.name=onecycle", "LRScheduler.pct_start=1.5"),
    ovr("LRScheduler.name=onecycle", "LRScheduler.div_factor=0"),
    ovr("LRScheduler.name=plateau", "LRScheduler.factor=1.0"),
    ovr("LRScheduler.name=polynomial", "LRScheduler.power=0"),
    ovr("LRScheduler.patience=-1"),
    ovr("LRScheduler.threshold=.nan"),
    *(ovr(f"LRScheduler.warmup_epochs={v}") for v in ("-1", ".inf", "2000000")),
    ovr("LRScheduler.warmup_start_lr=-1"),
    ovr("LRScheduler.eta_min=-1"),
    ovr("EarlyStopping.patience=-1"),
    *(ovr(f"EarlyStopping.min_delta={v}") for v in ("-1", ".nan")),
    ovr("Checkpoint.save_every_epochs=-1"),
    ovr("VisualDL.histograms_every_epochs=-1"),
    *(ovr(f"VisualDL.sample_images={v}") for v in ("-1", "100000")),
    ovr("Doctor.sample_every=0"),
    ovr("Doctor.grad_every=-1"),
    *(ovr(f"FineTune.freeze={v}") for v in ("[1]", "5", "['re:[']", "[nomatch]")),
    *(ovr(f"FineTune.lr_mult={v}") for v in ("{head: -1}", "[1]", "{head: .nan}", "{head: x}")),
    ovr("FineTune.head_epochs=-1"),
    *(ovr(f"FineTune.body_lr_mult={v}") for v in ("-1", ".inf")),
    *(ovr(f"EMA.decay={v}") for v in ("1", ".nan")),
    ovr("EMA.every_iters=0"),
    *(ovr(f"AMP.scale_loss={v}") for v in ("0", ".inf")),
    *(ovr(f"AMP.custom_white_list={v}") for v in ("5", "[1]")),
    ovr("Global.pretrained_model={d}/nope.pdparams"),
    ovr("Global.checkpoints={d}/nothere", expect=("nothere",)),
    # -- file lists and label files
    fl("train list missing", "train_list.txt", "not found", files={"train_list.txt": None}),
    fl("train list empty", "train_list.txt", "no samples", files={"train_list.txt": ""}),
    fl("train list comments only", "train_list.txt", "no samples", files={"train_list.txt": "# path label\n"}),
    fl("image missing", "train_list.txt:2", "image not found", files={"train_list.txt": "images/a0.png 0\nimages/zz.png 1\n"}),
    fl("label not a number", "train_list.txt:1", files={"train_list.txt": "images/a0.png cat\n"}),
    fl("label a float", "train_list.txt:1", files={"train_list.txt": "images/a0.png 0.5\n"}),
    fl("one column", "train_list.txt:1", files={"train_list.txt": "images/a0.png\n"}),
    fl("extra column", "train_list.txt:1", "3 columns", files={"train_list.txt": "images/a0.png 0 1\n"}),
    fl("negative label", "train_list.txt:1", files={"train_list.txt": "images/a0.png -1\nimages/b0.png 1\n"}),
    fl("label past labels.txt", "train_list.txt:2", files={"train_list.txt": "images/a0.png 0\nimages/b0.png 5\n"}),
    fl("label 2,000,000", "train_list.txt:1", files={"train_list.txt": "images/a0.png 2000000\n", "labels.txt": None}),
    fl("val image missing", "val_list.txt:1", files={"val_list.txt": "images/zz.png 0\n"}),
    fl("labels empty", "labels.txt", "empty", files={"labels.txt": "\n\n"}),
    fl("label id twice", "labels.txt:2", files={"labels.txt": "0 cat\n0 dog\n"}),
    fl("label ids with a gap", "labels.txt", "id 1", files={"labels.txt": "0 cat\n2 dog\n"}),
    fl("label id 10,000,000", "labels.txt", "id 1", files={"labels.txt": "0 cat\n10000000 dog\n"}),
    fl("label name twice", "labels.txt:3", "'dog'", files={"labels.txt": "cat\ndog\ndog\n"}),
    fl("image not an image", "a0.png", "unreadable", files={"images/a0.png": "not a png\n"}),
    fl("train list a directory", "images", argv=("-o", "Data.train_list=images")),
    cfg("data_dir missing", FILELIST.replace("{d}/ds", "{d}/nothere"), "nothere"),
    cfg("data_dir a file", FILELIST.replace("{d}/ds", "{d}/c.yml"), "c.yml"),
    cfg("data_dir null", FILELIST.replace("data_dir: '{d}/ds', ", ""), "Data.data_dir"),
    # -- class folders
    cfg("folder without classes", FILELIST.replace("filelist", "folder"), "no class folders", files={"ds/readme.md": "x"}),
    cfg("folder class empty", FILELIST.replace("filelist", "folder"), "empty class folder", files={
        "ds/cat/readme.txt": "no images", "ds/dog/x.txt": "x"}),
    cfg("folder val class unknown", FILELIST.replace("filelist", "folder"), "cow", "not in", files={
        "ds/train/cat/a.png": "png:", "ds/train/dog/b.png": "png:", "ds/val/cow/c.png": "png:"}),
    cfg("folder image unreadable", FILELIST.replace("filelist", "folder"), "b.png", "unreadable", files={
        "ds/cat/a.png": "png:", "ds/dog/b.png": "not a png"}),
]

# Odd but valid: these must reach training.
VALID = [
    cfg("config with a BOM", "\ufeff" + BASE),
    cfg("base with a BOM", INHERIT, files={"base.yml": "\ufeff" + BASE}),
    cfg("config with CRLF", BASE.replace("\n", "\r\n")),
    cfg("merge key overridden", BASE.replace("Global: {epochs: 1,", "Global: {<<: {epochs: 3}, epochs: 1,")),
    cfg("same key in two sections", BASE + "LRScheduler: {patience: 2}\nEarlyStopping: {patience: 2}\n"),
    cfg("anchor used twice", BASE + "Transforms:\n  train: &ops [{Normalize: {}}]\n  eval: *ops\n"),
    cfg("empty _base_ list", "_base_: []\n" + BASE),
    fl("train list with a BOM", files={"train_list.txt": "\ufeff" + TRAIN_LIST}),
    fl("labels with a BOM", files={"labels.txt": "\ufeff" + LABELS}),
    fl("train list with CRLF", files={"train_list.txt": TRAIN_LIST.replace("\n", "\r\n")}),
]


class WouldTrain(Exception):
    """Raised by the guard in place of ``paddle.Model.fit``: the tool accepted the input."""


class Outcome(NamedTuple):
    kind: str   # clean | unclear | traceback | accepted
    detail: str


def make_images(root: str) -> None:
    """ds/images/{a,b}{0,1,2}.png: 8x8 gray images (a* dark, b* light)."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    for c, level in (("a", 40), ("b", 200)):
        for i in range(3):
            Image.fromarray(np.full((8, 8), level + i, np.uint8)).save(os.path.join(root, "images", f"{c}{i}.png"))


def materialize(case: Case, d: str) -> list[str]:
    """Write the case's files under ``d``; its argv with ``{d}`` filled in and a private output dir first."""
    if case.images:
        make_images(os.path.join(d, "ds"))
    for rel, content in case.files.items():
        path = os.path.join(d, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(content, str) and content.startswith("png:"):  # a real image for the folder cases
            Image.fromarray(np.full((8, 8), 99, np.uint8)).save(path)
            continue
        data = content.replace("{d}", d).encode() if isinstance(content, str) else content
        with open(path, "wb") as f:
            f.write(data)
    # first, so a case's own -o Global.output_dir would win
    return ["-o", f"Global.output_dir={d}/out", *(a.replace("{d}", d) for a in case.argv)]


def run_dirs(d: str) -> list[str]:
    """Run directories created under the case's output dir (<out>/<config>/<run>)."""
    out = os.path.join(d, "out")
    return [os.path.join(c, r) for c in (os.listdir(out) if os.path.isdir(out) else [])
            for r in os.listdir(os.path.join(out, c))]


def classify(case: Case, code: object, err: str) -> Outcome:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    if code == 2 and len(lines) == 1 and "Traceback" not in err and all(f in lines[0] for f in case.expect):
        return Outcome("clean", lines[0])
    return Outcome("unclear", f"exit {code}: {err.strip()[-400:]}")


def run_in_process(main: Callable, case: Case, d: str) -> Outcome:
    """``main(argv)`` of tools/train.py with stdout/stderr captured; ``paddle.Model.fit`` must be guarded."""
    argv = materialize(case, d)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main(argv)
        return Outcome("accepted", "returned")
    except SystemExit as e:
        return classify(case, e.code, err.getvalue())
    except WouldTrain:
        return Outcome("accepted", "reached paddle.Model.fit")
    except Exception:  # the defect this corpus hunts: a traceback
        return Outcome("traceback", traceback.format_exc().strip().splitlines()[-1])


def load_main(root: str) -> Callable:
    """``main`` of ``root``/tools/train.py (it puts ``root`` first on sys.path itself)."""
    spec = importlib.util.spec_from_file_location("malformed_train_tool", os.path.join(root, "tools", "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@contextlib.contextmanager
def fit_guard():
    """``paddle.Model.fit`` raises :class:`WouldTrain`; the SIGTERM handler a tool installs is put back after."""
    import signal

    import paddle

    def guard(*args, **kwargs):
        raise WouldTrain()

    real, paddle.Model.fit = paddle.Model.fit, guard
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        paddle.Model.fit = real
        signal.signal(signal.SIGTERM, sigterm)


# --------------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def loaded_main():
    return load_main(ROOT)


@pytest.fixture
def train_main(loaded_main):
    with fit_guard():
        yield loaded_main


def test_corpus_is_large_and_ids_unique():
    assert len(CASES) >= 100
    ids = [c.id for c in CASES + VALID]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_is_one_clear_error(train_main, case, tmp_path):
    out = run_in_process(train_main, case, str(tmp_path))
    assert out.kind == "clean", f"{out.kind}: {out.detail}"
    assert run_dirs(str(tmp_path)) == [], "a rejected input left a run directory"


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_odd_but_valid_input_reaches_training(train_main, case, tmp_path):
    out = run_in_process(train_main, case, str(tmp_path))
    assert out.kind == "accepted", f"{out.kind}: {out.detail}"


SUBPROCESS = ["config latin-1", "key twice", "empty file", "section list, then -o", "train list BOM, bad line 2",
              "Global.seed=18446744073709551616", "Arch.dropout=2.0"]


@pytest.mark.parametrize("name", SUBPROCESS)
def test_malformed_input_through_a_real_process(name, tmp_path):
    case = next(c for c in CASES if c.id == name)
    # guard: were the input accepted, one short epoch on a fraction of the data (then the test fails)
    guard = ["-o", "Global.epochs=1", "-o", "Data.fraction=0.1"]
    argv = guard + materialize(case, str(tmp_path))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train.py"), *argv], capture_output=True,
                          text=True, timeout=300, env=env)
    out = classify(case, proc.returncode, proc.stderr)
    assert out.kind == "clean", f"{out.kind}: {out.detail}\n{proc.stderr[-2000:]}"
    assert run_dirs(str(tmp_path)) == []


def test_filelist_with_bom_reads_names_and_paths(tmp_path):
    from utils.data.sources.filelist import load_filelist

    make_images(str(tmp_path))
    (tmp_path / "train_list.txt").write_text("\ufeff" + TRAIN_LIST.replace("\n", "\r\n"), encoding="utf-8")
    (tmp_path / "labels.txt").write_text("\ufeff0 cat\n1 dog\n", encoding="utf-8")
    data = {"data_dir": str(tmp_path), "train_list": "train_list.txt", "val_list": "val_list.txt",
            "label_file": "labels.txt", "num_classes": None, "preload": True, "name": "filelist"}
    src = load_filelist({"Data": data})
    assert src.class_names == ["cat", "dog"]
    idx, labels = src.splits["train"]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1] and len(idx) == 6


def test_folder_names_that_are_not_utf8_become_printable_class_names(tmp_path):
    import json

    import yaml

    from utils.data.sources.folder import load_folder

    for name in (b"caf\xe9", b"dog"):  # a cp1252 name from a Windows archive, and a plain one
        folder = os.path.join(os.fsencode(str(tmp_path)), name)
        os.makedirs(folder)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 50 * i, np.uint8)).save(os.path.join(folder, b"%d.png" % i))
    src = load_folder({"Data": {"data_dir": str(tmp_path), "preload": True, "name": "folder"}})
    assert src.class_names == ["caf\\xe9", "dog"]
    assert src.splits["train"][1].tolist() == [0, 0, 1, 1]
    json.dumps(src.class_names, ensure_ascii=False).encode("utf-8")  # lone surrogates would raise here
    yaml.safe_dump(src.class_names, allow_unicode=True).encode("utf-8")


def test_factory_errors_of_any_type_name_the_argument():
    from models import build_model
    from utils.errors import ConfigError

    # Paddle raises SystemError (not TypeError/ValueError) for a width past int64
    with pytest.raises(ConfigError, match=r"^Arch\.dim: model 'gmlp_tiny' rejected dim=10{20}: SystemError"):
        build_model("gmlp_tiny", in_channels=1, image_size=8, patch_size=2, dim=10**20, depth=1)
    # several arguments: the one whose default lets the model build is named
    with pytest.raises(ConfigError, match=r"^Arch\.patch_size: .* not divisible by patch_size 3"):
        build_model("gmlp_tiny", in_channels=1, image_size=8, dim=16, patch_size=3, depth=1)
    # the data's image size at fault: no argument is blamed, all are listed
    with pytest.raises(ConfigError, match=r"^Arch: model 'resnet20' rejected its arguments \(width=1\): image_size 2"):
        build_model("resnet20", image_size=2, width=1)


# --------------------------------------------------------------------------- figures

def measure(root: str) -> dict[str, list[tuple[str, str]]]:
    """{kind: [(case id, detail)]} of the corpus run against the project at ``root``."""
    import tempfile

    main = load_main(root)
    kinds = {"clean": [], "unclear": [], "traceback": [], "accepted": []}
    valid = {"accepted": [], "rejected": []}
    with fit_guard(), tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(CASES + VALID):
            d = os.path.join(tmp, str(i))
            os.makedirs(d)
            out = run_in_process(main, case, d)
            if i < len(CASES):
                kinds[out.kind].append((case.id, out.detail))
            else:
                valid["accepted" if out.kind == "accepted" else "rejected"].append((case.id, out.detail))
    return {**kinds, **{f"valid {k}": v for k, v in valid.items()}}


if __name__ == "__main__":
    target = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    figures = measure(target)
    for kind in ("traceback", "accepted", "unclear", "valid rejected"):
        for cid, detail in figures[kind]:
            print(f"{kind:>14}  {cid}: {detail[:160]}")
    print(f"{target}: {len(CASES)} malformed inputs: {len(figures['clean'])} clean, {len(figures['unclear'])} unclear, "
          f"{len(figures['traceback'])} traceback, {len(figures['accepted'])} silently accepted; "
          f"{len(VALID)} odd but valid inputs: {len(figures['valid accepted'])} reach training")
