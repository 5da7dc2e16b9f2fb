"""Print the per-channel mean/std of a config's training split and the YAML to paste.

    python tools/compute_mean_std.py -c configs/CONFIG.yml [-o Data.classes=[0,1] ...]

The training split is the one training uses: after the val carve, Data.classes and
Data.fraction. Values are in [0,1] units, as Transforms.mean/std and Normalize expect.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.config import add_override_arg, load_config  # noqa: E402  (no paddle import)
from utils.data import build_datasets, compute_mean_std  # noqa: E402  (paddle only once datasets are built)
from utils.errors import run_tool  # noqa: E402


@run_tool
def main(argv=None):
    ap = argparse.ArgumentParser(description="Per-channel mean/std of the training split of a config.")
    ap.add_argument("-c", "--config", required=True, help="YAML config file")
    add_override_arg(ap, "override a config key, e.g. -o Data.name=cifar10 (repeatable)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.override)
    # Placeholders (valid for any channel count) so building the datasets computes nothing.
    cfg["Transforms"]["mean"], cfg["Transforms"]["std"] = [0.5], [0.5]
    bundle = build_datasets(cfg)
    mean, std = compute_mean_std(bundle.train)
    mean = [round(m, 4) for m in mean]
    std = [round(s, 4) for s in std]
    print(f"{bundle.name}: {len(bundle.train)} training images, {bundle.in_channels} channel(s)")
    print(f"mean: {mean}")
    print(f"std:  {std}")
    print("YAML:")
    print("Transforms:")
    print(f"  mean: {mean}")
    print(f"  std: {std}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
