"""Diagnose a finished or crashed run: python tools/diagnose.py RUN_DIR [--lang zh] [--json PATH]

Re-runs the training doctor's rules on the run directory's ``metrics.json``, VisualDL log and
``diagnosis.json`` (any of them may be missing) and prints the findings with their evidence and
remedies.
"""
import argparse
import contextlib
import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.errors import run_tool  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="run directory, e.g. output/gmlp_digits/<timestamp>")
    p.add_argument("--lang", choices=("en", "zh"), default="en", help="language of the findings")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    return p.parse_args(argv)


@run_tool
def main(argv=None):
    args = parse_args(argv)
    with contextlib.redirect_stderr(io.StringIO()):  # Paddle's import-time ccache notice
        import paddle  # noqa: F401
    from utils.doctor import diagnose_run

    report = diagnose_run(args.run_dir, args.lang)
    print(report["text"])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({k: v for k, v in report.items() if k != "text"}, f, indent=2, ensure_ascii=False, default=float)


if __name__ == "__main__":
    main()
