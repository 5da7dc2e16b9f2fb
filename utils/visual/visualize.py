"""Pictures of a run, one PNG per function: what ``tools/visualize.py`` draws.

* :func:`plot_curves`: train/val loss, accuracy and LR of one or more runs, overlaid.
* :func:`plot_batch`: a training batch as the network receives it (after augmentation).
* :func:`plot_weights`: first-layer filters and a weight histogram per layer.
* :func:`plot_features`: feature maps of chosen layers for one image (forward post hooks).
* :func:`plot_attention`: SpatialAttention maps over an image, or gMLP's token-mixing weights.
* :func:`plot_predictions`: validation images with predictions, the top losses, confused pairs.
* :func:`plot_confusion`: the confusion matrix as a heatmap.

Every function returns a :class:`PlotResult` (path, pixel size, number of panels, notes).
Paddle and the data pipeline are imported inside the functions: the tool sets the thread
count from the config before Paddle is imported (see :func:`utils.runs.open_run`).
"""
import dataclasses
import json
import math
import os

import numpy as np
from PIL import Image

from utils.errors import UserError, did_you_mean
from utils.visual import plots

# Layer classes drawn by default by ``features``: the repeated blocks of each model family
# (a stage/block output is more telling than the raw output of one conv inside it). Models
# without any fall back to their Conv2D layers, then to their Linear layers.
BLOCK_TYPE_NAMES = ("ConvStage", "BasicBlock", "Inception", "GMLPBlock")
DEFAULT_FEATURE_LAYERS = 4     # evenly spaced layers drawn when --layers is not given
FEATURE_CHANNELS = 8           # channels drawn per layer (the most active ones)
MAX_FILTERS = 64               # first-layer filters drawn (cnn: 32, googlenet stem: 16-64)
MAX_HISTOGRAMS = 24            # weight-histogram panels; deeper models get evenly spaced layers
MAX_BATCH_IMAGES = 64          # batch images drawn (an 8 x 8 grid stays readable at 150 px/cell)
SAMPLE_IMAGES = 24             # predictions: random validation images (3 rows of 8)
TOP_LOSSES = 16                # predictions: highest-loss images (2 rows of 8)
TOP_PAIRS = 10                 # predictions: most confused (true, predicted) pairs
ANNOTATE_MAX_CLASSES = 20      # confusion: write the counts in the cells up to this many classes
LIST_NAMES_MAX = 30            # error messages: list at most this many layer names


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


# --------------------------------------------------------------------------- shared loading

def _load_network(cfg, checkpoint, bundle=None):
    """(network in eval mode with the checkpoint's weights, data bundle)."""
    from utils.build import build_network
    from utils.data import build_datasets
    from utils.training.checkpoint import load_weights

    bundle = bundle if bundle is not None else build_datasets(cfg)
    network = build_network(cfg, bundle)
    load_weights(network, checkpoint)
    network.eval()
    return network, bundle


def _model_side(bundle):
    from utils.build import network_input_side

    return network_input_side(bundle)


def _norm_stats(transform):
    """(mean, std) the pipeline normalizes with, or (None, None) when it does not normalize.

    These are ``Transforms.mean/std`` unless the config's ``Normalize`` gives its own values;
    the built pipeline (``Compose``) holds the ones actually applied, so they are read there.
    """
    return getattr(transform, "mean", None), getattr(transform, "std", None)


def load_image(path, bundle):
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
    side = _model_side(bundle)
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
    mean, std = _norm_stats(t)
    return x[None].astype(np.float32), plots.denormalize(x, mean, std), notes


def _forward(network, x):
    import paddle

    with paddle.no_grad():
        return network(paddle.to_tensor(x)).numpy()


def _model_name(cfg):
    return cfg["Arch"]["name"]


# --------------------------------------------------------------------------- curves

TRAIN_TAGS = {"loss": "train/loss", "acc": "train/acc", "lr": "train/lr"}
EVAL_TAGS = {"loss": "eval/loss", "acc": "eval/acc", "mae": "eval/mae"}  # mae: regression runs


def _read_vdl(files):
    """{tag: (steps, values)} of the curves this module draws, from VisualDL logs."""
    from utils.training.vdl import read_scalars

    data = read_scalars(files, set(TRAIN_TAGS.values()) | set(EVAL_TAGS.values()))
    return {tag: (np.array([s for s, _ in pts]), np.array([v for _, v in pts])) for tag, pts in data.items()}


def read_curves(run_dir):
    """The curves of one run.

    Args:
        run_dir: a run directory (or a checkpoint in one).

    Returns:
        dict with ``train`` and ``eval``: {metric: (steps, values)}, and ``source``:
        ``visualdl`` or ``metrics.json`` (eval points only: the file has no per-step values).

    Raises:
        UserError: no such directory, or no log in it.
    """
    from utils.runs import run_dir_of

    run_dir = run_dir_of(run_dir)
    from utils.training.vdl import log_files

    logs = log_files(run_dir)
    data = _read_vdl(logs) if logs else {}
    if data:
        return {"train": {k: data[t] for k, t in TRAIN_TAGS.items() if t in data},
                "eval": {k: data[t] for k, t in EVAL_TAGS.items() if t in data}, "source": "visualdl"}
    metrics = os.path.join(run_dir, "metrics.json")
    if os.path.isfile(metrics):
        with open(metrics, encoding="utf-8") as f:
            history = json.load(f).get("history") or []
        ev = {}
        for k in EVAL_TAGS:
            pts = [(h["step"], h[k]) for h in history if k in h and "step" in h]
            if pts:
                ev[k] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts], np.float64))
        return {"train": {}, "eval": ev, "source": "metrics.json"}
    if logs:
        raise UserError(f"{run_dir}: its VisualDL log has no train/ or eval/ scalars yet and there is no metrics.json; "
                        f"run this again once training has logged its first steps")
    inside = sorted(d for d in os.listdir(run_dir) if os.path.isdir(os.path.join(run_dir, d))
                    and any(f.startswith("vdlrecords.") or f == "metrics.json" for f in os.listdir(os.path.join(run_dir, d))))
    hint = (f"; runs inside it: {', '.join(os.path.join(run_dir, d) for d in inside[:5])}" + (" ..." if len(inside) > 5 else "")
            if inside else "; pass a run directory written by tools/train.py")
    raise UserError(f"{run_dir}: no training log here (no vdlrecords.* or metrics.json){hint}")


def _run_labels(run_dirs):
    """Legend names: the run directory's name, with its parent when two runs share a name."""
    names = [os.path.basename(os.path.normpath(os.path.abspath(d))) for d in run_dirs]
    if len(set(names)) < len(names):
        names = [os.path.join(os.path.basename(os.path.dirname(os.path.normpath(os.path.abspath(d)))), n)
                 for d, n in zip(run_dirs, names)]
    return names


def plot_curves(run_dirs, out):
    """Loss, accuracy and learning rate of one or more runs on the global-step axis.

    Train curves are drawn EMA-smoothed (weight 0.6, VisualDL's default) over the raw
    per-step values drawn faint; validation points are dashed with markers. Runs are told
    apart by colour (legend: run directory names).

    Args:
        run_dirs: run directories (or checkpoints in them).
        out: PNG path.

    Returns:
        :class:`PlotResult` with 3 panels.
    """
    from matplotlib.lines import Line2D

    if not run_dirs:
        raise UserError("curves: give at least one run directory")
    curves = [read_curves(d) for d in run_dirs]
    labels = _run_labels(run_dirs)
    fig = plots.new_figure(1500, 500)
    axes = plots.grid(fig, 1, 3)[0]
    colors = [f"C{i % 10}" for i in range(len(curves))]
    notes = []
    for c, label, color in zip(curves, labels, colors):
        if not c["train"] and not c["eval"]:
            notes.append(f"{label}: the log has no loss, accuracy or LR values yet; nothing drawn for it")
        elif c["source"] != "visualdl":
            notes.append(f"{label}: no VisualDL log, validation points from metrics.json only")
        for ax, key in zip(axes[:2], ("loss", "mae" if "mae" in c["eval"] and "acc" not in c["eval"] else "acc")):
            if key in c["train"]:
                steps, values = c["train"][key]
                ax.plot(steps, values, color=color, alpha=0.2, lw=0.8)
                ax.plot(steps, plots.ema(values), color=color, lw=1.6)
            if key in c["eval"]:
                steps, values = c["eval"][key]
                ax.plot(steps, values, color=color, ls="--", marker="o", ms=3.5, lw=1.2)
        if "lr" in c["train"]:
            axes[2].plot(*c["train"]["lr"], color=color, lw=1.6)
    regression = any("mae" in c["eval"] for c in curves)
    middle = "val MAE (target units)" if regression and not any("acc" in c["eval"] for c in curves) \
        else "accuracy (top-1)" + (" / val MAE" if regression else "")
    for ax, title in zip(axes, ("loss", middle, "learning rate")):
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    handles = [Line2D([], [], color=col, lw=2.5, label=lab) for col, lab in zip(colors, labels)]
    handles += [Line2D([], [], color="gray", lw=1.6, label=f"train (EMA {plots.SMOOTHING})"),
                Line2D([], [], color="gray", lw=0.8, alpha=0.35, label="train (raw)"),
                Line2D([], [], color="gray", lw=1.2, ls="--", marker="o", ms=3.5, label="val")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize=9, frameon=False)
    size = plots.save(fig, out)
    return PlotResult(out, size, 3, notes)


# --------------------------------------------------------------------------- batch

def training_batch(cfg, epoch=1):
    """The first training batch of epoch ``epoch`` (1-based) exactly as training drew it.

    Training reseeds every RNG with ``Global.seed + epoch index`` at each epoch start (see
    ``utils.training.callbacks.Progress``) and the loader draws its shuffle and augmentations from that
    state when its iterator starts, so reseeding the same way here gives the same images with
    the same crops and flips.

    Returns:
        (x float32 [N, C, H, W] as the network receives it, labels int [N], data bundle).
    """
    from utils.data import build_datasets, build_loaders
    from utils.training.callbacks import seed_everything

    if epoch < 1:
        raise UserError(f"--epoch must be >= 1, got {epoch}")
    bundle = build_datasets(cfg)
    loader, _ = build_loaders(cfg, bundle)
    seed_everything(cfg["Global"]["seed"] + epoch - 1)
    x, y = next(iter(loader))
    return x.numpy(), y.numpy().reshape(-1), bundle


def plot_batch(cfg, out, epoch=1, max_images=MAX_BATCH_IMAGES):
    """The first training batch of epoch ``epoch`` as the network receives it (:func:`training_batch`).

    The images are de-normalized with the pipeline's mean/std for display and titled with
    their class names; one-channel images are drawn in gray.

    Args:
        cfg: resolved config.
        out: PNG path.
        epoch: 1-based epoch whose first batch to draw.
        max_images: draw at most this many images of the batch.

    Returns:
        :class:`PlotResult`, one panel per image drawn.
    """
    x, y, bundle = training_batch(cfg, epoch)
    n = min(max_images, len(x))
    mean, std = _norm_stats(bundle.train_transform)
    cols = 8
    rows = math.ceil(n / cols)
    fig = plots.new_figure(cols * 150, rows * 150 + 70)
    axes = plots.grid(fig, rows, cols)
    for i, ax in enumerate(axes.ravel()):
        if i < n:
            plots.show_image(ax, plots.denormalize(x[i], mean, std), plots.short(bundle.class_names[int(y[i])]), fontsize=9)
        else:
            ax.set_axis_off()
    norm = f"de-normalized (mean {_fmt(mean)}, std {_fmt(std)})" if mean is not None else "no Normalize"
    fig.suptitle(f"{cfg['_meta']['config_path']} ({_model_name(cfg)}): epoch {epoch}, batch 1 after Transforms.train, "
                 f"{n} of {len(x)} images, {x.shape[2]}x{x.shape[3]}, {norm}", fontsize=10)
    size = plots.save(fig, out)
    return PlotResult(out, size, n)


def _fmt(values):
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


# --------------------------------------------------------------------------- weights

def _first_layer_filters(network, bundle):
    """(name, filters [N, C, k, k], kind) of the first Conv2D, or of the first Linear on the raw
    pixels (an MLP's hidden units reshaped to the image); None when there is neither."""
    import paddle.nn as nn

    for name, layer in network.named_sublayers():
        if isinstance(layer, nn.Conv2D):
            return name, layer.weight.numpy(), "Conv2D"
    side = _model_side(bundle)
    pixels = bundle.in_channels * side * side
    for name, layer in network.named_sublayers():
        if isinstance(layer, nn.Linear) and layer.weight.shape[0] == pixels:
            # Paddle's Linear weight is [in, out]: column j is hidden unit j's view of the image.
            w = layer.weight.numpy().T.reshape(-1, bundle.in_channels, side, side)
            return name, w, "Linear"
    return None


def _filter_tiles(w):
    """Filters [N, C, k, k] -> (RGB tiles [N, k, k, 3] in [0, 1], colour legend text).

    RGB filters (C = 3) are drawn in colour, each stretched to its own range (their sign is
    not visible, their colour pattern is); other filters (grayscale input, or the mean over C)
    on a diverging map centred on 0 with one scale for all, so sizes and signs compare.
    """
    if w.shape[1] == 3:
        lo = w.min(axis=(1, 2, 3), keepdims=True)
        hi = w.max(axis=(1, 2, 3), keepdims=True)
        return (w - lo).transpose(0, 2, 3, 1) / np.where(hi > lo, hi - lo, 1.0), "RGB, each filter stretched to its range"
    from matplotlib import colormaps

    m = w.mean(axis=1)
    vmax = float(np.abs(m).max()) or 1.0
    tiles = colormaps["RdBu_r"]((m / vmax + 1) / 2)[..., :3]
    mean = f"mean over {w.shape[1]} input channels, " if w.shape[1] != 1 else ""
    return tiles, f"{mean}blue < 0 < red, |w| <= {vmax:.3g}"


def _histogram_layers(network):
    """[(name, type, values, what)] of every layer with parameters of its own, in order.

    Biases are left out when the layer has other parameters: they start at 0 (or 1) and
    would squeeze the weights' histogram into a spike.
    """
    out = []
    for name, layer in network.named_sublayers():
        # BatchNorm's running mean/variance are parameters with stop_gradient set: statistics, not weights.
        named = {k: p for k, p in layer.named_parameters(include_sublayers=False) if not p.stop_gradient}
        if not named:
            continue
        weights = [(k, p) for k, p in named.items() if "bias" not in k] or list(named.items())
        values = np.concatenate([p.numpy().ravel() for _, p in weights])
        what = "+".join(f"{k}{list(p.shape)}" for k, p in weights)
        out.append((name, type(layer).__name__, values, what))
    return out


def plot_weights(cfg, checkpoint, out):
    """First-layer filters as an image grid, and a weight histogram per parameterized layer.

    Filters: the first Conv2D in the network's layer order (an MLP without one: its first
    Linear's hidden units reshaped to the image), at most 64, tiled into one mosaic panel. RGB
    filters are drawn in colour, each stretched to its own range; others on a diverging map
    centred on 0 (shared scale, so sizes compare). Histograms: one panel per layer with
    parameters, at most 24 (evenly spaced over the depth).

    Args:
        cfg: the run's config.
        checkpoint: checkpoint prefix.
        out: PNG path.

    Returns:
        :class:`PlotResult`; panels = 1 (the filter mosaic) + histograms drawn.
    """
    network, bundle = _load_network(cfg, checkpoint)
    first = _first_layer_filters(network, bundle)
    layers = _histogram_layers(network)
    shown = plots.evenly_spaced(layers, MAX_HISTOGRAMS)
    notes = []

    n_filters = min(MAX_FILTERS, len(first[1])) if first else 0
    f_cols = 16 if n_filters > 32 else 8
    f_rows = max(1, math.ceil(n_filters / f_cols))
    h_cols = 6
    h_rows = max(1, math.ceil(len(shown) / h_cols))
    top_h, bottom_h = f_rows * 90 + 80, h_rows * 190 + 70
    fig = plots.new_figure(1500, top_h + bottom_h)
    top, bottom = fig.subfigures(2, 1, height_ratios=[top_h, bottom_h])

    ax = top.subplots()
    ax.set_axis_off()
    if first:
        # One mosaic image rather than one axes per filter: 64 axes cost ~1 s to lay out and draw.
        name, w, kind = first
        tiles, colour = _filter_tiles(w[:n_filters])
        ax.imshow(plots.mosaic(tiles, f_cols), interpolation="nearest")
        what = "filters" if kind == "Conv2D" else "hidden units' input weights as images"
        top.suptitle(f"first layer: {name} ({kind}), {n_filters} of {len(w)} {what} "
                     f"{w.shape[2]}x{w.shape[3]}x{w.shape[1]} ({colour})", fontsize=10)
    else:
        ax.text(0.5, 0.5, f"{_model_name(cfg)} has no Conv2D and no Linear on the raw pixels", ha="center", va="center")
        notes.append(f"{_model_name(cfg)}: no first-layer filters to draw")

    h_axes = plots.grid(bottom, h_rows, h_cols)
    for i, ax in enumerate(h_axes.ravel()):
        if i >= len(shown):
            ax.set_axis_off()
            continue
        name, kind, values, what = shown[i]
        counts, edges = np.histogram(values, bins=50)
        ax.stairs(counts, edges, fill=True, color="C0")  # one artist; ax.hist draws 50 bar patches
        ax.set_title(f"{plots.short(name, 26)} ({kind})\n{plots.short(what, 34)}  std {values.std():.3g}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    more = f", {len(shown)} of {len(layers)} layers evenly spaced over the depth" if len(shown) < len(layers) else ""
    bottom.suptitle(f"weight histograms per layer (biases left out){more}", fontsize=10)
    if len(shown) < len(layers):
        notes.append(f"histograms: {len(shown)} of {len(layers)} layers shown")
    size = plots.save(fig, out)
    return PlotResult(out, size, int(n_filters > 0) + len(shown), notes)


# --------------------------------------------------------------------------- features

def _names_hint(names, wrong):
    """'valid names: ...' abbreviated to LIST_NAMES_MAX names (with the close matches kept)."""
    import difflib

    if len(names) <= LIST_NAMES_MAX:
        return f"valid names: {', '.join(names)}"
    close = difflib.get_close_matches(wrong, names, n=3, cutoff=0.5)
    top = [n for n in names if n.count(".") <= 1][: LIST_NAMES_MAX - len(close)]
    shown = close + [n for n in top if n not in close]
    return (f"valid names ({len(names)}, top levels shown): {', '.join(shown)}, ...; "
            f"deeper names extend these with '.<index>' as in network.named_sublayers()")


def _check_layers(network, names, cfg):
    valid = [n for n, _ in network.named_sublayers()]
    for name in names:
        if name not in valid:
            raise UserError(f"--layers {name}: {_model_name(cfg)} has no layer '{name}'{did_you_mean(name, valid)}; "
                            f"{_names_hint(valid, name)}")


def default_feature_layers(network, k=DEFAULT_FEATURE_LAYERS):
    """Up to ``k`` evenly spaced layer names: the model's blocks, else its Conv2D, else Linear layers."""
    import paddle.nn as nn

    subs = list(network.named_sublayers())
    for pick in (lambda l: type(l).__name__ in BLOCK_TYPE_NAMES,
                 lambda l: isinstance(l, nn.Conv2D),
                 lambda l: isinstance(l, nn.Linear)):
        names = [n for n, l in subs if pick(l)]
        if names:
            return plots.evenly_spaced(names, k)
    return plots.evenly_spaced([n for n, _ in subs], k)


def _as_maps(output):
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


def capture_outputs(network, x, names):
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
        logits = _forward(network, x)
    finally:
        for h in handles:
            h.remove()
    return logits, captured


def plot_features(cfg, checkpoint, image, out, layers=None):
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
    network, bundle = _load_network(cfg, checkpoint)
    if layers:
        _check_layers(network, layers, cfg)
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
    fig.suptitle(f"{_model_name(cfg)} feature maps for {os.path.basename(image)}: predicted "
                 f"{plots.short(name, 20)} ({probs[pred]:.0%}); per layer the channel mean, then the "
                 f"{FEATURE_CHANNELS} most active channels", fontsize=10)
    size = plots.save(fig, out)
    return PlotResult(out, size, panels, notes)


# --------------------------------------------------------------------------- attention

def attention_models():
    """Registered models with something to draw for ``attention``: spatial attention or gMLP."""
    from models import list_models

    return [m for m in list_models() if "_sa" in m or "gmlp" in m]


def _upsample(m, side):
    """Bilinear resize of a [h, w] map to side x side (PIL float mode keeps the values)."""
    return np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((side, side), Image.BILINEAR))


def _overlay(ax, picture, heat, title, alpha=0.5, vmin=0.0, vmax=1.0, cmap="jet"):
    gray = picture.mean(axis=2) if picture.shape[2] == 3 else picture[:, :, 0]
    ax.imshow(gray if picture.shape[2] == 1 else picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax, interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def plot_attention(cfg, checkpoint, out, image=None):
    """What the model's attention looks at.

    * SpatialAttention models (``*_sa``): each layer's ``last_map`` after a forward pass on
      ``image``, at its own resolution and upsampled over the image.
    * gMLP: each Spatial Gating Unit's token-mixing weights ``spatial_weight`` [L, L] as a
      heatmap, the centre token's row on the patch grid (which patches feed it), and that row
      upsampled over the image when one is given.

    Args:
        cfg: the run's config.
        checkpoint: checkpoint prefix.
        out: PNG path.
        image: image file; required for spatial attention (the maps depend on the input).

    Returns:
        :class:`PlotResult`. Spatial attention: panels = 1 + 2 x layers; gMLP: 2 or 3 per SGU.

    Raises:
        UserError: a model with neither, or no image for spatial attention.
    """
    from models.gmlp import SpatialGatingUnit
    from models.spatial_attention import SpatialAttention
    from utils.training.evaluate import softmax  # imports paddle: deferred until the thread count is set

    network, bundle = _load_network(cfg, checkpoint)
    subs = list(network.named_sublayers())
    sa = [(n, l) for n, l in subs if isinstance(l, SpatialAttention)]
    sgu = [(n, l) for n, l in subs if isinstance(l, SpatialGatingUnit)]
    if not sa and not sgu:
        raise UserError(f"attention: {_model_name(cfg)} has no attention layers to draw; models with attention: "
                        f"{', '.join(attention_models())} (e.g. train configs/cnn_sa_digits.yml)")
    if sa and image is None:
        raise UserError(f"attention: {_model_name(cfg)}'s spatial attention depends on the input: "
                        f"pass an IMAGE after the checkpoint")
    notes = []
    picture = None
    if image is not None:
        x, picture, notes = load_image(image, bundle)
    side = _model_side(bundle)
    title = f"{_model_name(cfg)} attention" + (f" on {os.path.basename(image)}" if image else "")

    if sa:
        logits = _forward(network, x)
        probs = softmax(logits[0])
        pred = int(probs.argmax())
        per_band = 5
        bands = math.ceil(len(sa) / per_band)
        cols = 1 + min(len(sa), per_band)
        cell = 220
        fig = plots.new_figure(cols * cell, 2 * bands * cell + 60)
        axes = plots.grid(fig, 2 * bands, cols)
        plots.off(axes)
        axes[0, 0].set_axis_on()
        plots.show_image(axes[0, 0], picture, f"input, predicted {plots.short(bundle.class_names[pred])} "
                                              f"({probs[pred]:.0%})", fontsize=8)
        for i, (name, layer) in enumerate(sa):
            m = layer.last_map.numpy()[0, 0]
            r, c = 2 * (i // per_band), 1 + i % per_band
            for ax in (axes[r, c], axes[r + 1, c]):
                ax.set_axis_on()
            _overlay(axes[r, c], picture, _upsample(m, side), f"{plots.short(name, 26)}\nover the image")
            plots.show_map(axes[r + 1, c], m, f"{m.shape[0]}x{m.shape[1]} map, {m.min():.2f}..{m.max():.2f}",
                           cmap="jet", fontsize=8)
            axes[r + 1, c].images[0].set_clim(0, 1)
        fig.suptitle(f"{title}: SpatialAttention maps (sigmoid, 0 blue .. 1 red; the input is multiplied by them)",
                     fontsize=10)
        size = plots.save(fig, out)
        return PlotResult(out, size, 1 + 2 * len(sa), notes)

    cols = 3 if picture is not None else 2
    cell = 280 if cols == 3 else 330  # two columns at 280 px clipped the titles
    fig = plots.new_figure(cols * cell, len(sgu) * cell + 60)
    axes = plots.grid(fig, len(sgu), cols)
    for r, (name, layer) in enumerate(sgu):
        w = layer.spatial_weight.numpy()
        seq = w.shape[0]
        g = int(round(math.sqrt(seq)))
        center = (g // 2) * g + g // 2
        plots.show_map(axes[r, 0], w, f"{plots.short(name, 28)}: spatial_weight [{seq}x{seq}]\n"
                                      f"row = output token, column = input token", cmap="RdBu_r",
                       symmetric=True, fontsize=8, colorbar=True)
        row = w[center].reshape(g, g)
        plots.show_map(axes[r, 1], row, f"row of token {center} (centre, marked)\non the {g}x{g} patch grid",
                       cmap="RdBu_r", symmetric=True, fontsize=8, colorbar=True)
        axes[r, 1].plot([g // 2], [g // 2], marker="x", color="black", ms=8, mew=2)
        if picture is not None:
            vmax = float(np.abs(row).max()) or 1.0
            _overlay(axes[r, 2], picture, _upsample(row, side), "centre token's row over the image",
                     alpha=0.55, vmin=-vmax, vmax=vmax, cmap="RdBu_r")
    fig.suptitle(f"{title}: gMLP token mixing\n(Spatial Gating Units; red: positive weight, blue: negative)",
                 fontsize=10)
    size = plots.save(fig, out)
    return PlotResult(out, size, cols * len(sgu), notes)


# --------------------------------------------------------------------------- predictions / confusion

def _split_predictions(cfg, checkpoint, split):
    """(bundle, dataset, logits, labels) of ``split`` under the checkpoint."""
    from utils.data import build_datasets, build_eval_loader
    from utils.training.evaluate import predict

    bundle = build_datasets(cfg)
    dataset = {"val": bundle.val, "test": bundle.test, "train": bundle.train}[split]
    if dataset is None:
        have = [s for s in ("train", "val", "test") if getattr(bundle, s) is not None]
        raise UserError(f"--split {split}: this dataset has no {split} split ({cfg['Data']['name']} has: "
                        f"{', '.join(have)}); pick one of those with --split")
    network, _ = _load_network(cfg, checkpoint, bundle)
    logits, labels = predict(network, build_eval_loader(cfg, dataset))
    return bundle, dataset, logits, labels


def _image_panel(ax, dataset, i, names, label, pred, conf, extra=""):
    img, _ = dataset.raw(int(i))
    wrong = pred != label
    title = f"{extra}true {plots.short(names[label], 10)}\npred {plots.short(names[pred], 10)} {conf:.0%}"
    plots.show_image(ax, img, title, color=plots.WRONG if wrong else plots.RIGHT, fontsize=8)
    if wrong:
        for spine in ax.spines.values():
            spine.set_edgecolor(plots.WRONG)
            spine.set_linewidth(2)


def confused_pairs(cm, k=TOP_PAIRS):
    """The ``k`` largest off-diagonal cells as (true, predicted, count), largest first, counts > 0."""
    off = np.array(cm, np.int64).copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    pairs = [(int(i // off.shape[1]), int(i % off.shape[1])) for i in flat]
    return [(t, p, int(off[t, p])) for t, p in pairs if off[t, p] > 0]


def plot_predictions(cfg, checkpoint, out, split="val", seed=0):
    """Validation images with predictions, the highest-loss images and the most confused pairs.

    Args:
        cfg: the run's config.
        checkpoint: checkpoint prefix.
        out: PNG path.
        split: ``val``, ``test`` or ``train``.
        seed: seed of the random sample of images.

    Returns:
        :class:`PlotResult`; panels = sample images + top-loss images + 1 (confused pairs).
    """
    from utils.training.evaluate import (
        confusion_matrix,
        softmax,  # imports paddle: deferred until the thread count is set
    )

    bundle, dataset, logits, labels = _split_predictions(cfg, checkpoint, split)
    names = bundle.class_names
    probs = softmax(logits.astype(np.float64))
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(pred)), pred]
    loss = -np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))
    n = len(labels)
    sample = np.sort(np.random.RandomState(seed).choice(n, min(SAMPLE_IMAGES, n), replace=False))
    worst = np.argsort(-loss, kind="stable")[:min(TOP_LOSSES, n)]
    cm = confusion_matrix(logits, labels, bundle.num_classes)
    pairs = confused_pairs(cm)

    cols = 8
    s_rows, w_rows = math.ceil(len(sample) / cols), math.ceil(len(worst) / cols)
    cell = 165
    heights = [s_rows * cell + 50, w_rows * cell + 50, 330]
    fig = plots.new_figure(cols * cell, sum(heights))
    f_sample, f_worst, f_pairs = fig.subfigures(3, 1, height_ratios=heights)
    acc = float((pred == labels).mean())
    for sub, idx, rows, head, top in ((f_sample, sample, s_rows, f"{len(sample)} random {split} images "
                                       f"({split} accuracy {acc:.1%} over {n}; wrong in red)", False),
                                      (f_worst, worst, w_rows, f"the {len(worst)} highest-loss {split} images", True)):
        axes = plots.grid(sub, rows, cols)
        for j, ax in enumerate(axes.ravel()):
            if j >= len(idx):
                ax.set_axis_off()
                continue
            i = idx[j]
            _image_panel(ax, dataset, i, names, int(labels[i]), int(pred[i]), float(conf[i]),
                         extra=f"loss {loss[i]:.2f}\n" if top else "")
        sub.suptitle(head, fontsize=10)
    ax = f_pairs.subplots()
    if pairs:
        text = [f"true {plots.short(names[t], 14)} → pred {plots.short(names[p], 14)}" for t, p, _ in pairs]
        counts = [c for _, _, c in pairs]
        y = np.arange(len(pairs))[::-1]
        ax.barh(y, counts, color=plots.WRONG, alpha=0.8)
        ax.set_yticks(y, text, fontsize=8)
        for yy, c, (t, _, _) in zip(y, counts, pairs):
            row = cm[t].sum()
            ax.text(c, yy, f" {c} ({c / row:.0%} of true {plots.short(names[t], 14)})", va="center", fontsize=8)
        ax.set_xlabel("images")
        ax.set_xlim(0, max(counts) * 1.35)
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no confusions: every image is classified right", ha="center", va="center")
    f_pairs.suptitle(f"most confused class pairs (from the {split} confusion matrix)", fontsize=10)
    size = plots.save(fig, out)
    return PlotResult(out, size, len(sample) + len(worst) + 1)


def plot_confusion(cfg, checkpoint, out, split="val", normalize=False):
    """The confusion matrix (rows: true class, columns: predicted) as a heatmap.

    Args:
        cfg: the run's config.
        checkpoint: checkpoint prefix.
        out: PNG path.
        split: ``val``, ``test`` or ``train``.
        normalize: divide each row by its count (per-class recall on the diagonal).

    Returns:
        :class:`PlotResult` with 1 panel; cells are annotated up to 20 classes.
    """
    from utils.training.evaluate import confusion_matrix

    bundle, _, logits, labels = _split_predictions(cfg, checkpoint, split)
    c = bundle.num_classes
    cm = confusion_matrix(logits, labels, c)
    rows = cm.sum(axis=1, keepdims=True)
    values = cm / np.maximum(rows, 1) if normalize else cm
    # ~40 px per class keeps 20 annotated classes legible; 100 classes (CIFAR-100) reach the cap.
    side = int(min(2000, max(700, 40 * c + 260)))
    fig = plots.new_figure(side + 100, side)
    ax = fig.subplots()
    im = ax.imshow(values, cmap="Blues", interpolation="nearest", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="fraction of the true class" if normalize else "images")
    names = [plots.short(n, 14) for n in bundle.class_names]
    fs = max(4, min(10, int(400 / c)))
    ax.set_xticks(np.arange(c), names, rotation=45 if c > 5 else 0, ha="right" if c > 5 else "center", fontsize=fs)
    ax.set_yticks(np.arange(c), names, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if c <= ANNOTATE_MAX_CLASSES:
        vmax = float(values.max()) or 1.0
        for i in range(c):
            for j in range(c):
                v = values[i, j]
                if cm[i, j] == 0:
                    continue
                text = f"{v:.2f}" if normalize else str(int(v))
                ax.text(j, i, text, ha="center", va="center", fontsize=max(6, fs - 1),
                        color="white" if v > 0.6 * vmax else "black")
    acc = float(np.trace(cm) / max(cm.sum(), 1))
    ax.set_title(f"{_model_name(cfg)} confusion matrix, {split} split: {int(cm.sum())} images, accuracy {acc:.1%}"
                 + (" (rows normalized)" if normalize else ""), fontsize=10)
    size = plots.save(fig, out)
    return PlotResult(out, size, 1)
