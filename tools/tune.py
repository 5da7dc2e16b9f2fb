"""Hyperparameter search with Optuna: python tools/tune.py -c CFG --space SPACE.yml --trials N

The search space is a YAML file of dotted config keys (see configs/spaces/). Each trial is an
ordinary run in ``<output_dir>/<config>/tune_<study>/trial_<n>/``; the study is kept in
``study.db`` there (or ``--storage URL``), so running the same command again continues it.
Results: ``trials.csv``, ``trials.md`` and ``best_config.yml`` in the study directory.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.build import configure_threads  # noqa: E402
from utils.config import add_override_arg, load_config  # noqa: E402  (no paddle import: threads are set first)
from utils.errors import run_tool  # noqa: E402

SAMPLERS = ("tpe", "random", "grid", "qmc")  # utils.tune.SAMPLERS; that module imports paddle
PRUNERS = ("median", "hyperband", "none")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", required=True, help="YAML config file, e.g. configs/mlp_digits.yml")
    p.add_argument("--space", required=True, help="search-space YAML, e.g. configs/spaces/lr_wd_digits.yml")
    p.add_argument("--trials", type=int, default=None,
                   help="trials to run now (default 20; grid: every unfinished point); 0 = only rewrite the results")
    add_override_arg(p, "override a config key for every trial, e.g. -o Global.epochs=10 (repeatable)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="tpe (default), random, grid or qmc")
    p.add_argument("--pruner", choices=PRUNERS, default="median",
                   help="median (default), hyperband or none; pruning compares the k-th validation of each trial")
    p.add_argument("--study", help="study name (default: the space file's name); also the directory tune_<name>")
    p.add_argument("--storage", metavar="URL",
                   help="database URL (default sqlite:///<study dir>/study.db); postgresql://user:pw@host/db "
                        "lets several processes or machines share the study")
    p.add_argument("--seed", type=int, default=None,
                   help="sampler seed (default Global.seed; with --storage, none unless given: workers must differ)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="start no new trial after this many seconds")
    p.add_argument("--startup-trials", type=int, default=None, metavar="N",
                   help="random trials before TPE models the results, and finished trials before the median "
                        "pruner prunes (Optuna's defaults: 10 and 5)")
    p.add_argument("--verbose", action="store_true",
                   help="print every trial's training log (default: one line per trial; a failed trial's last lines)")
    args = p.parse_args(argv)
    if args.trials is not None and args.trials < 0:
        p.error("--trials must be >= 0")
    if args.startup_trials is not None and args.startup_trials < 0:
        p.error("--startup-trials must be >= 0")
    return args


@run_tool
def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.override)  # config errors first, before paddle and the database
    configure_threads(cfg["Global"]["num_threads"])
    from utils.tune import prepare, run_study  # imports paddle: after the thread count is set

    setup = prepare(args.config, args.space, args.override, args.study, args.storage, args.sampler, args.pruner)
    run_study(setup, args.trials, seed=args.seed, timeout=args.timeout, startup_trials=args.startup_trials,
              verbose=args.verbose)


if __name__ == "__main__":
    main()
