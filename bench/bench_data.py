"""Loader throughput (images/s) with the CIFAR augmentation, batch 128: per-sample and batched.

    python bench/bench_data.py [--batches N] [--workers 0 2]

Cases: the real CIFAR-10 training JPEGs from ../shared/data/cifar10-train-jpg.tar.gz
(extracted to a temporary directory, read as a class-folder tree, preloaded and not), and a
synthetic CIFAR-10 python tarball. Each case runs the per-sample loaders (``paddle.io.DataLoader``
with ``num_workers`` from --workers) and the batched one (``DataLoader.batched: true``, same ops);
for the JPEG folder the batched build is timed twice: decoding + writing the .npy cache, then
reading it. Also the per-image cost of each transform op and of the batched pipeline.
Prints figures only; asserts nothing about time.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.build import configure_threads  # noqa: E402

configure_threads(0)  # the same threads as training, so the model speeds below are comparable

import numpy as np  # noqa: E402
from common import extract  # noqa: E402  (bench/ is on sys.path when run as a script)

from utils.config import validate  # noqa: E402
from utils.data import build_datasets, build_loaders  # noqa: E402
from utils.data.batched import BatchPipeline  # noqa: E402
from utils.data.synthetic import make_cifar_tarball  # noqa: E402
from utils.data.transforms import build_transforms  # noqa: E402

JPG_TAR = os.path.join(ROOT, "..", "shared", "data", "cifar10-train-jpg.tar.gz")
AUG = [{"RandomCrop": {"size": 32, "padding": 4}}, {"RandomHorizontalFlip": {}}, {"Normalize": {}}]


def config(data, workers, batched=False):
    return validate({"Data": data, "Transforms": {"train": AUG},
                     "DataLoader": {"batch_size": 128, "num_workers": workers, "shuffle": True, "batched": batched}})


def throughput(cfg, bundle, max_batches):
    """Images/s over up to max_batches training batches, worker start-up included."""
    np.random.seed(0)
    loader, _ = build_loaders(cfg, bundle)
    t0 = time.perf_counter()
    n = 0
    for i, (x, _) in enumerate(loader):
        n += x.shape[0]
        if i + 1 >= max_batches:
            break
    return n / (time.perf_counter() - t0), n


def run_case(label, data, workers, max_batches):
    t0 = time.perf_counter()
    cfg = config(data, 0)
    bundle = build_datasets(cfg)
    build_s = time.perf_counter() - t0
    print(f"{label}: built in {build_s:.1f} s ({bundle.summary()}; preloaded={bundle.train.preloaded})")
    for w in workers:
        ips, n = throughput(config(data, w), bundle, max_batches)
        print(f"  per-sample, num_workers={w}: {ips:8.0f} images/s  ({n} images)")


def run_batched(label, data, max_batches, builds=1):
    """The batched loader on the same data and ops; ``builds`` > 1 times the cached rebuilds too."""
    cfg = config(data, 0, batched=True)
    for i in range(builds):
        t0 = time.perf_counter()
        bundle = build_datasets(cfg)
        what = "decoded + cache written" if builds > 1 and i == 0 else "cache read" if builds > 1 else "built"
        print(f"{label}, batched: {what} in {time.perf_counter() - t0:.1f} s")
    ips, n = throughput(cfg, bundle, max_batches)
    print(f"  batched:                  {ips:8.0f} images/s  ({n} images, paddle tensors included)")


def bench_ops():
    img = np.random.RandomState(0).randint(0, 256, (32, 32, 3), dtype=np.uint8)
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    print("per-image transform cost on 32x32x3 (us):")
    for name, ops in [("RandomCrop(32, padding=4)", [AUG[0]]), ("RandomHorizontalFlip", [AUG[1]]),
                      ("Resize(40)", [{"Resize": {"size": 40}}]), ("CenterCrop(28)", [{"CenterCrop": {"size": 28}}]),
                      ("to float CHW only", []), ("Normalize", [AUG[2]]), ("CIFAR train pipeline", AUG)]:
        t = build_transforms(ops, mean, std)
        n = 5000
        us = timeit.timeit(lambda: t(img), number=n) / n * 1e6
        print(f"  {name:28s} {us:6.1f}  (includes the final float conversion)")
    batch = np.repeat(img[None], 128, axis=0)
    pipe = BatchPipeline(build_transforms(AUG, mean, std), (32, 32), 3)
    rs = np.random.RandomState(0)
    n = 200
    us = timeit.timeit(lambda: pipe(batch.copy(), rs, np.arange(128)), number=n) / (n * 128) * 1e6
    print(f"  {'batched CIFAR train pipeline':28s} {us:6.1f}  (per image, batch 128 as numpy, float conversion included)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=200, help="batches timed per case (200 x 128 = 25,600 images)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    bench_ops()
    tmp = tempfile.mkdtemp(prefix="bench_data_")
    try:
        if os.path.isfile(JPG_TAR):
            t0 = time.perf_counter()
            extract(JPG_TAR, tmp)
            print(f"extracted {JPG_TAR} in {time.perf_counter() - t0:.1f} s")
            for preload in (True, False):
                run_case(f"CIFAR-10 JPEG folder, preload={preload}",
                         {"name": "folder", "data_dir": tmp, "preload": preload}, args.workers, args.batches)
            run_batched("CIFAR-10 JPEG folder", {"name": "folder", "data_dir": tmp}, args.batches, builds=2)
        else:
            print(f"skipped the JPEG case: {os.path.normpath(JPG_TAR)} not found (needs ../shared/data next to the repo)")
        tar = make_cifar_tarball(os.path.join(tmp, "cifar-10-python.tar.gz"), n_train=20000, n_test=1000)
        run_case("synthetic CIFAR-10 tarball (20,000 train)", {"name": "cifar10", "data_dir": tar},
                 args.workers, args.batches)
        run_batched("synthetic CIFAR-10 tarball (20,000 train)", {"name": "cifar10", "data_dir": tar}, args.batches)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # What the loader must keep up with: the training speed of the shipped CIFAR models.
    from common import probe_speed
    print("model consumption (training images/s, batch 128, 32x32x3):")
    for name in ("gmlp_cifar10", "cnn_cifar10", "resnet20_cifar10", "googlenet_cifar10"):
        print(f"  {name:20s} {probe_speed(os.path.join(ROOT, 'configs', name + '.yml')):6.0f}")


if __name__ == "__main__":
    main()
