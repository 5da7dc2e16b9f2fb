"""The weight-init experiment of CS231n (2017, lecture 6, "Training Neural Networks I").

A 10-layer, 500-unit fully connected net, no bias, fed 1000 x 500 unit-Gaussian input; weights
``W = randn(fan_in, fan_out) * scale`` with

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

:func:`classic_experiment` runs it, :func:`format_classic` prints the lecture's table,
:func:`classic_panels` gives the histograms for :func:`utils.studies.init_study.plot_histograms`.
Any other model on a real batch is :mod:`utils.studies.init_study`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from utils.studies.init_stats import HIST_BINS, histogram, tensor_stats

CLASSIC_INITS = ("normal_0.01", "normal_1.0", "xavier", "kaiming")
CLASSIC_ACTIVATIONS = ("tanh", "relu")


def classic_scale(init: str, fan_in: int) -> float:
    """Std of the weights of ``init`` (``normal_<std>``, ``xavier``, ``kaiming``) for ``fan_in`` inputs."""
    if init.startswith("normal_"):
        return float(init.split("_", 1)[1])
    if init == "xavier":
        return 1.0 / math.sqrt(fan_in)
    if init == "kaiming":
        return math.sqrt(2.0 / fan_in)
    raise ValueError(f"unknown classic init '{init}', choose normal_<std>, xavier or kaiming")


def classic_experiment(inits: Sequence[str] = CLASSIC_INITS, activations: Sequence[str] = CLASSIC_ACTIVATIONS,
                       num_layers: int = 10, units: int = 500, samples: int = 1000, seed: int = 0,
                       bins: int = HIST_BINS) -> list[dict]:
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
    # imports paddle: deferred until the thread count is set
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
                    row["hist"] = histogram(v, lo, hi if shared else float(v.max(initial=0.0)), bins)
            else:
                for row in layers:
                    row["hist"] = None
            runs.append({"init": init, "activation": act, "scale": classic_scale(init, units), "units": units,
                         "samples": samples, "seed": seed, "layers": layers})
    return runs


def classic_table(runs: list[dict]) -> list[dict]:
    """Flat rows (one per run and layer) for printing and CSV."""
    out = []
    for run in runs:
        for r in run["layers"]:
            out.append({"init": run["init"], "activation": run["activation"], "layer": r["layer"],
                        "mean": r["mean"], "std": r["std"], "saturated": r["saturated"],
                        "zero_frac": r["zero_frac"], "dead_frac": r["dead_frac"]})
    return out


def format_classic(runs: list[dict]) -> str:
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


def classic_panels(runs: list[dict]) -> list[list[tuple[str, tuple]]]:
    """Histogram panels of :func:`classic_experiment`: one figure row per (init, activation)."""
    return [[(f"{run['init']} {run['activation']} L{r['layer']}\nstd {r['std']:.3g}", r["hist"])
             for r in run["layers"]] for run in runs]
