"""Cost of the training doctor: step time with ``Doctor.enable`` on vs off, same data and model.

For each config the full ``utils.trainer.train`` path runs one epoch (validation only after it,
excluded) in four modes, interleaved and repeated:

* ``off``: ``Doctor.enable=false``;
* ``on``: the defaults; its plain steps (neither gradient nor layer sampling) give ``t_plain``;
* ``grad``: ``Doctor.grad_every=1``: every step measures the gradient norm -> ``t_grad``;
* ``layers``: ``Doctor.sample_every=1``: every step takes per-layer statistics -> ``t_layers``.

Per-step wall times are taken between consecutive batch starts (everything a step costs:
loading, hapi's ``train_batch``, every callback), the first steps of a run excluded as warm-up.
The steady-state cost at the defaults (grad_every=10, sample_every=50) is

    ratio = (0.90 t_plain + 0.08 t_grad + 0.02 t_layers) / t_off      (target <= 1.05)

with medians over steps and repeats. The ``on`` runs' own mean step time over the whole epoch
is printed as well (it counts step 1's sample, so short runs overstate the cost).

    python bench/bench_doctor.py [--configs mlp_digits gmlp_digits cnn_cifar10 ...] [--steps 40] [--repeats 3]

CIFAR configs train on a synthetic CIFAR-format tarball (``utils.data.synthetic.make_cifar_tarball``).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.build import configure_threads  # noqa: E402

configure_threads(0)

from utils.config import load_config  # noqa: E402
from utils.data.synthetic import make_cifar_tarball  # noqa: E402
from utils.trainer import train  # noqa: E402
from utils.training import callbacks as cb  # noqa: E402

WARMUP_STEPS = 2
MODES = {"off": ["Doctor.enable=false"], "on": [], "grad": ["Doctor.grad_every=1", "Doctor.sample_every=1000000"],
         "layers": ["Doctor.sample_every=1"]}


class TimedProgress(cb.Progress):
    """Progress that also stamps the start of every training batch."""

    stamps = []

    def on_train_batch_begin(self, step, logs=None):
        TimedProgress.stamps.append((self.global_step + 1, self.epoch, time.perf_counter()))


def step_times(stamps, skip):
    """{step: seconds} from consecutive batch starts of one epoch, the first ``skip`` steps excluded."""
    out = {}
    for (s, e, t), (_, e2, t2) in zip(stamps, stamps[1:]):
        if e == e2 and s > skip:
            out[s] = t2 - t
    return out


def run(config, overrides, out, name, tarball, steps):
    over = [f"Global.output_dir={out}", f"Global.run_name={name}", "Global.verbose=0", "Global.epochs=1",
            "Global.eval_every_epochs=0", "EarlyStopping.enable=false", "DataLoader.num_workers=0"]
    if "cifar" in config:
        cfg0 = load_config(os.path.join(ROOT, "configs", f"{config}.yml"))
        n = steps * cfg0["DataLoader"]["batch_size"]
        over += [f"Data.data_dir={tarball}", f"Data.val_split={min(0.5, 100 / n):.4f}"]
    cfg = load_config(os.path.join(ROOT, "configs", f"{config}.yml"), over + overrides)
    TimedProgress.stamps = []
    m = train(cfg, print_fn=lambda *a: None)
    mean = (m["fit_time_s"] - m["eval_time_s"]) / max(m["global_step"], 1)
    return step_times(TimedProgress.stamps, WARMUP_STEPS), mean


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["mlp_digits", "gmlp_digits", "cnn_digits", "resnet20_digits",
                                                     "cnn_cifar10", "gmlp_cifar10"])
    p.add_argument("--steps", type=int, default=20, help="training steps per CIFAR run (digits: one epoch)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cb.Progress = TimedProgress  # the trainer builds cb.Progress
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tarball = None
        if any("cifar" in c for c in args.configs):
            tarball = make_cifar_tarball(os.path.join(tmp, "cifar.tar.gz"), n_train=args.steps * 128 + 200, n_test=10)
        for config in args.configs:
            times = {m: [] for m in MODES}
            means = {"off": [], "on": []}
            for r in range(args.repeats):
                order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
                for mode in order:
                    st, mean = run(config, MODES[mode], tmp, f"{config}_{mode}_{r}", tarball, args.steps)
                    if mode == "on":  # plain steps only: not a multiple of grad_every (10), not step 1
                        st = {s: t for s, t in st.items() if s % 10}
                    times[mode] += list(st.values())
                    if mode in means:
                        means[mode].append(mean)
            med = {m: statistics.median(v) for m, v in times.items()}
            ratio = (0.90 * med["on"] + 0.08 * med["grad"] + 0.02 * med["layers"]) / med["off"]
            whole = statistics.median(means["on"]) / statistics.median(means["off"])
            results.append((config, ratio))
            print(f"{config}: off {med['off'] * 1e3:.2f} ms/step, plain {med['on'] * 1e3:.2f}, grad-norm step "
                  f"{med['grad'] * 1e3:.2f}, layer-sample step {med['layers'] * 1e3:.2f}; steady-state ratio "
                  f"{ratio:.3f}; whole-run mean ratio {whole:.3f} ({len(times['off'])} steps/mode)", flush=True)
    print(f"{os.environ.get('OMP_NUM_THREADS')} threads; worst steady-state ratio "
          f"{max(r for _, r in results):.3f} ({max(results, key=lambda x: x[1])[0]}); target <= 1.05")


if __name__ == "__main__":
    main()
