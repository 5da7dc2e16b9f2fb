"""VisualDL logging cost: training time with VisualDL off, with scalars only, and with the defaults.

Each config trains the same run (same seed, data, epochs) three ways, interleaved
(off, scalars, defaults, off, ...), and the ratio of median ``fit`` times (training plus
evaluations, i.e. what one waits for) to the run without VisualDL is printed:

* ``off``: ``VisualDL.enable=false``;
* ``scalars``: VisualDL on, histograms, images, confidence histograms, PR curves and hparams off;
* ``defaults``: the ``VisualDL`` section's defaults (target: <= 1.05 of ``off``).

The machine is shared, so wall-time differences of a few percent are noise-sized. Two
figures that depend less on what else runs are printed too: the process CPU time of ``fit``
(all threads, the LogWriter's background thread included), and the CPU time spent inside the
logger itself (its hooks, the gradient copy in :class:`utils.training.vdl.GradCapture` and the
``LogWriter`` calls they make; ``time.thread_time``, so time the thread is preempted does not
count) as a fraction of the run's fit CPU time. With 2 threads on a loaded 2-core machine the
OpenMP threads spin-wait for each other, which inflates wall and CPU time and understates that
fraction; ``OMP_NUM_THREADS=1`` gives the steadiest figures.

    python bench/bench_vdl.py [--configs configs/cnn_digits.yml configs/gmlp_digits.yml] [--epochs 5] [--repeats 5]

Measured on the shared 2-core machine (load 2-4 from other work), 5 epochs, median of 5: the
logger's CPU share of fit was 1.0% (cnn_digits) and 2.0% (gmlp_digits) with OMP_NUM_THREADS=1,
0.5% and 1.0% with 2 threads; scalars only 0.1-0.2%. Wall-time ratios defaults/off came out
0.73-0.94 (the defaults ran *faster*): the machine's noise is larger than the cost.
"""
import argparse
import functools
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.build import configure_threads  # noqa: E402

configure_threads(0)

import paddle  # noqa: E402

from utils.config import load_config  # noqa: E402
from utils.trainer import train  # noqa: E402
from utils.training import vdl  # noqa: E402

MODES = {
    "off": ["VisualDL.enable=false"],
    "scalars": ["VisualDL.histograms_every_epochs=0", "VisualDL.sample_images=0", "VisualDL.confidence_histogram=false",
                "VisualDL.pr_curves=false", "VisualDL.hparams=false"],
    "defaults": [],
}

# CPU seconds spent inside the timed logger methods during the current run, and CPU seconds of fit.
_spent = [0.0]
_fit_cpu = [0.0]


def _timed(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _spent[0] += time.thread_time() - t0
    return wrapper


def instrument():
    """Time the logger's hooks and the gradient copy (the logger's whole work, writer calls included)."""
    for name in ("on_train_batch_begin", "on_train_batch_end", "on_eval_end", "on_train_end"):
        setattr(vdl.VisualDLLogger, name, _timed(getattr(vdl.VisualDLLogger, name)))
    vdl.GradCapture.capture = _timed(vdl.GradCapture.capture)
    fit = paddle.Model.fit

    @functools.wraps(fit)
    def timed_fit(*args, **kwargs):
        c0 = time.process_time()
        try:
            return fit(*args, **kwargs)
        finally:
            _fit_cpu[0] = time.process_time() - c0

    paddle.Model.fit = timed_fit


def run(config, out, mode, epochs, name):
    cfg = load_config(config, [f"Global.output_dir={out}", f"Global.run_name={name}", f"Global.epochs={epochs}",
                               "Global.verbose=0", "EarlyStopping.enable=false", *MODES[mode]])
    _spent[0] = _fit_cpu[0] = 0.0
    m = train(cfg, print_fn=lambda *a: None)
    return m["fit_time_s"], _fit_cpu[0], _spent[0], m["global_step"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["configs/cnn_digits.yml", "configs/gmlp_digits.yml"])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    instrument()
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            path = config if os.path.isabs(config) else os.path.join(ROOT, config)
            run(path, tmp, "defaults", 1, "warmup")  # first run in a process builds kernels
            fit = {m: [] for m in MODES}
            cpu = {m: [] for m in MODES}
            inside = {m: [] for m in MODES}
            for r in range(args.repeats):
                order = list(MODES) if r % 2 == 0 else list(MODES)[::-1]  # alternate to cancel drifts
                for mode in order:
                    t, c, spent, steps = run(path, tmp, mode, args.epochs, f"{mode}{r}")
                    fit[mode].append(t)
                    cpu[mode].append(c)
                    inside[mode].append(spent / c)
                print(f"{os.path.basename(config)} repeat {r + 1}: " + ", ".join(
                    f"{m} {fit[m][-1]:.2f}s / cpu {cpu[m][-1]:.2f}s (logger {inside[m][-1]:.1%})" for m in MODES), flush=True)
            summary.append((config, steps, *({m: statistics.median(v) for m, v in d.items()} for d in (fit, cpu, inside))))
    print(f"\n{args.epochs} epochs, {os.environ.get('OMP_NUM_THREADS')} threads, median of {args.repeats} "
          f"(fit = training + evaluations, wall and process CPU; logger = CPU time inside the VisualDL logger / fit CPU time)")
    for config, steps, wall, cpu, ins in summary:
        print(f"{os.path.basename(config)} ({steps} steps):")
        for m in MODES:
            print(f"  {m:<8}  wall {wall[m]:6.2f}s ratio {wall[m] / wall['off']:.3f}   "
                  f"cpu {cpu[m]:6.2f}s ratio {cpu[m] / cpu['off']:.3f}   logger {ins[m]:.1%}")
    print("target: defaults <= 1.05 x off")


if __name__ == "__main__":
    main()
