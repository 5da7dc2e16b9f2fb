"""Building blocks every tool shares: threads and device, the network for the data.

The floor below the training spine: ``utils/trainer.py``, ``utils/runs.py`` and the optional tools
take these from here rather than from each other.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from typing import TYPE_CHECKING

import numpy as np

from utils.config import model_kwargs
from utils.errors import UserError

if TYPE_CHECKING:
    import paddle

    from utils.data import DataBundle


def configure_threads(num_threads: int = 0) -> int:
    """Give Paddle's CPU kernels ``num_threads`` threads (0 = every core).

    Paddle sets OMP_NUM_THREADS=1 at import when it is unset; on 2 cores a 4-conv CNN ran
    ~160 img/s with 2 threads vs ~120 with 1. The variable must be set before paddle is
    imported, so tools call this first. An explicit OMP_NUM_THREADS in the environment wins.
    """
    # Data parallel on one machine: the launcher's processes share the cores (PADDLE_LOCAL_SIZE of
    # them; read here, not via utils.addons.distributed, which imports paddle).
    local = max(1, int(os.environ.get("PADDLE_LOCAL_SIZE") or 1))
    n = num_threads or max(1, (os.cpu_count() or 1) // local)
    # BatchNorm in train mode warns once per process "we now always track global mean and
    # variance": a notice about Paddle's behaviour, not about the user's run (every tool trains some).
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
    if "paddle" in sys.modules:
        return int(os.environ.get("OMP_NUM_THREADS", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    # Paddle prints a data-parallel warning about OMP_NUM_THREADS > 1 and a ccache notice at
    # import; neither applies to a single-process run.
    with contextlib.redirect_stderr(io.StringIO()):
        import paddle  # noqa: F401
    return int(os.environ["OMP_NUM_THREADS"])


def select_device(name: str = "auto") -> str:
    """Set Paddle's device from ``Global.device``; returns the device string used."""
    import paddle

    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise UserError("Global.device: gpu requested but Paddle sees no GPU (install paddlepaddle-gpu, "
                        "or use -o Global.device=cpu)")
    device = "gpu" if (name == "gpu" or (name == "auto" and has_gpu)) else "cpu"
    paddle.set_device(device)
    return device


def topk_for(cfg: dict, num_classes: int) -> tuple[int, ...]:
    """The ``Metric.topk`` values that fit ``num_classes``, sorted, top-1 always among them."""
    ks = sorted({int(k) for k in cfg["Metric"]["topk"] if int(k) <= num_classes} | {1})
    return tuple(ks)


def network_input_side(bundle: DataBundle) -> int:
    """The side of the square images the pipeline outputs; non-square is a UserError with the fix."""
    size = bundle.image_size
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise UserError(f"the images are {size[0]}x{size[1]} but the models take square inputs: "
                            f"set Data.image_size (e.g. -o Data.image_size={max(size)})")
        size = size[0]
    return int(size)


# Models that take a flat feature vector (tabular data arrives as num_features x 1 x 1 and they flatten it).
TABULAR_MODELS = ("mlp",)


def build_network(cfg: dict, bundle: DataBundle) -> paddle.nn.Layer:
    """The model of ``Arch`` for this data (classes, channels, size)."""
    from models import build_model  # imports paddle: deferred until the thread count is set

    a = cfg["Arch"]
    if getattr(bundle, "num_features", None) and a["name"] not in TABULAR_MODELS:
        raise UserError(f"Arch.name: {a['name']!r} takes images, but Data.name {bundle.name} is a table of "
                        f"{bundle.num_features} features: use {' or '.join(TABULAR_MODELS)}")
    size = network_input_side(bundle)
    return build_model(a["name"], num_classes=bundle.num_classes, in_channels=bundle.in_channels,
                       image_size=size, init=a["init"], init_std=a["init_std"], **model_kwargs(cfg))


# 5,000 images give 4.8M 2x2 patches at 32 x 32: the 12 x 12 covariance is settled to well under
# 1% (a second draw of 5,000 moved the eigenvalues by < 0.5%), in under a second.
DATA_INIT_SAMPLES = 5000


def init_from_data(network: paddle.nn.Layer, bundle: DataBundle, seed: int = 0,
                   samples: int = DATA_INIT_SAMPLES) -> int:
    """Run ``init_from_data`` of every layer that has one on a sample of training images.

    The images go through the evaluation pipeline (normalized, not augmented), as the model sees
    them at test time. Returns the number of images used (0 when no layer asks).
    """
    from models.init import data_init_layers  # imports paddle: deferred until the thread count is set

    layers = data_init_layers(network)
    if not layers or bundle.train is None or bundle.eval_transform is None:
        return 0
    ds = bundle.train
    n = min(samples, len(ds))
    picked = np.sort(np.random.RandomState(seed).choice(len(ds), n, replace=False))
    images = np.stack([bundle.eval_transform(ds.raw(int(i))[0]) for i in picked]).astype(np.float32)
    for layer in layers:
        layer.init_from_data(images)
    return n
