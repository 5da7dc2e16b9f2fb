"""Helpers shared by the benchmark scripts."""
import os
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_JPG = os.path.join(ROOT, "..", "shared", "data", "cifar10-train-jpg.tar.gz")


def extract(archive, dest):
    """Extract ``archive`` into ``dest`` once (a marker file records a complete extraction)."""
    marker = os.path.join(dest, ".complete")
    if not os.path.exists(marker):
        os.makedirs(dest, exist_ok=True)
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
        open(marker, "w").close()
    return dest
