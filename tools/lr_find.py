"""LR range test: python tools/lr_find.py -c configs/mlp_digits.yml [-o Key.sub=value ...]

Trains the config's model on its training loader (with its augmentation), with its optimizer and
loss, while the LR grows exponentially from ``--start-lr`` to ``--end-lr``; stops once the smoothed
loss exceeds ``--diverge-factor`` times its best. The config's LR schedule and warmup are ignored
during the sweep. Prints three suggestions and the ``-o Optimizer.lr=...`` override for the
recommended one (min/10 by default), and writes ``lr_find.png``, ``lr_find.json`` and a VisualDL
log to ``--out`` (default ``lr_find/<config name>/<timestamp>/`` beside ``Global.output_dir``: not
inside it, where ``visualdl --logdir output`` would list the sweep as a training run).
"""
import argparse
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.build import configure_threads  # noqa: E402
from utils.config import add_override_arg, load_config  # noqa: E402  (no paddle import: threads are set first)
from utils.errors import run_tool  # noqa: E402
from utils.studies.lr_curve import DESCRIPTIONS, RECOMMENDED, SUGGESTIONS, check_sweep_args, format_lr  # noqa: E402
from utils.studies.lr_find import run_lr_find  # noqa: E402

WHY = {
    "min_div10": "on the digits benchmark (bench/bench_lr_find.py) it matched the best LR of a 5-point grid "
                 "within 0.3% for Adam, Momentum and AdamW",
    "valley": "fastai's default; it landed low on the digits benchmark (0.97 of the grid's best)",
    "steepest": "the LR where the loss falls fastest; sensitive to noise in the curve",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", required=True, help="YAML config file, e.g. configs/mlp_digits.yml")
    add_override_arg(p, "override a config key, e.g. -o Optimizer.name=SGD (repeatable)")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first LR of the sweep (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last LR of the sweep (default 10)")
    p.add_argument("--num-iters", type=int, default=100, help="iterations of the sweep (default 100, >= 10)")
    p.add_argument("--diverge-factor", type=float, default=4.0,
                   help="stop once the smoothed loss exceeds this times its best (default 4)")
    p.add_argument("--beta", type=float, default=0.98, help="exponential smoothing of the loss, as fastai (default 0.98)")
    p.add_argument("--suggest", choices=SUGGESTIONS, default=RECOMMENDED,
                   help=f"which suggestion the printed override applies (default {RECOMMENDED})")
    p.add_argument("--out", metavar="DIR", help="output directory (default lr_find/<config name>/<timestamp> beside Global.output_dir, "
                        "outside the runs VisualDL lists)")
    return p.parse_args(argv)


@run_tool
def main(argv=None):
    args = parse_args(argv)
    check_sweep_args(args.start_lr, args.end_lr, args.num_iters, args.diverge_factor, args.beta)
    cfg = load_config(args.config, args.override)


    configure_threads(cfg["Global"]["num_threads"])

    result, out_dir = run_lr_find(cfg, args.out, args.start_lr, args.end_lr, args.num_iters,
                                  args.diverge_factor, args.beta, args.suggest)
    lr = result.recommended_lr
    if lr is None:
        print("no suggestion: the curve is too short (see the warning above)")
        return
    keep = [o for o in args.override if not o.replace(" ", "").startswith("Optimizer.lr=")]
    cmd = ["python", "tools/train.py", "-c", args.config] + [a for o in keep for a in ("-o", o)] \
        + ["-o", f"Optimizer.lr={format_lr(lr)}"]
    print(f"recommended: {args.suggest} = {lr:.3g}, {DESCRIPTIONS[args.suggest]}; {WHY[args.suggest]}")
    print("  (the config's LR schedule then starts from this base LR: the peak after warmup, or onecycle's peak)")
    print(f"apply it: -o Optimizer.lr={format_lr(lr)}")
    print(f"  {' '.join(shlex.quote(c) for c in cmd)}")


if __name__ == "__main__":
    main()
