"""Pipeline overhead: seconds per training step of the full ``tools/train.py`` path vs a bare loop.

Both train the same model, built by the same builders, on the same DataLoader, with the same
optimizer and schedule. The bare loop is what one would write by hand: forward, loss,
backward, step, clear_grad, LR step, and ``float(loss)`` once per step (any logging needs it).
The template path adds hapi's ``train_batch``, our callbacks (progress, NaN guard, LR stepper,
checkpoints, console and VisualDL logging every step) and checkpoint writes.
Validation time is excluded from both (the trainer reports it separately).

Runs are interleaved (bare, template, bare, template, ...) and the ratio of medians is
printed: target <= 1.05.

    python bench/bench_overhead.py [--model cnn] [--epochs 2] [--repeats 3]
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

import paddle  # noqa: E402

from utils.build import build_network
from utils.config import load_config  # noqa: E402
from utils.data import build_datasets, build_loaders  # noqa: E402
from utils.data.synthetic import make_cifar_tarball  # noqa: E402
from utils.trainer import train  # noqa: E402
from utils.training.losses import build_loss  # noqa: E402
from utils.training.optim import build_lr_scheduler, build_optimizer  # noqa: E402


def make_cfg(tarball, out, model, epochs, run_name):
    return load_config(os.path.join(ROOT, "configs", "cnn_cifar10.yml"), [
        f"Data.data_dir={tarball}", f"Arch.name={model}", f"Global.epochs={epochs}", f"Global.output_dir={out}",
        f"Global.run_name={run_name}", "Global.verbose=0", "Global.eval_every_epochs=0", "DataLoader.num_workers=0",
        "EarlyStopping.enable=false", "Data.val_split=0.05"])


def bare_loop(cfg):
    """Seconds per step of a hand-written Paddle loop on the template's own data and model."""
    paddle.seed(0)
    bundle = build_datasets(cfg)
    loader, _ = build_loaders(cfg, bundle)
    net = build_network(cfg, bundle)
    sched = build_lr_scheduler(cfg, len(loader), cfg["Global"]["epochs"])
    opt = build_optimizer(cfg, net.parameters(), sched)
    loss_fn = build_loss(cfg, bundle.num_classes)
    net.train()
    steps, t0 = 0, time.time()
    for _ in range(cfg["Global"]["epochs"]):
        for x, y in loader:
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            opt.clear_grad()
            sched.step()
            float(loss)
            steps += 1
    return (time.time() - t0) / steps


def template(cfg):
    """Seconds per step inside ``Model.fit`` of the full training path (eval excluded)."""
    m = train(cfg, print_fn=lambda *a: None)
    return (m["fit_time_s"] - m["eval_time_s"]) / m["global_step"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--images", type=int, default=3000, help="synthetic CIFAR-format training images")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tarball = make_cifar_tarball(os.path.join(tmp, "cifar.tar.gz"), n_train=args.images, n_test=100)
        bare, tmpl = [], []
        for r in range(args.repeats):
            bare.append(bare_loop(make_cfg(tarball, tmp, args.model, args.epochs, f"bare{r}")))
            tmpl.append(template(make_cfg(tarball, tmp, args.model, args.epochs, f"tmpl{r}")))
            print(f"repeat {r + 1}: bare {bare[-1] * 1e3:.1f} ms/step, template {tmpl[-1] * 1e3:.1f} ms/step")
    b, t = statistics.median(bare), statistics.median(tmpl)
    print(f"model {args.model}, batch 128, {os.environ.get('OMP_NUM_THREADS')} threads: "
          f"bare loop {b * 1e3:.1f} ms/step, template {t * 1e3:.1f} ms/step, ratio {t / b:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
