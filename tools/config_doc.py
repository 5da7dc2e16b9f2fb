"""The reference of every config key, as Markdown: python tools/config_doc.py [--write | -o FILE | --check]

Prints to stdout by default. --write regenerates configs/README.md, -o FILE writes another file,
--check exits 1 when configs/README.md differs from what this prints.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.build import configure_threads  # noqa: E402
from utils.config import schema_markdown  # noqa: E402
from utils.errors import UserError, run_tool  # noqa: E402

README = os.path.join(ROOT, "configs", "README.md")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help=f"write {os.path.relpath(README, ROOT)}")
    g.add_argument("-o", "--out", metavar="FILE", help="write FILE instead of printing")
    g.add_argument("--check", action="store_true",
                   help=f"exit 1 if {os.path.relpath(README, ROOT)} is not up to date (writes nothing)")
    return p.parse_args(argv)


def _write(path, text):
    """Whole or nothing: a temporary file renamed over the target."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}; choose another path with -o FILE") from None


@run_tool
def main(argv=None):
    args = parse_args(argv)
    # schema_markdown lists the models, which imports paddle: configure_threads imports it with
    # its import-time notices (ccache, OMP_NUM_THREADS) swallowed.
    configure_threads(1)
    text = schema_markdown().strip() + "\n"
    if args.check:
        try:
            with open(README, encoding="utf-8") as f:
                current = f.read()
        except OSError:
            current = None
        if current != text:
            print(f"{README} is out of date: run python tools/config_doc.py --write", file=sys.stderr)
            sys.exit(1)
        print(f"{README} is up to date")
    elif args.write or args.out:
        path = README if args.write else args.out
        _write(path, text)
        print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
