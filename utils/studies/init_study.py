"""Weight-init study: how activations evolve through depth at initialisation.

Two modes:

* :func:`classic_experiment` — the experiment of CS231n (2017, lecture 6, "Training Neural
  Networks I"): a 10-layer, 500-unit fully connected net, no bias, fed 1000 x 500 unit-Gaussian
  input; weights ``W = randn(fan_in, fan_out) * scale`` with

  ==============  =======================  ==============================================
  init            scale                    what happens (tanh / ReLU)
  ==============  =======================  ==============================================
  ``normal_0.01`` 0.01                     std x ~0.22 per layer: activations vanish
  ``normal_1.0``  1.0                      tanh saturates (|h| ~ 1, std ~ 0.98)
  ``xavier``      1 / sqrt(fan_in)         tanh: slow decay; ReLU: variance halves per layer
  ``kaiming``     sqrt(2 / fan_in)         ReLU: std stays ~0.82 at every layer
  ==============  =======================  ==============================================

  Xavier here is the lecture's ``randn / sqrt(fan_in)`` (std 1/sqrt(fan_in)), not Glorot's
  ``sqrt(2 / (fan_in + fan_out))``; the two agree for a square 500 x 500 layer.
  The statistics are those of the post-activation outputs ``H = act(X @ W)``, population std
  (numpy's ``np.std`` convention, ``ddof=0``), as the lecture printed them. With this
  convention Kaiming + ReLU gives std(relu(z)) for z ~ N(0, 2) at every layer:
  sqrt(2) * sqrt(1/2 - 1/(2 pi)) = 0.8257 (mean sqrt(2) / sqrt(2 pi) = 0.5642), because
  E[relu(z)^2] = var(z) / 2 = 1 feeds the next layer a pre-activation variance of
  fan_in * 1 * 2 / fan_in = 2 again. That holds on average over weight draws; one draw
  random-walks with depth (measured over 20 seeds: std 0.826 +- 0.001 at layer 1, +- 0.12 at
  layer 10; seed 0 ends at 0.69). Xavier + ReLU halves the *variance* per layer, so the std
  goes x 1/sqrt(2) ~ 0.71 per layer. Without biases some ReLU units die with depth (about 8%
  of the units are zero for all 1000 inputs at layer 10, none at layer 1).

* :func:`model_activation_stats` — the same statistics for any network on a real batch:
  forward post-hooks on every conv/linear layer and every activation layer record the mean,
  std, saturation (fraction of |y| > 0.99 after tanh; y < 0.01 or y > 0.99 after sigmoid)
  and, after ReLU, the fraction of exact zeros and of dead units (channels that are zero for
  every sample and position of the batch).

:func:`plot_histograms` draws the activation histograms (one panel per layer) to a PNG.
Everything runs on Paddle tensors with a fixed seed.
"""
import csv
import json
import math
import os
import warnings

import numpy as np

CLASSIC_INITS = ("normal_0.01", "normal_1.0", "xavier", "kaiming")
CLASSIC_ACTIVATIONS = ("tanh", "relu")
HIST_BINS = 50

SATURATING = {"Tanh": "tanh", "Sigmoid": "sigmoid", "Hardtanh": "tanh", "Hardsigmoid": "sigmoid",
              "Softsign": "tanh"}
RECTIFIERS = ("ReLU", "ReLU6")
ACTIVATION_TYPES = tuple(SATURATING) + RECTIFIERS + ("GELU", "LeakyReLU", "ELU", "SELU", "Silu", "Swish",
                                                   "Hardswish", "Mish", "Softplus", "PReLU", "CELU")


# --------------------------------------------------------------------------- statistics

def classic_scale(init, fan_in):
    """Std of the weights of ``init`` (``normal_<std>``, ``xavier``, ``kaiming``) for ``fan_in`` inputs."""
    if init.startswith("normal_"):
        return float(init.split("_", 1)[1])
    if init == "xavier":
        return 1.0 / math.sqrt(fan_in)
    if init == "kaiming":
        return math.sqrt(2.0 / fan_in)
    raise ValueError(f"unknown classic init '{init}', choose normal_<std>, xavier or kaiming")


def _saturation(y, kind):
    """Fraction of saturated outputs of a tanh-like (|y| > 0.99) or sigmoid-like (y < 0.01 or y > 0.99) unit."""
    import paddle

    if kind == "tanh":
        sat = paddle.abs(y) > 0.99
    else:
        sat = paddle.logical_or(y < 0.01, y > 0.99)
    return float(sat.astype("float32").mean())


def _zero_stats(y, channel_axis):
    """(fraction of exact zeros, fraction of units that are zero for the whole batch)."""
    import paddle

    zero = (y == 0)
    zero_frac = float(zero.astype("float32").mean())
    axis = channel_axis % y.ndim
    other = [a for a in range(y.ndim) if a != axis]
    dead = paddle.all(zero, axis=other) if other else zero
    return zero_frac, float(dead.astype("float32").mean())


def tensor_stats(y, activation=None, channel_axis=1):
    """Mean, std (population), min, max of ``y``; saturation or zero/dead fractions for ``activation``.

    Args:
        y: a Paddle tensor.
        activation: ``tanh``/``sigmoid`` (saturation), ``relu`` (zeros, dead units) or None.
        channel_axis: the axis of the units for the dead-unit count (1 for NCHW, -1 for tokens).
    """
    import paddle

    y = y.astype("float32")
    # Population std (N), like np.std and the lecture, in float64. Not Tensor.std: it is
    # unbiased (N - 1) by default, and in paddle 3.3.1 std(unbiased=False) on float32 logs a
    # "Got different data type, run type promotion automatically" warning on every process.
    y64 = y.astype("float64")
    mean = y64.mean()
    stats = {"mean": float(mean), "std": float(paddle.sqrt(paddle.square(y64 - mean).mean())),
             "min": float(y.min()), "max": float(y.max()),
             "saturated": None, "zero_frac": None, "dead_frac": None}
    if activation in ("tanh", "sigmoid"):
        stats["saturated"] = _saturation(y, activation)
    elif activation == "relu":
        stats["zero_frac"], stats["dead_frac"] = _zero_stats(y, channel_axis)
    return stats


def _histogram(values, lo, hi, bins=HIST_BINS):
    """(counts, edges) of the finite ``values`` over [lo, hi] (their own range when lo/hi are not finite)."""
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return counts.tolist(), edges.tolist()


# --------------------------------------------------------------------------- classic experiment

def classic_experiment(inits=CLASSIC_INITS, activations=CLASSIC_ACTIVATIONS, num_layers=10, units=500,
                       samples=1000, seed=0, bins=HIST_BINS):
    """Run the lecture's experiment for every (init, activation) pair.

    Each pair starts from ``paddle.seed(seed)``, so it draws the same input and is reproducible
    on its own whatever other pairs are run.

    Returns:
        A list of runs ``{"init", "activation", "scale", "layers": [row, ...]}``; each row has
        ``layer`` (1-based), ``mean``, ``std``, ``min``, ``max``, ``saturated`` (tanh),
        ``zero_frac``/``dead_frac`` (ReLU) and ``hist`` = (counts, edges), None when ``bins``
        is 0 (statistics only, faster). Panels of one run share their x axis (a collapse shows
        as a spike at 0) unless the std grows more than 10x through the run (explosion: each
        panel its own range). ReLU histograms count the positive outputs only (the zeros are in
        ``zero_frac``).
    """
    import paddle

    acts = {"tanh": paddle.tanh, "relu": paddle.nn.functional.relu}
    runs = []
    for init in inits:
        for act in activations:
            if act not in acts:
                raise ValueError(f"unknown activation '{act}', choose tanh or relu")
            paddle.seed(seed)
            x = paddle.randn([samples, units], dtype="float32")
            layers, values = [], []
            for i in range(num_layers):
                fan_in = x.shape[1]
                w = paddle.randn([fan_in, units], dtype="float32") * classic_scale(init, fan_in)
                x = acts[act](paddle.matmul(x, w))  # zero bias
                row = {"layer": i + 1, **tensor_stats(x, act, channel_axis=1)}
                layers.append(row)
                if bins:
                    v = x.numpy().ravel()
                    # ReLU: half the outputs are exact zeros (in the row's zero_frac); the
                    # histogram shows the positive part, or the spike at 0 hides the shape.
                    values.append(v[v > 0] if act == "relu" else v)
            if bins:
                if act == "tanh":
                    lo, hi = -1.0, 1.0
                else:
                    lo, hi = 0.0, max(r["max"] for r in layers)
                # A shared x axis shows vanishing as a spike at 0; an exploding run would squash
                # every panel but the last, so those get their own range.
                shared = act == "tanh" or layers[-1]["std"] <= 10 * layers[0]["std"]
                for row, v in zip(layers, values):
                    row["hist"] = _histogram(v, lo, hi if shared else float(v.max(initial=0.0)), bins)
            else:
                for row in layers:
                    row["hist"] = None
            runs.append({"init": init, "activation": act, "scale": classic_scale(init, units), "units": units,
                         "samples": samples, "seed": seed, "layers": layers})
    return runs


def classic_table(runs):
    """Flat rows (one per run and layer) for printing and CSV."""
    out = []
    for run in runs:
        for r in run["layers"]:
            out.append({"init": run["init"], "activation": run["activation"], "layer": r["layer"],
                        "mean": r["mean"], "std": r["std"], "saturated": r["saturated"],
                        "zero_frac": r["zero_frac"], "dead_frac": r["dead_frac"]})
    return out


def format_classic(runs):
    """The std of every layer, one line per (init, activation): the lecture's printout, condensed."""
    n = max(len(r["layers"]) for r in runs)
    head = f"{'init':<12} {'act':<5} " + " ".join(f"{'L' + str(i + 1):>9}" for i in range(n))
    r0 = runs[0]
    tables = [
        (f"layer std of act(X @ W) (population std; {r0['samples']} x {r0['units']} N(0,1) input, no bias, "
         f"seed {r0['seed']})", lambda run, r: f"{r['std']:>9.3g}"),
        ("layer mean", lambda run, r: f"{r['mean']:>9.3g}"),
        ("% saturated (tanh: |h| > 0.99) / % dead units (ReLU: zero for every input)",
         lambda run, r: f"{100 * r['saturated' if run['activation'] == 'tanh' else 'dead_frac']:>9.1f}"),
    ]
    lines = []
    for title, cell in tables:
        lines += ([""] if lines else []) + [title, head]
        for run in runs:
            lines.append(f"{run['init']:<12} {run['activation']:<5} " + " ".join(cell(run, r) for r in run["layers"]))
    return "\n".join(lines)


# --------------------------------------------------------------------------- any model

def _activation_kind(layer):
    name = type(layer).__name__
    if name in SATURATING:
        return SATURATING[name]
    if name in RECTIFIERS:
        return "relu"
    return None


def hooked_layers(model):
    """(name, layer, kind) of the layers the study hooks: conv/linear (``kind='linear'``) and activations."""
    import paddle.nn as nn

    weighted = (nn.Conv1D, nn.Conv2D, nn.Conv3D, nn.Conv2DTranspose, nn.Linear)
    out = []
    for name, layer in model.named_sublayers(include_self=False):
        if isinstance(layer, weighted):
            out.append((name, layer, "linear"))
        elif type(layer).__name__ in ACTIVATION_TYPES:
            out.append((name, layer, "activation"))
    return out


def prepare_for_study(model):
    """Training mode (BatchNorm normalises with the batch's statistics, as at the first step), dropout off."""
    model.train()
    for layer in model.sublayers(include_self=True):
        if type(layer).__name__ in ("Dropout", "Dropout2D", "Dropout3D", "AlphaDropout", "DropPath"):
            layer.eval()
    return model


def model_activation_stats(model, images, max_layers=0, bins=HIST_BINS):
    """Per-layer activation statistics of ``model`` on one batch.

    Forward post-hooks on every conv/linear and activation layer (removed afterwards, also on
    error) record the output of each call in forward order; a layer called twice gives two
    rows (``name#2``). The model is put in study mode by :func:`prepare_for_study` first
    (BatchNorm on batch statistics, dropout off) and run without gradients.

    Args:
        model: a ``paddle.nn.Layer``.
        images: a float tensor or array [N, C, H, W].
        max_layers: keep at most this many rows, evenly spaced from the first to the last
            hooked call (0 = all).
        bins: histogram bins per layer.

    Returns:
        Rows ``{"index", "name", "type", "kind", "shape", "mean", "std", "min", "max",
        "saturated", "zero_frac", "dead_frac", "hist"}`` in forward order.
    """
    import paddle

    rows, calls, handles = [], {}, []

    def make_hook(name, kind):
        def hook(layer, inputs, output):
            if not isinstance(output, paddle.Tensor):
                return None
            calls[name] = calls.get(name, 0) + 1
            label = name if calls[name] == 1 else f"{name}#{calls[name]}"
            act = _activation_kind(layer) if kind == "activation" else None
            channel_axis = 1 if output.ndim == 4 else -1
            stats = tensor_stats(output.detach(), act, channel_axis)
            v = output.detach().astype("float32").numpy().ravel()
            if act == "relu":
                v = v[v > 0]  # the zeros are in zero_frac; their spike would hide the shape
            stats["hist"] = _histogram(v, 0.0 if act == "relu" else stats["min"], stats["max"], bins)
            rows.append({"index": len(rows), "name": label, "type": type(layer).__name__, "kind": kind,
                         "shape": list(output.shape), **stats})
            return None
        return hook

    prepare_for_study(model)
    try:
        for name, layer, kind in hooked_layers(model):
            handles.append(layer.register_forward_post_hook(make_hook(name, kind)))
        x = images if isinstance(images, paddle.Tensor) else paddle.to_tensor(np.asarray(images, dtype="float32"))
        with paddle.no_grad(), warnings.catch_warnings():
            # BatchNorm in training mode warns that it tracks global statistics: expected here.
            warnings.filterwarnings("ignore", message=".*always track global mean and variance.*")
            model(x)
    finally:
        for h in handles:
            h.remove()
    if max_layers and len(rows) > max_layers:
        keep = sorted({int(round(i)) for i in np.linspace(0, len(rows) - 1, max_layers)})
        rows = [rows[i] for i in keep]
    return rows


def format_model_rows(rows):
    """Fixed-width table of :func:`model_activation_stats` rows."""
    def pct(v):
        return "" if v is None else f"{100 * v:.1f}%"

    width = max([len("layer")] + [len(r["name"]) for r in rows])
    head = (f"{'#':>3} {'layer':<{width}} {'type':<10} {'shape':<16} {'mean':>10} {'std':>10} "
            f"{'saturated':>9} {'zeros':>7} {'dead':>7}")
    lines = [head]
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        lines.append(f"{r['index']:>3} {r['name']:<{width}} {r['type']:<10} {shape:<16} {r['mean']:>10.4g} "
                     f"{r['std']:>10.4g} {pct(r['saturated']):>9} {pct(r['zero_frac']):>7} {pct(r['dead_frac']):>7}")
    return "\n".join(lines)


def findings(rows, std_low=1e-3, std_high=1e3, saturated_high=0.5, dead_high=0.1):
    """Plain-language warnings for vanishing/exploding stds, saturation and dead ReLUs."""
    out = []
    for r in rows:
        if not (math.isfinite(r["mean"]) and math.isfinite(r["std"])):
            out.append(f"{r['name']}: non-finite activations (mean {r['mean']}, std {r['std']})")
        elif r["std"] < std_low:
            out.append(f"{r['name']}: std {r['std']:.2g} < {std_low:g}: activations vanish (init too small?)")
        elif r["std"] > std_high:
            out.append(f"{r['name']}: std {r['std']:.2g} > {std_high:g}: activations explode (init too large?)")
        if r["saturated"] is not None and r["saturated"] > saturated_high:
            out.append(f"{r['name']}: {100 * r['saturated']:.0f}% of the {r['type']} outputs are saturated "
                       f"(gradients vanish there; use Xavier init or normalise the input)")
        if r["dead_frac"] is not None and r["dead_frac"] > dead_high:
            out.append(f"{r['name']}: {100 * r['dead_frac']:.0f}% dead ReLU units (zero for the whole batch; "
                       f"check biases, init scale and learning rate)")
    return out


# --------------------------------------------------------------------------- output

def plot_histograms(panels, path, title=None, ncols=10):
    """Draw histogram panels to ``path`` (PNG); returns the number of panels (the figure's axes).

    Args:
        panels: a list of rows, each a list of ``(label, (counts, edges))``: one figure row per
            list (wrapped at ``ncols``), one panel per layer.
        path: output PNG.
        title: figure title.
        ncols: panels per figure row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = []
    for row in panels:
        for s in range(0, max(len(row), 1), ncols):
            grid.append(row[s:s + ncols])
    nrows = len(grid)
    ncols = max(len(r) for r in grid)
    height = 1.6 * nrows + 0.9
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, height), squeeze=False)
    drawn = 0
    for i, row in enumerate(grid):
        for k in range(ncols):
            ax = axes[i][k]
            if k >= len(row):
                fig.delaxes(ax)
                continue
            label, (counts, edges) = row[k]
            ax.stairs(counts, edges, fill=True, color="tab:blue")
            ax.set_title(label, fontsize=6)
            ax.tick_params(labelsize=5)
            ax.set_yticks([])
            ax.locator_params(axis="x", nbins=4)
            drawn += 1
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.12 / height, va="top")
    # Fixed margins: tight_layout and few-tick axes cut the time of an 80-panel grid from ~5 s to ~1.5 s.
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.3 / height, top=1 - 0.8 / height, wspace=0.15,
                        hspace=0.75)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    n_axes = len(fig.axes)  # == drawn: unused grid cells were deleted
    plt.close(fig)
    return n_axes


def classic_panels(runs):
    """Histogram panels of :func:`classic_experiment`: one figure row per (init, activation)."""
    return [[(f"{run['init']} {run['activation']} L{r['layer']}\nstd {r['std']:.3g}", r["hist"])
             for r in run["layers"]] for run in runs]


def model_panels(rows):
    """Histogram panels of :func:`model_activation_stats`: one panel per row."""
    return [[(f"{r['name']} ({r['type']})\nstd {r['std']:.3g}", r["hist"]) for r in rows]]


def save_table(rows, prefix):
    """Write ``rows`` (histograms left out) to ``prefix.csv`` and ``prefix.json``; returns both paths."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    clean = [{k: v for k, v in r.items() if k != "hist"} for r in rows]
    keys = list(clean[0]) if clean else []
    with open(prefix + ".csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in clean:
            w.writerow({k: ("x".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v))
                        for k, v in r.items()})
    with open(prefix + ".json", "w", encoding="utf-8") as f:
        json.dump(clean, f, indent=1)
    return prefix + ".csv", prefix + ".json"


# --------------------------------------------------------------------------- config-driven study

MODEL_INITS = ("default", "xavier", "kaiming", "normal")


def load_batch(cfg, bundle, batch_size=None, seed=0):
    """One batch [N, C, H, W] (float32 numpy) of the training images, eval transform, fixed random pick.

    The eval pipeline (normalisation, resize/crop, no random augmentation) keeps the batch
    deterministic; the samples are a seeded random subset so every class is represented.
    """
    ds = bundle.train.with_transform(bundle.eval_transform)
    n = min(int(batch_size or cfg["DataLoader"]["batch_size"]), len(ds))
    idx = np.random.RandomState(seed).choice(len(ds), n, replace=False)
    return np.stack([np.asarray(ds[int(i)][0], dtype="float32") for i in idx])


def model_study(cfg, init=None, init_std=None, batch_size=None, max_layers=0, seed=None, bins=HIST_BINS,
                bundle=None):
    """Build the config's model with ``init`` and collect :func:`model_activation_stats` on one batch.

    Args:
        cfg: a loaded config.
        init: ``default``/``xavier``/``kaiming``/``normal``, or None for ``Arch.init``.
        init_std: std for ``normal`` (None: ``Arch.init_std``).
        batch_size: images in the batch (None: ``DataLoader.batch_size``).
        max_layers: rows kept, evenly spaced (0 = all).
        seed: seeds the model init and the batch pick (None: ``Global.seed``).
        bundle: an already built data bundle (else :func:`utils.data.build_datasets`).

    Returns:
        ``{"model", "rows", "init", "init_std", "batch_shape"}``.
    """
    import copy

    import paddle

    from utils.build import build_network
    from utils.data import build_datasets
    from utils.errors import UserError

    init = cfg["Arch"]["init"] if init is None else init
    if init not in MODEL_INITS:
        raise UserError(f"--init {init}: unknown init, choose one of {', '.join(MODEL_INITS)}")
    cfg = copy.deepcopy(cfg)
    cfg["Arch"]["init"] = init
    if init_std is not None:
        cfg["Arch"]["init_std"] = float(init_std)
    seed = cfg["Global"]["seed"] if seed is None else seed
    bundle = bundle or build_datasets(cfg)
    images = load_batch(cfg, bundle, batch_size, seed)
    paddle.seed(seed)
    model = build_network(cfg, bundle)
    rows = model_activation_stats(model, images, max_layers=max_layers, bins=bins)
    return {"model": model, "rows": rows, "init": init, "init_std": cfg["Arch"]["init_std"],
            "batch_shape": list(images.shape)}
