"""Real CIFAR-10 against the wall clock: validation accuracy over minutes, time to 85/88/90%, accuracy at the budget.

Reads ``../shared/data/cifar10-train-jpg.tar.gz`` (the 50,000 training images as JPEG files in
class folders), extracts it once, and trains each config through the ordinary training path
(``utils.trainer.train``, what ``tools/train.py`` runs) on a stratified 45,000 / 5,000 split
(``Data.name=folder``, ``Data.val_split=0.1``, ``Data.split_seed=0``).

The clock starts when ``train`` is called (data loading and the model's data-dependent init
count) and never stops. Two curves per run:

* on the clock: the run's own evaluations (``Global.eval_every_epochs`` of the config, with its
  ``Eval.tta``), at the wall time they finished;
* with ``--between``, also every epoch's checkpoint (``Checkpoint.save_every_epochs=1``) evaluated
  after the run, off the clock, with the same TTA, placed at the time the checkpoint was written
  plus the duration of one evaluation measured on the clock (what stopping there would have cost).

Times to 85%, 88% and 90% come from the joined curve. A config keeps its own epochs (the fast
recipe's fit the hour), or gets ``--epochs``, or with ``--fit`` the whole epochs that fit in
``--minutes`` at the speed a short probe measures (warmup cut to 10% of them, as the 30-epoch GPU
schedules of the other configs need); otherwise ``--minutes`` only marks the budget in the report.
Several ``--seeds`` give the spread.

    python bench/bench_cifar.py --configs configs/fast_cifar10.yml [--seeds 0 1 2] [--minutes 60]
    python bench/bench_cifar.py --configs configs/googlenet_cifar10.yml --minutes 8 --fit
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.build import configure_threads  # noqa: E402

configure_threads(0)

from common import CIFAR_JPG as ARCHIVE  # noqa: E402
from common import extract, probe_speed  # noqa: E402  (bench/ is on sys.path when run as a script)
from paddle.callbacks import Callback  # noqa: E402

from utils.config import load_config  # noqa: E402
from utils.runs import evaluate_run  # noqa: E402
from utils.trainer import train  # noqa: E402

TARGETS = (0.85, 0.88, 0.90)
TRAIN_IMAGES = 45000


class Clock(Callback):
    """Wall time (since ``t0``) at each epoch end and after each evaluation of the run."""

    def __init__(self, t0: float) -> None:
        super().__init__()
        self.t0, self.epoch_end, self.evals = t0, [], []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end.append(time.time() - self.t0)

    def on_eval_end(self, logs=None):
        logs = logs or {}
        self.evals.append({"min": (time.time() - self.t0) / 60, "acc": logs.get("acc"), "eval_s": logs.get("eval_time"),
                           "epoch": len(self.epoch_end) + 1})  # evaluated inside on_epoch_end, before ours


def time_to(curve, target):
    """First wall-clock minute at which the curve reaches ``target`` (None when it never does)."""
    for minute, acc in curve:
        if acc is not None and acc >= target:
            return minute
    return None


def run_one(path, root, args, seed):
    overrides = ["Data.name=folder", f"Data.data_dir={root}", "Data.val_split=0.1", "Data.split_seed=0",
                 f"Global.seed={seed}", f"Global.output_dir={args.output}", f"Global.run_name={os.path.basename(path)[:-4]}-s{seed}",
                 "Checkpoint.save_every_epochs=1", "EarlyStopping.enable=false", "Global.log_every_iters=50"]
    if args.fit:
        epochs = max(1, round(args.minutes * 60 * probe_speed(os.path.join(ROOT, path)) / TRAIN_IMAGES))
        overrides += [f"Global.epochs={epochs}", f"LRScheduler.warmup_epochs={0.1 * epochs:.2f}"]
    elif args.epochs:
        overrides.append(f"Global.epochs={args.epochs}")
    cfg = load_config(os.path.join(ROOT, path), overrides)
    t0 = time.time()
    clock = Clock(t0)
    m = train(cfg, callbacks=[clock], print_fn=print if args.verbose else (lambda *a: None))
    wall = (time.time() - t0) / 60
    run_dir = m["run_dir"]
    eval_s = max((e["eval_s"] or 0) for e in clock.evals) if clock.evals else 0.0
    offline = []
    for epoch, t_end in enumerate(clock.epoch_end if args.between else [], start=1):
        prefix = os.path.join(run_dir, f"epoch_{epoch}")
        if os.path.exists(prefix + ".pdparams") and epoch not in {e["epoch"] for e in clock.evals}:
            acc = evaluate_run(cfg, prefix)["acc"]
            offline.append(((t_end + eval_s) / 60, acc))
            print(f"  epoch {epoch}: {acc:.4f} at {(t_end + eval_s) / 60:.1f} min (checkpoint, evaluated after the run)", flush=True)
    on_clock = [(e["min"], e["acc"]) for e in clock.evals]
    curve = sorted(on_clock + offline)
    at_budget = max((a for mnt, a in curve if mnt <= args.minutes and a is not None), default=None)
    final = m["final"] or {}
    return {"config": path, "seed": seed, "epochs": cfg["Global"]["epochs"], "tta": cfg["Eval"]["tta"],
            "wall_min": wall, "final_acc": final.get("acc"), "on_clock": on_clock, "offline": offline,
            "time_to": {f"{t:.0%}": time_to(curve, t) for t in TARGETS}, "best_within_budget": at_budget,
            "run_dir": run_dir}


def fmt_min(v):
    return "-" if v is None else f"{v:.1f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="*", default=["configs/fast_cifar10.yml"])
    p.add_argument("--seeds", type=int, nargs="*", default=[0])
    p.add_argument("--minutes", type=float, default=60.0, help="the budget the report marks (not enforced)")
    p.add_argument("--epochs", type=int, default=0, help="override Global.epochs (0 = the config's)")
    p.add_argument("--fit", action="store_true", help="train the whole epochs that fit in --minutes (a speed probe decides)")
    p.add_argument("--data", default=ARCHIVE)
    p.add_argument("--workdir", default=os.path.join("/tmp", "cifar10-jpg"))
    p.add_argument("--output", default=os.path.join("/tmp", "bench_cifar"))
    p.add_argument("--verbose", action="store_true", help="print the training log")
    p.add_argument("--between", action="store_true",
                   help="also evaluate every epoch's checkpoint after the run (off the clock; one evaluation each)")
    args = p.parse_args()
    if not os.path.exists(args.data):
        print(f"skipped: {os.path.normpath(args.data)} not found (the real CIFAR-10 JPEG archive lives in "
              f"../shared/data beside the repository)")
        return
    root = os.path.join(extract(args.data, args.workdir), "train")
    if not os.path.isdir(root):
        root = args.workdir
    rows = []
    for path in args.configs:
        for seed in args.seeds:
            print(f"{path} seed {seed}: training ...", flush=True)
            r = run_one(path, root, args, seed)
            rows.append(r)
            print(f"{path} seed {seed}: final val acc {r['final_acc']:.4f} ({r['tta']} TTA), {r['epochs']} epochs, "
                  f"wall {r['wall_min']:.1f} min; on the clock: "
                  + ", ".join(f"{a:.4f} at {mnt:.1f} min" for mnt, a in r["on_clock"]), flush=True)
    print(f"\n| config | seed | epochs | TTA | wall time | final val acc (5k) | to 85% | to 88% | to 90% | "
          f"best within {args.minutes:g} min |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        t = r["time_to"]
        print(f"| {os.path.basename(r['config'])} | {r['seed']} | {r['epochs']} | {r['tta']} | {r['wall_min']:.1f} min | "
              f"{r['final_acc']:.4f} | {fmt_min(t['85%'])} | {fmt_min(t['88%'])} | {fmt_min(t['90%'])} | "
              f"{'-' if r['best_within_budget'] is None else format(r['best_within_budget'], '.4f')} |")
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "bench_cifar.json"), "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
