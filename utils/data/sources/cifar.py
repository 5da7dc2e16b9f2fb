"""``cifar10`` / ``cifar100``: the official *python version* tar.gz, read directly with tarfile +
pickle into uint8 arrays.

``Data.data_dir`` is the .tar.gz file, a folder holding it under its official name, or null for
Paddle's cache (~/.cache/paddle/dataset/cifar/). A missing archive is downloaded when
``Data.download`` is true (the CIFAR base configs set it, as ``paddle.vision.datasets.Cifar10``
downloads by default): Paddle fetches it into its cache with a progress bar and its md5 check,
then it is copied to ``data_dir``. Val is carved from train (45k/5k at ``val_split: 0.1``); the
official test set is ``test``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
import shutil
import sys
import tarfile

import numpy as np

from utils.data.registry import ImageSource, check_label_range, register_dataset
from utils.data.storage import ArrayStore
from utils.errors import DataError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclasses.dataclass(frozen=True)
class CifarSpec:
    """One CIFAR archive: where it comes from and its checksum (Paddle's table, paddle.vision.datasets.cifar)."""
    title: str
    file: str
    url: str          # Paddle's mirror (what paddle.vision.datasets downloads)
    md5: str          # Paddle's, also the one the CIFAR page lists for the official archive
    official_url: str
    mean: tuple
    std: tuple


CIFAR = {
    "cifar10": CifarSpec("CIFAR-10", "cifar-10-python.tar.gz",
                          "https://dataset.bj.bcebos.com/cifar/cifar-10-python.tar.gz",
                          "c58f30108f718f92721af3b95e74349a",
                          "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                          (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": CifarSpec("CIFAR-100", "cifar-100-python.tar.gz",
                           "https://dataset.bj.bcebos.com/cifar/cifar-100-python.tar.gz",
                           "eb9058c3a382ffc7106e4002c42a8d85",
                           "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                           (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


FOLDER_ROUTE = "-o Data.name=folder -o Data.data_dir=DIR"  # the other way to train: your own class folders


def _cifar_path(cfg, spec):
    dc = cfg["Data"]
    data_dir = dc["data_dir"]
    if data_dir is None:
        from paddle.dataset.common import DATA_HOME  # imports paddle: deferred until the thread count is set
        path = os.path.join(DATA_HOME, "cifar", spec.file)
    elif os.path.isdir(data_dir):
        path = os.path.join(data_dir, spec.file)
    else:
        path = data_dir
    if os.path.isfile(path):
        return path
    if dc.get("download", False):
        return download_cifar(spec, path)
    raise DataError(f"{spec.title} archive not found: {path} (Data.download is false); either download "
                    f"{spec.official_url} to that path (keep it as .tar.gz) or set Data.data_dir to where it is, "
                    f"let it download with -o Data.download=true, or train on your own image folders "
                    f"with {FOLDER_ROUTE}")


def _md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_cifar(spec: CifarSpec, target: str) -> str:
    """Download ``spec``'s archive with Paddle into its cache and copy it to ``target``; returns ``target``.

    Paddle's ``download`` shows a progress bar, checks the md5 of Paddle's table (``spec.md5``), retries
    3 times and returns the cached file at once when it is already there with the right md5. The copy
    is written beside ``target`` and renamed, so an interrupted run never leaves a torn archive.

    Raises:
        DataError: offline (naming both ways on: the file by hand, or image folders), checksum mismatch
            (the bad file removed), or ``target`` not writable.
    """
    from paddle.dataset import common  # imports paddle: deferred until the thread count is set

    cached = os.path.join(common.DATA_HOME, "cifar", spec.file)
    print(f"{spec.title} archive not found at {target}: downloading {spec.url} into {cached} "
          f"(md5 checked; -o Data.download=false forbids downloading)", file=sys.stderr, flush=True)
    try:
        got = common.download(spec.url, "cifar", spec.md5)
    except Exception as e:  # network errors come in many types; Paddle wraps the last one in a RuntimeError
        if os.path.isfile(cached) and (digest := _md5(cached)) != spec.md5:
            with contextlib.suppress(OSError):
                os.remove(cached)  # a cut or altered download: the next attempt starts clean
            raise DataError(f"downloaded {spec.url} has md5 {digest}, expected {spec.md5} (Paddle's checksum "
                            f"of {spec.file}): the download was cut short or altered and was removed; run again "
                            f"to retry, or download {spec.official_url} by hand to {target}") from None
        reason = ((str(e).splitlines() or [""])[0] or type(e).__name__).replace(spec.url, "it")
        raise DataError(f"{spec.title} archive not found: {target}, and downloading {spec.url} failed ({reason}); "
                        f"place it by hand: download {spec.official_url} to {target} (keep it as .tar.gz), "
                        f"or train on your own image folders with {FOLDER_ROUTE}") from None
    if os.path.abspath(got) != os.path.abspath(target):
        part = f"{target}.part"
        try:
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
            shutil.copyfile(got, part)
            os.replace(part, target)
        except OSError as e:
            raise DataError(f"cannot write the downloaded archive to {target} ({e.strerror or e}): set "
                            f"Data.data_dir to a writable path, or to null to read it from {got}") from None
        finally:  # also on Ctrl-C: no half-copied .part left beside the data
            with contextlib.suppress(OSError):
                os.remove(part)
    return target


def _pget(d, key):
    """Value of a CIFAR pickle key, stored as bytes (official files) or str."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _read_cifar(path, name):
    spec = CIFAR[name]
    hint = f"expected the python version of {spec.title} ({spec.official_url})"
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{path}: not a readable tar archive ({e}); {hint}") from None
    parts = {"train": [], "test": []}
    names = None
    label_key = "labels" if name == "cifar10" else "fine_labels"
    with tf:
        try:
            members = sorted((m for m in tf.getmembers() if m.isfile()), key=lambda m: m.name)
            for m in members:
                base = os.path.basename(m.name)
                if name == "cifar10":
                    split = "train" if "data_batch" in base else "test" if "test_batch" in base else None
                    is_meta = base == "batches.meta"
                else:
                    split = base if base in ("train", "test") else None
                    is_meta = base == "meta"
                if split is None and not is_meta:
                    continue
                d = pickle.load(tf.extractfile(m), encoding="bytes")
                if is_meta:
                    raw = _pget(d, "label_names" if name == "cifar10" else "fine_label_names")
                    if raw is not None:
                        names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
                    continue
                data, labels = _pget(d, "data"), _pget(d, label_key)
                if data is None or labels is None:
                    raise DataError(f"{path}: member {m.name} has no '{label_key}' entry; {hint}")
                parts[split].append((np.asarray(data, dtype=np.uint8), np.asarray(labels, dtype=np.int64)))
        except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError) as e:
            raise DataError(f"{path}: corrupt archive ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                            f"download it again ({spec.official_url})") from None
    if not parts["train"]:
        other = "cifar100" if name == "cifar10" else "cifar10"
        raise DataError(f"{path}: no {spec.title} training batches found; {hint} "
                        f"(for {CIFAR[other].title} use -o Data.name={other})")
    num_classes = 10 if name == "cifar10" else 100
    if names is None or len(names) != num_classes:
        names = CIFAR10_NAMES if name == "cifar10" else [str(i) for i in range(100)]

    def stack(items):
        data = np.concatenate([d for d, _ in items])
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{path}: image rows have {data.shape[-1]} values, expected 3072 (32x32x3); {hint}")
        return (np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)),
                np.concatenate([lab for _, lab in items]))

    train_x, train_y = stack(parts["train"])
    arrays, splits = [train_x], {"train": (np.arange(len(train_y)), train_y)}
    if parts["test"]:
        test_x, test_y = stack(parts["test"])
        arrays.append(test_x)
        splits["test"] = (np.arange(len(test_y)) + len(train_y), test_y)
    store = ArrayStore(np.concatenate(arrays) if len(arrays) > 1 else train_x)
    for split, (_, labels) in splits.items():
        check_label_range(labels, num_classes, f"{path} ({split})")
    return ImageSource(store, splits, names, 3, mean=spec.mean, std=spec.std, where=path)


@register_dataset("cifar10", "cifar100")
def load_cifar(cfg: dict) -> ImageSource:
    """The archive of ``Data.name`` (found, or downloaded when ``Data.download``), read into memory."""
    name = cfg["Data"]["name"]
    return _read_cifar(_cifar_path(cfg, CIFAR[name]), name)
