"""What every picture of a run shares: the :class:`PlotResult` it returns, loading the run's
network, reading an image the way the eval pipeline does, and one forward pass.

Paddle is imported inside the functions: the tool sets the thread count from the config
before Paddle is imported (see :func:`utils.runs.open_run`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from utils.build import build_network, network_input_side
from utils.data import build_datasets
from utils.errors import UserError
from utils.visual import plots

if TYPE_CHECKING:
    import paddle

    from utils.data import DataBundle


@dataclasses.dataclass
class PlotResult:
    """What a plotting function wrote.

    Attributes:
        path: the PNG file.
        size: (width, height) in pixels.
        panels: content panels drawn (colorbars, legends and blank cells not counted).
        notes: remarks for the user (e.g. the image was resized), printed by the tool.
    """
    path: str
    size: tuple
    panels: int
    notes: list = dataclasses.field(default_factory=list)


def load_network(cfg: dict, checkpoint: str, bundle: DataBundle | None = None) -> tuple[paddle.nn.Layer, DataBundle]:
    """(network in eval mode with the checkpoint's weights, data bundle)."""
    # imports paddle: deferred until the thread count is set
    from utils.training.checkpoint import load_weights  # imports paddle: deferred until the thread count is set

    bundle = bundle if bundle is not None else build_datasets(cfg)
    network = build_network(cfg, bundle)
    load_weights(network, checkpoint)
    network.eval()
    return network, bundle


def norm_stats(transform: object) -> tuple[tuple | None, tuple | None]:
    """(mean, std) the pipeline normalizes with, or (None, None) when it does not normalize.

    These are ``Transforms.mean/std`` unless the config's ``Normalize`` gives its own values;
    the built pipeline (``Compose``) holds the ones actually applied, so they are read there.
    """
    return getattr(transform, "mean", None), getattr(transform, "std", None)


def load_image(path: str, bundle: DataBundle) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read an image file and push it through the eval pipeline.

    Args:
        path: PNG/JPEG/BMP file.
        bundle: the :class:`~utils.data.DataBundle` (eval transform, channels, input side).

    Returns:
        (x, picture, notes): x is float32 [1, C, H, W] as the network takes it; picture the
        same input de-normalized to HWC [0, 1] for drawing; notes a list of remarks.

    Raises:
        UserError: missing or unreadable file.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such image file; pass a PNG or JPEG image")
    mode = "L" if bundle.in_channels == 1 else "RGB"
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: cannot read this image ({reason}); pass a PNG or JPEG image") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    side = network_input_side(bundle)
    want = (bundle.in_channels, side, side)
    t = bundle.eval_transform
    notes = []
    x = None
    try:
        x = t(arr)
    except UserError:  # e.g. a CenterCrop larger than this image
        pass
    if x is None or tuple(x.shape) != want:
        # Transforms.eval of digits has no Resize (the data is all 8x8), so any other size would
        # not fit the model: bring the file to the model's input side first, as the data was.
        resized = np.asarray(Image.fromarray(arr[:, :, 0] if mode == "L" else arr).resize((side, side), Image.BILINEAR))
        x = t(resized[:, :, None] if resized.ndim == 2 else resized)
        notes.append(f"{path} is {arr.shape[0]}x{arr.shape[1]}: resized to {side}x{side} (the model's input) "
                     f"before Transforms.eval")
    mean, std = norm_stats(t)
    return x[None].astype(np.float32), plots.denormalize(x, mean, std), notes


def forward(network: paddle.nn.Layer, x: np.ndarray) -> np.ndarray:
    """The network's output on ``x`` (numpy in, numpy out), without gradients."""
    import paddle  # deferred until the thread count is set

    with paddle.no_grad():
        return network(paddle.to_tensor(x)).numpy()


def model_name(cfg: dict) -> str:
    """The config's model name (``Arch.name``), as titles and messages show it."""
    return cfg["Arch"]["name"]
