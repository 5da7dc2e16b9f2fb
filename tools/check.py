"""Pre-flight checks of a config's data, model and training: python tools/check.py -c CFG

    python tools/check.py -c configs/cnn_digits.yml [-o Key.sub=value ...] [--only NAME ...] [--json PATH]

Prints one line per check, ``PASS|WARN|FAIL|SKIP  name  evidence``, with a remedy under
every line that did not pass. ``--only`` takes check names or the groups ``data``, ``model``
and ``training`` (repeatable or comma-separated). ``--json`` also writes the results.

Exit status: 0 when no check FAILed (warnings allowed), 1 when at least one FAILed, 2 for a
mistake in the config, the data or the command line (one line on stderr, as every tool).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.build import configure_threads
from utils.config import add_override_arg, load_config  # noqa: E402  (no paddle import: threads are set first)
from utils.errors import UserError, run_tool  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", required=True, help="YAML config file, e.g. configs/cnn_digits.yml")
    add_override_arg(p, "override a config key, e.g. -o Transforms.train=[] (repeatable)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only these checks or groups (data, model, training); repeatable or comma-separated")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return p.parse_args(argv)


@run_tool
def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.override)
    if cfg["Global"]["task"] == "regression":
        raise UserError("check: the preflight checks are written for classification (labels, classes, ln(C) at "
                        "init); Global.task regression is not supported by them yet: train directly, the doctor watches the run")

    from utils import checks  # imports paddle only when the checks run

    names = checks.select_checks(args.only)  # unknown names: exit 2 before any work

    configure_threads(cfg["Global"]["num_threads"])
    t0 = time.time()
    results = checks.run_checks(cfg, names, on_result=lambda r: print(checks.format_result(r), flush=True))
    seconds = time.time() - t0
    print(checks.summarize(results, seconds))
    status = checks.exit_status(results)
    if args.json:
        report = {"config": args.config, "overrides": args.override, "exit_status": status,
                  "seconds": round(seconds, 2), "results": [r.to_dict() for r in results]}
        tmp = args.json + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2, default=str)
            os.replace(tmp, args.json)
        except OSError as e:
            raise UserError(f"--json {args.json}: cannot write ({e.strerror})") from None
    return status


if __name__ == "__main__":
    sys.exit(main())
