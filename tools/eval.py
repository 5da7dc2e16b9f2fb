"""Evaluate a checkpoint: loss, top-1/top-5, per-class accuracy, confusion matrix.

``python tools/eval.py output/gmlp_digits/<run>`` evaluates the run's best checkpoint on its
validation split with the config it was trained with; ``--checkpoint latest``, ``--split test``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.config import load_config  # noqa: E402
from utils.errors import UserError, run_tool  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="run directory, or a checkpoint prefix/file inside one")
    p.add_argument("--checkpoint", default="best_model", help="checkpoint name in the run directory (best_model, latest, epoch_N)")
    p.add_argument("--split", default="val", choices=("val", "test", "train"))
    p.add_argument("-c", "--config", help="config to use instead of the run's config.yml")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", metavar="PATH", help="where to write the report (default: RUN/eval_<split>.json)")
    return p.parse_args(argv)


@run_tool
def main(argv=None):
    args = parse_args(argv)
    if not os.path.exists(args.run) and not os.path.exists(args.run + ".pdparams"):
        raise UserError(f"{args.run}: no such run directory or checkpoint")
    run_dir = args.run if os.path.isdir(args.run) else os.path.dirname(args.run)
    cfg_path = args.config or os.path.join(run_dir, "config.yml")
    if not os.path.isfile(cfg_path):
        raise UserError(f"{run_dir}: no config.yml; pass the training config with -c")
    cfg = load_config(cfg_path, args.override)

    from utils.trainer import configure_threads

    configure_threads(cfg["Global"]["num_threads"])
    from utils.checkpoint import resolve_checkpoint, save_json
    from utils.evaluate import evaluate_run, format_report

    prefix = resolve_checkpoint(args.run, args.checkpoint)
    report = evaluate_run(cfg, prefix, args.split)
    print(format_report(report))
    out = args.json or os.path.join(run_dir, f"eval_{args.split}.json")
    save_json(report, out)
    print(f"\nreport written to {out}")


if __name__ == "__main__":
    main()
