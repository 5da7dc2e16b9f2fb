"""Optuna (TPE + pruning) vs an exhaustive grid over the same space: best accuracy and compute.

On digits with ``configs/mlp_digits.yml`` and the search space ``configs/spaces/lr_wd_digits.yml``
(LR, weight decay, Adam/AdamW, dropout), every trial trains ``--epochs`` epochs with the config's
seed, so a parameter set always gives the same accuracy and the methods differ only in which
sets they try and how long they train them:

* grid: every point of the space's ``grid`` lists (6 x 3 x 2 x 3 = 108), no pruning;
* tpe-median, tpe-hyperband: Optuna's TPE over the continuous ranges, ``--trials`` trials, with
  the median or Hyperband pruner (``tools/tune.py`` defaults otherwise), one study per ``--seeds`` seed;
* random-median: random search, same budget and pruner, as a control for what TPE adds;
* tpe-none (on request): TPE without pruning, to separate what pruning saves.

Figures: the best validation accuracy (best over each run, as the tuner optimizes), the
training steps spent (compute), the steps until the first trial within 1 point of the grid's
best, and how many grid points are within 1 point (how hard that target is).
Goal: best within 1 point of the grid's best at <= 40% of its training steps.

    python bench/bench_tune.py             # 3.2 min on 2 shared cores (OMP_NUM_THREADS=1), 8 epochs per trial
    python bench/bench_tune.py --quick     # 4 epochs, TPE + median, one seed, 20 trials: ~1 min
    python bench/bench_tune.py --methods tpe-median tpe-none   # what pruning saves
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.build import configure_threads  # noqa: E402

configure_threads(0)

from utils.tune import prepare, run_study  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "mlp_digits.yml")
SPACE = os.path.join(ROOT, "configs", "spaces", "lr_wd_digits.yml")
METHODS = {"tpe-median": ("tpe", "median"), "tpe-hyperband": ("tpe", "hyperband"),
           "random-median": ("random", "median"), "tpe-none": ("tpe", "none")}
DEFAULT_METHODS = ["tpe-median", "tpe-hyperband", "random-median"]
GOAL_POINTS, GOAL_COMPUTE = 1.0, 0.40


def quiet(*a, **k):
    pass


def overrides(out, epochs):
    # Checkpoints, VisualDL and the doctor do not change what a trial learns, only its time:
    # off, so the benchmark's wall time is training (the tuner itself keeps them on).
    return [f"Global.output_dir={out}", f"Global.epochs={epochs}", "Global.verbose=0", "Global.print_flops=false",
            "Doctor.enable=false", "VisualDL.enable=false", "Checkpoint.save_best=false",
            "Checkpoint.save_last=false", "EarlyStopping.restore_best=false"]


def study_figures(study, target):
    """Best value, total steps, and the steps spent until the first trial at or above ``target``."""
    best, steps, to_target = None, 0, None
    for t in sorted(study.trials, key=lambda t: t.number):
        steps += int(t.user_attrs.get("steps", 0))
        if t.state.name == "COMPLETE":
            best = t.value if best is None else max(best, t.value)
            if to_target is None and t.value >= target:
                to_target = steps
    return best, steps, to_target


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8, help="epochs per trial (default 8)")
    p.add_argument("--trials", type=int, default=30, help="trials per Optuna study (default 30)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds (default 0 1 2)")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=DEFAULT_METHODS,
                   help=f"default {' '.join(DEFAULT_METHODS)}; tpe-none (no pruning) shows what pruning saves")
    p.add_argument("--quick", action="store_true", help="4 epochs, tpe-median, seed 0, 20 trials")
    p.add_argument("--out", help="work directory (default: a temporary one, removed at the end)")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.trials, args.seeds, args.methods = 4, 20, [0], ["tpe-median"]
    out = args.out or tempfile.mkdtemp(prefix="bench_tune_")
    over = overrides(out, args.epochs)
    t0 = time.time()
    print(f"{os.path.relpath(CONFIG, ROOT)}, {args.epochs} epochs per trial, space {os.path.relpath(SPACE, ROOT)}")

    t = time.time()
    grid_setup = prepare(CONFIG, SPACE, over, study_name="grid", sampler="grid", pruner="none")
    grid = run_study(grid_setup, None, print_fn=quiet, train_print_fn=quiet)["study"]
    grid_best, grid_steps, _ = study_figures(grid, float("inf"))
    target = grid_best - GOAL_POINTS / 100
    best_trial = max((t for t in grid.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    near = sum(1 for t in grid.trials if t.state.name == "COMPLETE" and t.value >= target)
    print(f"grid: {len(grid.trials)} points, best acc {grid_best:.4f} at "
          + " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best_trial.params.items())
          + f"; {grid_steps} steps; {near} of {len(grid.trials)} points within {GOAL_POINTS:g} point of the best; "
          f"{time.time() - t:.0f}s")

    print(f"\n{'method':<15} {'seed':>4} {'trials':>6} {'pruned':>6} {'best acc':>8} {'gap (pt)':>8} "
          f"{'steps':>7} {'of grid':>7} {'steps to -1pt':>13} {'time':>6}")
    summary = {}
    for method in args.methods:
        sampler, pruner = METHODS[method]
        for seed in args.seeds:
            t = time.time()
            setup = prepare(CONFIG, SPACE, over, study_name=f"{method}_{seed}", sampler=sampler, pruner=pruner)
            study = run_study(setup, args.trials, seed=seed, print_fn=quiet, train_print_fn=quiet)["study"]
            best, steps, to_target = study_figures(study, target)
            pruned = sum(1 for t in study.trials if t.state.name == "PRUNED")
            gap = (grid_best - best) * 100
            frac = steps / grid_steps
            ok = gap <= GOAL_POINTS and frac <= GOAL_COMPUTE
            summary.setdefault(method, []).append((gap, frac, ok))
            reach = f"{to_target} ({to_target / grid_steps:.0%})" if to_target is not None else "never"
            print(f"{method:<15} {seed:>4} {len(study.trials):>6} {pruned:>6} {best:>8.4f} {gap:>+8.2f} "
                  f"{steps:>7} {frac:>7.0%} {reach:>13} {time.time() - t:>5.0f}s{'' if ok else '  (goal missed)'}")

    print(f"\ngoal: within {GOAL_POINTS:g} point of the grid's best at <= {GOAL_COMPUTE:.0%} of its {grid_steps} steps")
    for method, rows in summary.items():
        print(f"  {method}: met in {sum(r[2] for r in rows)}/{len(rows)} seeds; median gap "
              f"{statistics.median(r[0] for r in rows):+.2f} pt at {statistics.median(r[1] for r in rows):.0%} "
              f"of the grid's steps")
    print(f"total {time.time() - t0:.0f}s")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
