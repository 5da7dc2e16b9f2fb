"""Evaluate a checkpoint: loss, top-1/top-5, per-class accuracy, confusion matrix.

``python tools/eval.py output/gmlp_digits/<run>`` evaluates the run's best checkpoint on its
validation split with the config it was trained with; ``--checkpoint latest``, ``--split test``.
``python tools/eval.py -c CONFIG -o Global.pretrained_model=WEIGHTS`` (PaddleClas's form) evaluates
those weights with that config; the report goes beside the weights unless ``--json`` says where.
``--tta flip`` (or ``flip_translate``) evaluates with test-time augmentation instead of the config's ``Eval.tta``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.config import add_override_arg  # noqa: E402
from utils.config.schema import TTA_MODES  # noqa: E402
from utils.errors import UserError, run_tool  # noqa: E402
from utils.runs import evaluate_run, format_report, open_run, open_weights  # noqa: E402  (no paddle import: open_run sets the threads first)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", help="run directory, or a checkpoint prefix/file inside one; without it, "
                   "-c CONFIG -o Global.pretrained_model=WEIGHTS evaluates those weights (PaddleClas style)")
    p.add_argument("--checkpoint", default="best_model", help="checkpoint name in the run directory (best_model, latest, epoch_N)")
    p.add_argument("--split", default="val", choices=("val", "test", "train"))
    p.add_argument("-c", "--config", help="config to use instead of the run's config.yml; without RUN, the config "
                   "to evaluate Global.pretrained_model with")
    add_override_arg(p)
    p.add_argument("--tta", choices=TTA_MODES, help="test-time augmentation: none, flip (mean logits of the image and "
                   "its mirror) or flip_translate (also 1-pixel shifts); default: the config's Eval.tta")
    p.add_argument("--json", metavar="PATH", help="where to write the report (default: RUN/eval_<split>.json)")
    return p.parse_args(argv)


@run_tool
def main(argv=None):
    args = parse_args(argv)
    if args.run is not None:
        run = open_run(args.run, args.checkpoint, args.config, args.override)
    elif args.config:
        run = open_weights(args.config, args.override)
    else:
        raise UserError("tools/eval.py: pass a run directory (tools/eval.py output/<config>/<timestamp>), or "
                        "-c CONFIG -o Global.pretrained_model=WEIGHTS")

    from utils.training.files import save_json  # imports paddle: after the thread count is set

    report = evaluate_run(run.cfg, run.checkpoint, args.split, args.tta)
    print(format_report(report))
    out = args.json or os.path.join(run.run_dir, f"eval_{args.split}.json")
    save_json(report, out)
    print(f"\nreport written to {out}")


if __name__ == "__main__":
    main()
