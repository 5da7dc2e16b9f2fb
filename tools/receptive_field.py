"""Receptive field per layer of a config's model: python tools/receptive_field.py -c configs/cnn_cifar10.yml

Prints kernel, stride, padding, dilation, output size, jump (cumulative stride), receptive field
and the centre of output unit 0's window for every conv/pool layer in forward order, merge points
of branches (upper bound), where the field becomes global, and a one-line verdict: does the
final receptive field cover the input? ``--image-size N`` analyses another input side.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.build import configure_threads  # noqa: E402
from utils.config import add_override_arg, load_config  # noqa: E402  (no paddle import: threads are set first)
from utils.errors import UserError, run_tool  # noqa: E402
from utils.studies.receptive_field import config_receptive_field, format_table  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", required=True, help="YAML config file, e.g. configs/cnn_cifar10.yml")
    add_override_arg(p, "override a config key, e.g. -o Arch.width=0.5 (repeatable)")
    p.add_argument("--image-size", type=int, help="input side to analyse (default: the config's images)")
    p.add_argument("--json", metavar="FILE", help="also write the rows and the verdict to FILE")
    return p.parse_args(argv)


@run_tool
def main(argv=None):
    args = parse_args(argv)
    if args.image_size is not None and args.image_size < 1:
        raise UserError(f"--image-size must be >= 1, got {args.image_size}")
    cfg = load_config(args.config, args.override)


    configure_threads(cfg["Global"]["num_threads"])

    res = config_receptive_field(cfg, args.image_size)
    side = res["input_size"][0]
    print(f"{cfg['_meta']['config_name']}: model {res['model']}, input {res['in_channels']}x{side}x{side}"
          + (f" {res['note']}" if res["note"] else ""))
    print(format_table(res))
    print(res["verdict"])
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        body = {k: v for k, v in res.items() if k in ("model", "input_size", "rows", "final", "covers",
                                                       "approximate", "verdict", "note")}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=1)


if __name__ == "__main__":
    main()
