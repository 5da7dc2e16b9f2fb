"""LR range test vs a small LR grid: validation accuracy after a short fixed budget.

For each config: run ``tools/lr_find.py``'s sweep (``utils.studies.lr_find.run_lr_find``, defaults 1e-7 -> 10,
100 iterations), then train for the same fixed budget (``--epochs`` whole epochs, the config's own
schedule and optimizer, early stopping off, one validation at the end) at

* each suggestion (``min_div10`` = the recommended default, ``valley``, ``steepest``), and
* a grid of ``--grid-points`` (5) log-spaced LRs, half a decade apart, centred on the config's own
  (hand-tuned) LR: ``lr * 10 ** [-1, -0.5, 0, 0.5, 1]``.

It prints each final validation accuracy and, per suggestion, the ratio to the grid's best
(goal >= 0.97). Every training run uses the config's seed, so only the LR differs.
Warmup, where the config has one, is cut to 10% of the budget (as in bench_cifar.py).

    python bench/bench_lr_find.py                        # digits: mlp, cnn, gmlp configs, 3 epochs each
    python bench/bench_lr_find.py --cifar                # also real CIFAR-10 (slow on CPU; opt-in)
    python bench/bench_lr_find.py --configs configs/mlp_digits.yml --epochs 5 --seeds 0 1

The CIFAR part reads ``../shared/data/cifar10-train-jpg.tar.gz``, extracts it once to ``/tmp`` and
trains with ``Data.name=folder`` on ``--cifar-fraction`` of the 45,000 training images (stratified,
validation = 5,000 images); it is skipped with a message when the archive is absent.
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

import numpy as np  # noqa: E402
from common import CIFAR_JPG as ARCHIVE  # noqa: E402
from common import extract  # noqa: E402  (bench/ is on sys.path when run as a script)

from utils.config import load_config  # noqa: E402
from utils.studies.lr_find import SUGGESTIONS, run_lr_find  # noqa: E402
from utils.trainer import train  # noqa: E402

DIGITS = ["configs/mlp_digits.yml", "configs/cnn_digits.yml", "configs/gmlp_digits.yml"]
CIFAR = ["configs/cnn_cifar10.yml"]
GOAL = 0.97


def quiet(*a, **k):
    pass


def budget_overrides(cfg_path, data_overrides, epochs, seed, out, run_name):
    base = load_config(os.path.join(ROOT, cfg_path), data_overrides)
    over = list(data_overrides) + [
        f"Global.epochs={epochs}", f"Global.seed={seed}", f"Global.output_dir={out}", f"Global.run_name={run_name}",
        "Global.verbose=0", "Global.print_flops=false", "Global.eval_every_epochs=0", "EarlyStopping.enable=false",
        "VisualDL.enable=false", "Checkpoint.save_best=false", "Checkpoint.save_last=false"]
    if base["LRScheduler"]["warmup_epochs"] > 0:
        over.append(f"LRScheduler.warmup_epochs={round(0.1 * epochs, 2)}")
    return over


def final_acc(cfg_path, over, lr):
    cfg = load_config(os.path.join(ROOT, cfg_path), over + [f"Optimizer.lr={lr!r}"])
    m = train(cfg, print_fn=quiet)
    return float((m["final"] or {}).get("acc", float("nan")))


def compare(cfg_path, data_overrides, epochs, seeds, grid_points, num_iters, out):
    name = os.path.splitext(os.path.basename(cfg_path))[0]
    cfg = load_config(os.path.join(ROOT, cfg_path), data_overrides + [f"Global.output_dir={out}"])
    t = time.time()
    result, _ = run_lr_find(cfg, os.path.join(out, "lr_find", name), num_iters=num_iters, print_fn=quiet)
    sweep_s = time.time() - t
    base_lr = cfg["Optimizer"]["lr"]
    half = (grid_points - 1) / 2
    grid = [float(base_lr * 10 ** (0.5 * (k - half))) for k in range(grid_points)]
    print(f"\n{name} ({cfg['Optimizer']['name']}, config lr {base_lr:g}): sweep {result.iterations} iterations "
          f"in {sweep_s:.1f}s, {result.stop_reason}; suggestions "
          + ", ".join(f"{k} {v:.3g}" for k, v in result.suggestions.items()), flush=True)
    accs = {}
    for lr in list(result.suggestions.values()) + grid:
        if lr in accs:
            continue
        runs = []
        for seed in seeds:
            over = budget_overrides(cfg_path, data_overrides, epochs, seed, os.path.join(out, "runs"),
                                    f"{name}-lr{lr:.3e}-s{seed}")
            runs.append(final_acc(cfg_path, over, lr))
        accs[lr] = float(np.mean(runs))
    grid_best_lr = max(grid, key=lambda lr: accs[lr])
    grid_best = accs[grid_best_lr]
    print(f"  grid ({epochs} epochs, mean over seeds {seeds}): "
          + ", ".join(f"{lr:.3g}: {accs[lr]:.4f}" for lr in grid) + f"  -> best {grid_best:.4f} at {grid_best_lr:.3g}")
    row = {"config": name, "optimizer": cfg["Optimizer"]["name"], "config_lr": base_lr, "epochs": epochs,
           "seeds": list(seeds), "sweep_iterations": result.iterations, "sweep_seconds": round(sweep_s, 1),
           "stop_reason": result.stop_reason, "grid": {f"{lr:.4g}": accs[lr] for lr in grid},
           "grid_best_lr": grid_best_lr, "grid_best_acc": grid_best, "suggestions": {}}
    for k in SUGGESTIONS:
        if k not in result.suggestions:
            continue
        lr = result.suggestions[k]
        ratio = accs[lr] / grid_best if grid_best > 0 else float("nan")
        row["suggestions"][k] = {"lr": lr, "acc": accs[lr], "ratio": ratio}
        flag = "ok" if ratio >= GOAL else "BELOW GOAL"
        star = " (recommended)" if k == result.recommended else ""
        print(f"  {k:<10}{star:<14} lr {lr:.3g}: acc {accs[lr]:.4f}, {ratio:.3f} of the grid's best  [{flag}]", flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="*", default=DIGITS, help="digits configs (default: mlp, cnn, gmlp)")
    p.add_argument("--epochs", type=int, default=3, help="training budget per run on digits (epochs)")
    p.add_argument("--seeds", type=int, nargs="*", default=[42], help="training seeds; accuracies are averaged")
    p.add_argument("--grid-points", type=int, default=5)
    p.add_argument("--num-iters", type=int, default=100, help="sweep iterations")
    p.add_argument("--output", default=os.path.join("/tmp", "bench_lr_find"))
    p.add_argument("--cifar", action="store_true", help="also run real CIFAR-10 (slow on a CPU)")
    p.add_argument("--cifar-configs", nargs="*", default=CIFAR)
    p.add_argument("--cifar-epochs", type=int, default=2)
    p.add_argument("--cifar-fraction", type=float, default=0.2, help="fraction of the 45,000 training images")
    p.add_argument("--data", default=ARCHIVE)
    p.add_argument("--workdir", default=os.path.join("/tmp", "cifar10-jpg"))
    args = p.parse_args()
    out = os.path.join(args.output, time.strftime("%Y%m%d-%H%M%S"))
    rows = []
    for path in args.configs:
        rows.append(compare(path, [], args.epochs, args.seeds, args.grid_points, args.num_iters, out))
    if args.cifar:
        if not os.path.exists(args.data):
            print(f"\nCIFAR-10 skipped: {os.path.normpath(args.data)} not found (the real CIFAR-10 JPEG archive "
                  f"lives in ../shared/data beside the repository)")
        else:
            root = extract(args.data, args.workdir)
            data = ["Data.name=folder", f"Data.data_dir={root}", "Data.val_split=0.1", "Data.split_seed=0",
                    f"Data.fraction={args.cifar_fraction}"]
            for path in args.cifar_configs:
                rows.append(compare(path, data, args.cifar_epochs, args.seeds, args.grid_points, args.num_iters, out))
    else:
        print("\nCIFAR-10 not run (opt-in: --cifar; slow on a CPU)")

    print("\n| config | optimizer | budget | grid best (lr) | " + " | ".join(SUGGESTIONS) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in SUGGESTIONS) + " |")
    for r in rows:
        cells = []
        for k in SUGGESTIONS:
            s = r["suggestions"].get(k)
            cells.append(f"{s['acc']:.4f} at {s['lr']:.2g} ({s['ratio']:.3f})" if s else "-")
        print(f"| {r['config']} | {r['optimizer']} | {r['epochs']} ep | {r['grid_best_acc']:.4f} ({r['grid_best_lr']:.2g}) | "
              + " | ".join(cells) + " |")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench_lr_find.json"), "w") as f:
        json.dump(rows, f, indent=2)
    print(f"\n(ratio = accuracy / grid's best; goal >= {GOAL}); results in {out}/bench_lr_find.json")


if __name__ == "__main__":
    main()
