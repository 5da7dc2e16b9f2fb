"""Feature maps: what chosen layers output for one image, caught with forward post hooks.

Each layer gets a row: its mean over channels, then its most active channels; gMLP's tokens
are laid back on their patch grid, non-spatial outputs (a head's logits) drawn as bars.
"""
from __future__ import annotations

import difflib
import math
import os
from typing import TYPE_CHECKING

import numpy as np

from utils.errors import UserError, did_you_mean
from utils.visual import plots
from utils.visual.common import PlotResult, forward, load_image, load_network, model_name

if TYPE_CHECKING:
    import paddle

# Layer classes drawn by default: the repeated blocks of each model family (a stage/block
# output is more telling than the raw output of one conv inside it). Models without any
# fall back to their Conv2D layers, then to their Linear layers.
BLOCK_TYPE_NAMES = ("ConvStage", "BasicBlock", "Inception", "GMLPBlock")
DEFAULT_FEATURE_LAYERS = 4     # evenly spaced layers drawn when --layers is not given
FEATURE_CHANNELS = 8           # channels drawn per layer (the most active ones)
LIST_NAMES_MAX = 30            # error messages: list at most this many layer names


def _names_hint(names: list[str], wrong: str) -> str:
    """'valid names: ...' abbreviated to LIST_NAMES_MAX names (with the close matches kept)."""
    if len(names) <= LIST_NAMES_MAX:
        return f"valid names: {', '.join(names)}"
    close = difflib.get_close_matches(wrong, names, n=3, cutoff=0.5)
    top = [n for n in names if n.count(".") <= 1][: LIST_NAMES_MAX - len(close)]
    shown = close + [n for n in top if n not in close]
    return (f"valid names ({len(names)}, top levels shown): {', '.join(shown)}, ...; "
            f"deeper names extend these with '.<index>' as in network.named_sublayers()")


def check_layers(network: paddle.nn.Layer, names: list[str], cfg: dict) -> None:
    """Raise a one-line UserError for the first of ``names`` that is not a layer of ``network``."""
    valid = [n for n, _ in network.named_sublayers()]
    for name in names:
        if name not in valid:
            raise UserError(f"--layers {name}: {model_name(cfg)} has no layer '{name}'{did_you_mean(name, valid)}; "
                            f"{_names_hint(valid, name)}")


def default_feature_layers(network: paddle.nn.Layer, k: int = DEFAULT_FEATURE_LAYERS) -> list[str]:
    """Up to ``k`` evenly spaced layer names: the model's blocks, else its Conv2D, else Linear layers."""
    import paddle.nn as nn  # deferred until the thread count is set

    subs = list(network.named_sublayers())
    for pick in (lambda l: type(l).__name__ in BLOCK_TYPE_NAMES,
                 lambda l: isinstance(l, nn.Conv2D),
                 lambda l: isinstance(l, nn.Linear)):
        names = [n for n, l in subs if pick(l)]
        if names:
            return plots.evenly_spaced(names, k)
    return plots.evenly_spaced([n for n, _ in subs], k)


def _as_maps(output: np.ndarray) -> np.ndarray:
    """A layer's output for one image -> [C, h, w] maps, or a [F] vector when not spatial.

    gMLP tokens [1, L, C] with L a square number are laid back on their patch grid.
    """
    a = np.asarray(output)[0]
    if a.ndim == 3:
        return a
    if a.ndim == 2:
        g = int(round(math.sqrt(a.shape[0])))
        if g * g == a.shape[0]:
            return a.T.reshape(a.shape[1], g, g)
        return a[None]
    return a.ravel()


def capture_outputs(network: paddle.nn.Layer, x: np.ndarray, names: list[str]) -> tuple[np.ndarray, dict]:
    """Run ``network`` on ``x`` with forward post hooks on ``names``.

    Returns:
        (logits numpy, {name: output numpy}); the hooks are removed even on error.
    """
    layers = dict(network.named_sublayers())
    captured = {}

    def hook_for(name):
        def hook(layer, inputs, output):
            first = output[0] if isinstance(output, (tuple, list)) else output
            captured[name] = first.detach().numpy()
        return hook

    handles = [layers[n].register_forward_post_hook(hook_for(n)) for n in names]
    try:
        logits = forward(network, x)
    finally:
        for h in handles:
            h.remove()
    return logits, captured


def plot_features(cfg: dict, checkpoint: str, image: str, out: str, layers: list[str] | None = None) -> PlotResult:
    """Feature maps of chosen layers for one image.

    Each layer gets one row: its mean over channels, then its 8 most active channels (largest
    mean |activation|), with the count of all-zero ("dead") channels in the row title.

    Args:
        cfg: the run's config.
        checkpoint: checkpoint prefix.
        image: image file (read with PIL, pushed through ``Transforms.eval``).
        out: PNG path.
        layers: names as in ``network.named_sublayers()``; None = :func:`default_feature_layers`.

    Returns:
        :class:`PlotResult`; panels = 1 (input) + per layer 1 (mean or vector) + channels drawn.

    Raises:
        UserError: unknown layer name (valid ones listed), missing/unreadable image.
    """
    from utils.training.evaluate import softmax  # imports paddle: deferred until the thread count is set

    network, bundle = load_network(cfg, checkpoint)
    if layers:
        check_layers(network, layers, cfg)
    names = list(layers) if layers else default_feature_layers(network)
    x, picture, notes = load_image(image, bundle)
    logits, captured = capture_outputs(network, x, names)
    sublayers = dict(network.named_sublayers())
    probs = softmax(logits[0])
    pred = int(probs.argmax())

    cols = 1 + FEATURE_CHANNELS
    rows = 1 + len(names)
    cell = 160
    fig = plots.new_figure(cols * cell, rows * cell + 60)
    axes = plots.grid(fig, rows, cols)
    plots.off(axes)
    plots.show_image(axes[0, 0], picture, "input (Transforms.eval)", fontsize=8)
    axes[0, 0].set_axis_on()
    panels = 1
    for r, name in enumerate(names, start=1):
        if name not in captured:
            axes[r, 0].text(0, 0.5, f"{name}: not called in forward", fontsize=8)
            notes.append(f"{name}: the layer is not called in the forward pass; nothing to draw")
            continue
        raw_shape = "x".join(str(s) for s in captured[name].shape[1:])
        kind = type(sublayers[name]).__name__
        maps = _as_maps(captured[name])
        ax = axes[r, 0]
        ax.set_axis_on()
        if maps.ndim == 1:
            ax.bar(np.arange(len(maps)), maps, color="C0", width=1.0)
            ax.set_title(f"{plots.short(name, 22)}\n{kind} [{raw_shape}]", fontsize=7)
            ax.tick_params(labelsize=5)
            panels += 1
            continue
        plots.show_map(ax, maps.mean(axis=0), f"{plots.short(name, 22)}\n{kind} [{raw_shape}] mean", fontsize=7)
        panels += 1
        strength = np.abs(maps).reshape(len(maps), -1).mean(axis=1)
        dead = int((np.abs(maps).reshape(len(maps), -1).max(axis=1) == 0).sum())
        order = np.argsort(-strength, kind="stable")[:FEATURE_CHANNELS]
        for c, ch in enumerate(order, start=1):
            axes[r, c].set_axis_on()
            title = f"ch {ch}" + (f"  ({dead}/{len(maps)} dead)" if c == 1 and dead else "")
            plots.show_map(axes[r, c], maps[ch], title, fontsize=7)
            panels += 1
    name = bundle.class_names[pred]
    fig.suptitle(f"{model_name(cfg)} feature maps for {os.path.basename(image)}: predicted "
                 f"{plots.short(name, 20)} ({probs[pred]:.0%}); per layer the channel mean, then the "
                 f"{FEATURE_CHANNELS} most active channels", fontsize=10)
    size = plots.save(fig, out)
    return PlotResult(out, size, panels, notes)
