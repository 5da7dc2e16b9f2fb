"""Train an image classifier: python tools/train.py -c configs/gmlp_digits.yml [-o Key.sub=value ...]

Resume an interrupted run in its own directory: ``python tools/train.py --resume output/gmlp_digits/<run>``.

Several processes (data parallel; ``utils/addons/distributed.py``), CPU or GPUs:
``python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c ...`` or
``python -m paddle.distributed.launch --gpus "0,1,2,3" tools/train.py -c ...``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.build import configure_threads  # noqa: E402
from utils.config import add_override_arg, load_config  # noqa: E402  (no paddle import: threads are set first)
from utils.errors import EXIT_NON_FINITE, UserError, handle_sigterm, run_tool  # noqa: E402

# Stops that mean the run went wrong (exit 3), not that it converged (early stopping, exit 0).
NON_FINITE_STOPS = ("nan_guard", "doctor")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", help="YAML config file, e.g. configs/gmlp_digits.yml")
    add_override_arg(p, "override a config key, e.g. -o Optimizer.lr=0.01 (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    args = p.parse_args(argv)
    if not args.config and not args.resume:
        p.error("give a config with -c, or a run directory with --resume")
    return args


@run_tool
def main(argv=None):
    args = parse_args(argv)
    if args.resume:
        path = os.path.join(args.resume, "config.yml")
        if not os.path.isfile(path):
            raise UserError(f"--resume {args.resume}: no config.yml there (is it a run directory under output/?)")
        cfg = load_config(args.config or path, args.override)
        cfg["Global"]["checkpoints"] = args.resume
    else:
        cfg = load_config(args.config, args.override)


    configure_threads(cfg["Global"]["num_threads"])
    from utils.trainer import train  # imports paddle: after the thread count is set

    handle_sigterm()  # after Paddle's imports: like Ctrl-C, metrics.json written and the resume command shown

    metrics = train(cfg)
    if metrics.get("stopped_by") in NON_FINITE_STOPS:
        sys.exit(EXIT_NON_FINITE)


if __name__ == "__main__":
    main()
