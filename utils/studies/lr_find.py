"""Learning-rate range test (Leslie Smith's "LR range test", as popularised by fastai's ``lr_find``).

The network is trained for up to ``num_iters`` iterations while the learning rate grows
exponentially from ``start_lr`` to ``end_lr`` (``lr_i = start_lr * (end_lr / start_lr) ** (i / (num_iters - 1))``,
so the ratio of consecutive LRs is constant and the last one is exactly ``end_lr``). The loss of each
batch is recorded raw and smoothed with a bias-corrected exponential moving average
(``avg = beta * avg + (1 - beta) * loss``, ``smoothed = avg / (1 - beta ** (i + 1))``, beta 0.98 as
fastai). The sweep stops early once the smoothed loss exceeds ``diverge_factor`` (4) times the best
smoothed loss seen, or at once when a loss is NaN/Inf. Losses are assumed non-negative (cross-entropy, MSE).

Afterwards the network's parameters and buffers, the optimizer (accumulators, LR or LR scheduler,
internal bookkeeping, even the auto-generated names its accumulators will get), the train/eval mode
of every layer and the Python/NumPy/Paddle random states are exactly as before: training after
:func:`lr_range_test` gives bit-identical results to training without it. Pending gradients are
discarded (the parameters end with no gradient).

Only the LR is changed during the sweep: the optimizer's type, momentum/betas, weight decay and
gradient clipping stay as configured. The config's LR *schedule* (and its warmup) is not used:
the optimizer's scheduler is swapped for one the sweep controls (``optimizer.set_lr_scheduler``;
``optimizer.set_lr`` when the optimizer was built with a float LR) and put back afterwards.
Assigning a float to ``optimizer._learning_rate`` would change ``get_lr()`` but not the LR used.

Suggestions (all read from the smoothed curve, skipping the first 10% of the planned iterations,
where the average has seen few batches, and any non-finite point):

* ``min_div10``: the LR at the smoothed minimum divided by 10 (the classic rule of thumb).
* ``valley``: fastai's "valley" rule, re-implemented: the longest strictly decreasing
  subsequence of the smoothed loss, of length L ending at index e, is read as a descending
  stretch of L points ending where the descent ends; the suggestion is its middle, index
  ``e - L // 2``. (fastai takes ``start + int(L/3) + int(L/6)`` with ``start = e - L``; the same
  point to within one iteration.)
* ``steepest``: where the smoothed loss falls fastest against log(LR) (minimum of ``np.gradient``).

``valley`` and ``steepest`` only look at the curve up to the smoothed minimum: with gradient
clipping the loss can climb, wobble and fall again short of the divergence factor, and a
steepest point read in that tail would be far too high (fastai reads the whole curve).

``min_div10`` is the recommended default (:data:`RECOMMENDED`). Measured with
``bench/bench_lr_find.py`` (3-epoch budget on digits, mlp/Adam, cnn/Momentum, gmlp/AdamW), its
accuracy was 1.000, 0.997 and 1.000 of the best of a 5-point LR grid; ``steepest`` 0.991, 0.997,
1.000; ``valley`` 0.966, 0.975, 0.968. On a linear-regression toy (tests/test_lr_find.py) it stays
within 0.25-1.5x of the analytic 1/lambda_max. Why valley lands low: with 100 iterations over
8 decades, the bias-corrected EMA keeps drifting down through the flat start of the curve, so the
"longest descending stretch" begins decades before the real descent and its middle sits too low.
``steepest`` reads one point of a noisy derivative: on mini-batch toys it sometimes picks a spike
in the flat region. The minimum of the smoothed curve is lagged by the EMA (about 10x above the
raw loss's minimum on digits, near where the raw loss starts to blow up); the division by 10 brings
it back into the stable range.

Everything here imports Paddle lazily, so :func:`check_sweep_args` works before the tools set threads.
"""
import bisect
import dataclasses
import math
import os
import time

import numpy as np

from utils.errors import UserError

__all__ = ["LRFindResult", "lr_range_test", "suggest_lrs", "check_sweep_args", "plot_lr_find",
           "run_lr_find", "exp_lrs", "ema_smooth", "RECOMMENDED", "SUGGESTIONS"]

SUGGESTIONS = ("min_div10", "valley", "steepest")
RECOMMENDED = "min_div10"
DESCRIPTIONS = {
    "min_div10": "LR at the smoothed minimum / 10",
    "valley": "middle of the longest descending stretch of the smoothed loss (fastai's valley)",
    "steepest": "steepest descent of the smoothed loss against log(LR)",
}


# ----------------------------------------------------------------------------- arguments

def check_sweep_args(start_lr, end_lr, num_iters, diverge_factor=4.0, beta=0.98):
    """Raise :class:`UserError` (one line) on arguments the sweep cannot run with."""
    for name, v in (("start_lr", start_lr), ("end_lr", end_lr), ("diverge_factor", diverge_factor), ("beta", beta)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"{name}: {v!r} is not a finite number")
    if isinstance(num_iters, bool) or not isinstance(num_iters, int):
        raise UserError(f"num_iters: {num_iters!r} is not an integer")
    if start_lr <= 0:
        raise UserError(f"start_lr must be > 0 (the sweep is exponential), got {start_lr:g}")
    if start_lr >= end_lr:
        raise UserError(f"start_lr {start_lr:g} must be below end_lr {end_lr:g} (the LR grows from start to end), "
                        f"e.g. --start-lr 1e-7 --end-lr 10")
    if num_iters < 10:
        raise UserError(f"num_iters must be >= 10 to give a usable curve, got {num_iters} (100 is typical)")
    if diverge_factor <= 1:
        raise UserError(f"diverge_factor must be > 1 (stop when the smoothed loss exceeds factor x its best), "
                        f"got {diverge_factor:g}")
    if not 0 <= beta < 1:
        raise UserError(f"beta (EMA smoothing) must be in [0, 1), got {beta:g}")


def exp_lrs(start_lr, end_lr, num_iters):
    """The planned LRs: geometric from ``start_lr`` to exactly ``end_lr`` in ``num_iters`` values."""
    i = np.arange(num_iters, dtype=np.float64)
    lrs = start_lr * (end_lr / start_lr) ** (i / (num_iters - 1))
    lrs[0], lrs[-1] = start_lr, end_lr
    return lrs


def ema_smooth(losses, beta=0.98):
    """Bias-corrected exponential moving average of ``losses`` (fastai's smoothing)."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


# ----------------------------------------------------------------------------- result

@dataclasses.dataclass
class LRFindResult:
    """The recorded curve and what was read from it.

    ``lrs[i]`` is the LR of iteration i, ``losses[i]`` that batch's loss (before the update),
    ``smoothed[i]`` the bias-corrected EMA. ``suggestions`` maps ``steepest``/``valley``/``min_div10``
    to an LR (empty when the curve is too short); ``indices`` gives the curve index each one was read
    at (``min_div10``: the index of the minimum). ``stop_reason`` is ``completed``, ``diverged`` or
    ``non-finite loss``; ``stop_detail`` says it in words.
    """

    lrs: list
    losses: list
    smoothed: list
    suggestions: dict
    indices: dict
    recommended: str
    stop_reason: str
    stop_detail: str
    start_lr: float
    end_lr: float
    num_iters: int
    beta: float
    diverge_factor: float
    best_loss: float
    best_lr: float
    window: tuple
    warnings: list
    seconds: float = 0.0

    @property
    def iterations(self):
        return len(self.lrs)

    @property
    def recommended_lr(self):
        return self.suggestions.get(self.recommended)

    def to_dict(self):
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        d = dataclasses.asdict(self)
        d["iterations"] = self.iterations
        d["recommended_lr"] = self.recommended_lr
        d["descriptions"] = {k: DESCRIPTIONS[k] for k in self.suggestions}
        return clean(d)


# ----------------------------------------------------------------------------- suggestions

def _longest_decreasing(values):
    """Length of the longest strictly decreasing subsequence ending at each index (O(n log n))."""
    tails = []  # tails[k]: the largest -value that ends an increasing run (of -values) of length k+1
    out = []
    for v in values:
        k = bisect.bisect_left(tails, -v)
        if k == len(tails):
            tails.append(-v)
        else:
            tails[k] = -v
        out.append(k + 1)
    return out


def suggest_lrs(lrs, smoothed, num_iters=None, skip_start=None):
    """Suggestions from a curve: ``(suggestions, indices, window)``.

    The window skips the first ``skip_start`` points (default 10% of ``num_iters``; fewer when the
    curve is short) and every point after the first non-finite value. Fewer than 3 usable points
    give empty dicts.
    """
    lrs = np.asarray(lrs, np.float64)
    sm = np.asarray(smoothed, np.float64)
    n = len(sm)
    finite = np.isfinite(sm)
    end = int(np.argmin(finite)) if not finite.all() else n
    planned = num_iters or n
    s = planned // 10 if skip_start is None else int(skip_start)
    if end - s < max(3, end // 2):  # a short curve (early stop): keep more of it
        s = max(0, min(s, end - 3, end // 4))
    if end - s < 3:
        return {}, {}, (s, end)
    w_lr, w_sm = lrs[s:end], sm[s:end]
    i_min = int(np.argmin(w_sm))
    # steepest and valley look at the descending side only (up to the minimum): past it, a loss held
    # back by gradient clipping can wobble down again on its way to divergence
    down = max(i_min + 1, 3)
    grads = np.gradient(w_sm[:down], np.log10(w_lr[:down]))
    i_steep = int(np.argmin(grads))
    lds = _longest_decreasing(w_sm[:down])
    length = max(lds)
    i_end = lds.index(length)  # the first index where the longest descent ends
    i_valley = max(i_end - length // 2, 0)
    sug = {
        "min_div10": float(max(w_lr[i_min] / 10.0, lrs[0])),
        "valley": float(w_lr[i_valley]),
        "steepest": float(w_lr[i_steep]),
    }
    idx = {"min_div10": s + i_min, "valley": s + i_valley, "steepest": s + i_steep}
    return sug, idx, (s, end)


# ----------------------------------------------------------------------------- state snapshot

class _State:
    """Everything the sweep changes, captured before and put back exactly afterwards."""

    def __init__(self, network, optimizer):
        import random

        import paddle
        from paddle.base import unique_name

        self.network, self.optimizer = network, optimizer
        # network: parameters and persistable buffers (BatchNorm statistics) by value
        self.tensors = [(t, np.array(t.numpy(), copy=True)) for t in network.state_dict().values()]
        self.modes = [(layer, layer.training) for layer in network.sublayers(include_self=True)]
        # optimizer: accumulator values, which ones exist, and its bookkeeping containers
        opt = optimizer
        self.acc = {(name, p): (var, np.array(var.numpy(), copy=True))
                    for name, per in opt._accumulators.items() for p, var in per.items()}
        self.acc_names = list(opt._accumulators)
        self.created = set(getattr(opt, "_already_create_accumulator", set()))
        self.holder = dict(opt._accumulators_holder)
        self.lr_map = dict(opt._learning_rate_map)
        self.opti_names = list(getattr(opt, "_opti_name_list", []))
        self.master = {k: (v, np.array(v.numpy(), copy=True)) for k, v in getattr(opt, "_master_weights", {}).items()}
        self.helper = getattr(opt, "helper", None)
        self.lr = opt._learning_rate
        self.lr_state = self.lr.state_dict() if isinstance(self.lr, paddle.optimizer.lr.LRScheduler) else None
        # Accumulators are named from a global counter (``w_0_moment1_0``); rewinding it makes the
        # ones training creates later get the names they would have had without the sweep, so
        # checkpoints stay loadable in a fresh process.
        self.name_ids = dict(unique_name.generator.ids)
        self.name_gen = unique_name.generator
        # random states: data order, augmentation, dropout
        self.rng = (random.getstate(), np.random.get_state(), paddle.get_rng_state())

    def restore(self):
        import random

        import paddle
        from paddle.base import unique_name

        net, opt = self.network, self.optimizer
        for t, value in self.tensors:
            t.set_value(value)
        opt.clear_grad(set_to_zero=False)
        # mode: the top-level call also sets the tracer's global train/eval mode
        if self.modes[0][1]:
            net.train()
        else:
            net.eval()
        for layer, mode in self.modes:
            layer.training = mode
        # accumulators: drop those the sweep created, put back the values of the others
        for name in list(opt._accumulators):
            per = opt._accumulators[name]
            for p in list(per):
                if (name, p) not in self.acc:
                    del per[p]
            if name not in self.acc_names and not per:
                del opt._accumulators[name]
        for var, value in self.acc.values():
            var.set_value(value)
        if hasattr(opt, "_already_create_accumulator"):
            opt._already_create_accumulator.clear()
            opt._already_create_accumulator.update(self.created)
        opt._accumulators_holder = dict(self.holder)
        if hasattr(opt, "_opti_name_list"):
            opt._opti_name_list[:] = self.opti_names
        if hasattr(opt, "_master_weights"):
            opt._master_weights = {k: v for k, (v, _) in self.master.items()}
            for v, value in self.master.values():
                v.set_value(value)
        opt.helper = self.helper
        opt._learning_rate_map.clear()
        opt._learning_rate_map.update(self.lr_map)
        if isinstance(self.lr, paddle.optimizer.lr.LRScheduler):
            opt.set_lr_scheduler(self.lr)
            self.lr.set_state_dict(self.lr_state)
        else:
            opt._learning_rate = self.lr  # set_lr refuses while a scheduler is installed
            opt.set_lr(self.lr)  # also refills the LR tensor when one exists
        if unique_name.generator is self.name_gen:
            self.name_gen.ids.clear()
            self.name_gen.ids.update(self.name_ids)
        random.setstate(self.rng[0])
        np.random.set_state(self.rng[1])
        paddle.set_rng_state(self.rng[2])


def _sweep_scheduler(lr):
    """An LRScheduler whose value the sweep sets directly (:meth:`set`); nobody else steps it."""
    import paddle

    class _SweepLR(paddle.optimizer.lr.LRScheduler):
        def __init__(self, value):
            self.value = float(value)
            super().__init__(learning_rate=self.value, last_epoch=-1, verbose=False)

        def get_lr(self):
            return self.value

        def set(self, value):
            self.value = self.last_lr = float(value)

    return _SweepLR(lr)


def _batches(loader):
    """Endless batches: a new pass (a new shuffle) whenever the loader is exhausted."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise UserError("the training loader gives no batch: lower DataLoader.batch_size or set "
                            "DataLoader.drop_last=false")


# ----------------------------------------------------------------------------- the test

def lr_range_test(network, optimizer, loss_fn, loader, start_lr=1e-7, end_lr=10.0, num_iters=100,
                  diverge_factor=4.0, beta=0.98, recommended=RECOMMENDED, callback=None):
    """Run the LR range test; the network and optimizer are restored afterwards.

    Args:
        network: a ``paddle.nn.Layer`` taking the loader's inputs.
        optimizer: a Paddle optimizer over the network's parameters (float LR or LRScheduler).
        loss_fn: ``loss_fn(outputs, labels)`` -> scalar tensor (non-negative).
        loader: re-iterable of ``(inputs, labels)`` batches; restarted when exhausted.
        start_lr, end_lr, num_iters: the exponential sweep.
        diverge_factor: stop once the smoothed loss exceeds this times its best.
        beta: EMA smoothing factor (bias-corrected).
        recommended: which suggestion :attr:`LRFindResult.recommended_lr` returns.
        callback: optional ``callback(i, lr, loss)`` after each optimizer step (tests, progress).

    Returns:
        :class:`LRFindResult`.
    """
    import paddle

    check_sweep_args(start_lr, end_lr, num_iters, diverge_factor, beta)
    if recommended not in SUGGESTIONS:
        raise UserError(f"recommended: {recommended!r} is not one of {', '.join(SUGGESTIONS)}")
    planned = exp_lrs(float(start_lr), float(end_lr), int(num_iters))
    state = _State(network, optimizer)
    scheduled = isinstance(optimizer._learning_rate, paddle.optimizer.lr.LRScheduler)
    sched = _sweep_scheduler(planned[0]) if scheduled else None
    lrs, losses, smoothed = [], [], []
    avg, best, best_i = 0.0, math.inf, 0
    reason, detail = "completed", f"all {num_iters} iterations run"
    t0 = time.time()
    batches = None
    try:
        if scheduled:
            optimizer.set_lr_scheduler(sched)
        optimizer.clear_grad(set_to_zero=False)
        network.train()
        batches = _batches(loader)
        for i, lr in enumerate(planned):
            lr = float(lr)
            if scheduled:
                sched.set(lr)
            else:
                optimizer.set_lr(lr)
            x, y = next(batches)[:2]
            loss = loss_fn(network(x), y)
            value = float(loss)
            lrs.append(lr)
            losses.append(value)
            if not math.isfinite(value):
                smoothed.append(math.nan)
                reason, detail = "non-finite loss", f"loss {value} at iteration {i} (lr {lr:.3g})"
                break
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            avg = beta * avg + (1 - beta) * value
            sm = avg / (1 - beta ** (i + 1))
            smoothed.append(sm)
            if callback is not None:
                callback(i, lr, value)
            if sm < best:
                best, best_i = sm, i
            if sm > diverge_factor * best:
                reason = "diverged"
                detail = (f"smoothed loss {sm:.4g} > {diverge_factor:g} x best {best:.4g} at iteration {i} "
                          f"(lr {lr:.3g})")
                break
    finally:
        if batches is not None:
            batches.close()  # ends the loader's iterator (and its workers) now
        state.restore()
    seconds = time.time() - t0

    sug, idx, window = suggest_lrs(lrs, smoothed, num_iters)
    warnings = []
    if not sug:
        warnings.append(f"only {len(lrs)} iterations before the sweep stopped ({detail}): too few points to "
                        f"suggest an LR; lower the start LR or raise num_iters")
    else:
        if reason == "completed" and idx["min_div10"] >= len(lrs) - 2:
            warnings.append(f"the smoothed loss was still falling at end_lr {end_lr:g}: raise end_lr to see "
                            f"where it diverges")
        if idx["min_div10"] <= window[0]:
            warnings.append("the smoothed loss never fell below its early values: the sweep starts too high "
                            "(lower start_lr), or the model does not learn (check the data and labels)")
        if lrs[idx["min_div10"]] / 10.0 < lrs[0]:
            warnings.append(f"min/10 would be below start_lr: clamped to {lrs[0]:g}")
    return LRFindResult(
        lrs=lrs, losses=losses, smoothed=smoothed, suggestions=sug, indices=idx, recommended=recommended,
        stop_reason=reason, stop_detail=detail, start_lr=float(start_lr), end_lr=float(end_lr),
        num_iters=int(num_iters), beta=float(beta), diverge_factor=float(diverge_factor),
        best_loss=float(best), best_lr=float(lrs[best_i]) if lrs else math.nan, window=tuple(window),
        warnings=warnings, seconds=round(seconds, 3))


# ----------------------------------------------------------------------------- outputs

def plot_lr_find(result, path, title=None):
    """Save loss vs LR (log x axis; raw and smoothed; suggestions marked) as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    lrs = np.asarray(result.lrs, np.float64)
    raw = np.asarray(result.losses, np.float64)
    sm = np.asarray(result.smoothed, np.float64)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        ok = np.isfinite(raw)
        ax.plot(lrs[ok], raw[ok], color="0.7", lw=1, label="loss (raw)")
        ok = np.isfinite(sm)
        ax.plot(lrs[ok], sm[ok], color="C0", lw=2, label=f"loss (EMA, beta {result.beta:g})")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        finite = sm[np.isfinite(sm)]
        if len(finite):
            best = float(finite.min())
            lo = min(best, float(raw[np.isfinite(raw)].min()))
            # the y range covers the curve up to its minimum; the explosion leaves the plot at the top
            upto = int(np.argmin(finite)) + 1
            top = max(float(finite[:upto].max()), best * 1.05)
            span = top - lo
            ax.set_ylim(lo - 0.05 * span, top + 0.25 * span)
        styles = {"valley": ("C3", "o"), "steepest": ("C2", "v"), "min_div10": ("C1", "s")}
        for name, lr in result.suggestions.items():
            colour, marker = styles[name]
            star = " (recommended)" if name == result.recommended else ""
            ax.axvline(lr, color=colour, ls="--", lw=1)
            y = float(np.interp(np.log10(lr), np.log10(lrs[np.isfinite(sm)]), sm[np.isfinite(sm)])) if len(finite) else 0
            ax.plot([lr], [y], marker=marker, color=colour, ms=9, ls="none",
                    label=f"{name}: {lr:.2e}{star}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=9)
        ax.set_title(title or f"LR range test: {result.iterations} iterations, {result.stop_reason}")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def write_visualdl(result, log_dir):
    """Log the curve in ``log_dir`` (one LogWriter, one file): ``lr_find/loss_smoothed``,
    ``lr_find/loss_raw`` and ``lr_find/lr`` against the step (iteration + 1); non-finite values skipped."""
    from visualdl import LogWriter

    with LogWriter(logdir=log_dir) as writer:
        for i, (lr, raw, sm) in enumerate(zip(result.lrs, result.losses, result.smoothed)):
            step = i + 1
            writer.add_scalar("lr_find/lr", lr, step)
            if math.isfinite(raw):
                writer.add_scalar("lr_find/loss_raw", raw, step)
            if math.isfinite(sm):
                writer.add_scalar("lr_find/loss_smoothed", sm, step)
        lines = [f"{k}: {v:.3g}" + (" (recommended)" if k == result.recommended else "")
                 for k, v in result.suggestions.items()]
        writer.add_text("lr_find/suggestions", "  \n".join(lines + [f"stop: {result.stop_detail}"]), 0)


def default_out_dir(cfg):
    import datetime

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(cfg["Global"]["output_dir"], "lr_find", cfg["_meta"]["config_name"], stamp)


def format_lr(lr):
    """Two significant digits, as YAML reads back as a float (``0.0031``, ``3.1e-05``)."""
    s = f"{lr:.2g}"
    mant, _, exp = s.partition("e")
    if "." not in mant:
        mant += ".0"
    return mant + (f"e{exp}" if exp else "")


def run_lr_find(cfg, out_dir=None, start_lr=1e-7, end_lr=10.0, num_iters=100, diverge_factor=4.0,
                beta=0.98, recommended=RECOMMENDED, print_fn=print):
    """Config -> data (training loader, with its augmentation) -> model -> optimizer -> sweep -> files.

    Writes ``lr_find.png``, ``lr_find.json`` and a VisualDL log into ``out_dir`` (default
    ``<Global.output_dir>/lr_find/<config name>/<timestamp>/``; an existing non-empty directory is refused).

    Returns:
        ``(result, out_dir)``.
    """
    check_sweep_args(start_lr, end_lr, num_iters, diverge_factor, beta)

    from utils.build import build_network, select_device
    from utils.data import build_datasets, build_loaders
    from utils.training.callbacks import seed_everything
    from utils.training.checkpoint import save_json
    from utils.training.optim import build_loss, build_optimizer

    out_dir = out_dir or default_out_dir(cfg)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise UserError(f"output directory {out_dir} already exists and is not empty: choose another --out")
    g = cfg["Global"]
    device = select_device(g["device"])
    seed_everything(g["seed"])
    bundle = build_datasets(cfg)
    loader, _ = build_loaders(cfg, bundle)
    network = build_network(cfg, bundle)
    optimizer = build_optimizer(cfg, network.parameters(), float(cfg["Optimizer"]["lr"]))
    loss_fn = build_loss(cfg, bundle.num_classes)
    sched = cfg["LRScheduler"]
    note = f"LRScheduler {sched['name']}"
    if sched["warmup_epochs"] > 0:
        note += f" with {sched['warmup_epochs']:g} warmup epochs"
    print_fn(f"lr_find: {cfg['Arch']['name']} with {cfg['Optimizer']['name']} on {bundle.name} "
             f"({len(bundle.train)} train images, batch {cfg['DataLoader']['batch_size']}, {len(loader)} steps/epoch, "
             f"{device}): lr {start_lr:g} -> {end_lr:g} over {num_iters} iterations")
    print_fn(f"  ({note} is ignored during the sweep: the LR follows the sweep; weight decay, momentum and "
             f"clipping are as configured)")

    result = lr_range_test(network, optimizer, loss_fn, loader, start_lr, end_lr, num_iters,
                           diverge_factor, beta, recommended)

    os.makedirs(out_dir, exist_ok=True)
    png = plot_lr_find(result, os.path.join(out_dir, "lr_find.png"),
                       title=f"LR range test: {cfg['_meta']['config_name']} ({cfg['Optimizer']['name']}), "
                             f"{result.stop_reason} after {result.iterations} iterations")
    data = result.to_dict()
    data.update({"config": cfg["_meta"]["config_path"], "model": cfg["Arch"]["name"],
                 "optimizer": cfg["Optimizer"]["name"], "config_lr": cfg["Optimizer"]["lr"],
                 "schedule_ignored": note})
    if result.recommended_lr is not None:
        data["override"] = f"-o Optimizer.lr={format_lr(result.recommended_lr)}"
    save_json(data, os.path.join(out_dir, "lr_find.json"))
    write_visualdl(result, out_dir)

    print_fn(f"  stopped: {result.stop_reason} ({result.stop_detail}); {result.seconds:.1f}s")
    print_fn(f"  best smoothed loss {result.best_loss:.4g} at lr {result.best_lr:.3g}")
    for w in result.warnings:
        print_fn(f"warning: {w}")
    for name in SUGGESTIONS:
        if name in result.suggestions:
            star = "  <- recommended" if name == result.recommended else ""
            print_fn(f"  {name:<10} {result.suggestions[name]:<9.3g} {DESCRIPTIONS[name]}{star}")
    print_fn(f"  config's lr {cfg['Optimizer']['lr']:g}")
    print_fn(f"files: {png}, {os.path.join(out_dir, 'lr_find.json')}; VisualDL: visualdl --logdir {out_dir}")
    return result, out_dir
