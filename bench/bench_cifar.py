"""Real CIFAR-10 for a fixed time budget: validation accuracy and wall time of each shipped config.

Reads ``../shared/data/cifar10-train-jpg.tar.gz`` (the 50,000 training images as JPEG files in
class folders), extracts it once to a temporary directory, and trains each config on a
45,000 / 5,000 stratified split (``Data.val_split=0.1``, ``Data.split_seed=0``) through the
ordinary training path with ``Data.name=folder``.

The budget is spent as whole epochs so the LR schedule runs to its end: a short probe measures
each model's training speed, and the run gets ``max(1, round(budget * speed / 45000))`` epochs
with warmup cut to 10% of them. Early stopping is off. The wall time printed is the real
one, which may exceed the budget when one epoch takes longer.

    python bench/bench_cifar.py [--minutes 8] [--configs configs/cnn_cifar10.yml ...]
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.build import configure_threads  # noqa: E402

configure_threads(0)


from common import CIFAR_JPG as ARCHIVE  # noqa: E402
from common import extract, probe_speed  # noqa: E402  (bench/ is on sys.path when run as a script)

from utils.config import load_config  # noqa: E402
from utils.trainer import train  # noqa: E402

CONFIGS = ["gmlp_cifar10", "googlenet_cifar10", "cnn_cifar10", "cnn_sa_cifar10", "resnet20_cifar10",
           "resnet20_sa_cifar10"]
TRAIN_IMAGES = 45000


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=8.0, help="training budget per config")
    p.add_argument("--configs", nargs="*", default=[os.path.join("configs", c + ".yml") for c in CONFIGS])
    p.add_argument("--data", default=ARCHIVE)
    p.add_argument("--workdir", default=os.path.join("/tmp", "cifar10-jpg"))
    p.add_argument("--output", default=os.path.join("/tmp", "bench_cifar"))
    args = p.parse_args()
    if not os.path.exists(args.data):
        print(f"skipped: {os.path.normpath(args.data)} not found (the real CIFAR-10 JPEG archive lives in "
              f"../shared/data beside the repository)")
        return
    root = extract(args.data, args.workdir)
    rows = []
    for path in args.configs:
        name = os.path.splitext(os.path.basename(path))[0]
        speed = probe_speed(os.path.join(ROOT, path))
        epochs = max(1, round(args.minutes * 60 * speed / TRAIN_IMAGES))
        cfg = load_config(os.path.join(ROOT, path), [
            "Data.name=folder", f"Data.data_dir={root}", "Data.val_split=0.1", "Data.split_seed=0",
            f"Global.epochs={epochs}", f"Global.output_dir={args.output}", "EarlyStopping.enable=false",
            f"LRScheduler.warmup_epochs={0.1 * epochs:.2f}", "Global.log_every_iters=50", "Global.verbose=0"])
        print(f"{name}: probe {speed:.0f} img/s -> {epochs} epoch(s)", flush=True)
        m = train(cfg, print_fn=lambda *a: None)
        final = m["final"] or {}
        rows.append({"config": name, "epochs": epochs, "val_acc": final.get("acc"), "val_loss": final.get("loss"),
                     "best_val_acc": (m["best"] or {}).get("acc"), "wall_min": m["wall_time_s"] / 60,
                     "train_img_s": m["global_step"] * cfg["DataLoader"]["batch_size"] / max(m["fit_time_s"] - m["eval_time_s"], 1e-9)})
        r = rows[-1]
        print(f"{name}: {epochs} epoch(s), val acc {r['val_acc']:.4f}, wall {r['wall_min']:.1f} min, "
              f"{r['train_img_s']:.0f} img/s in training", flush=True)
    print("\n| config | epochs | val acc (5k) | wall time | train img/s |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['config']} | {r['epochs']} | {r['val_acc']:.4f} | {r['wall_min']:.1f} min | {r['train_img_s']:.0f} |")
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "bench_cifar.json"), "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
