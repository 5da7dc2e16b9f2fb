"""Init study: activation statistics through depth at initialisation.

``python tools/init_study.py`` runs the classic experiment of CS231n (lecture 6): a 10-layer,
500-unit tanh/ReLU net on 1000 x 500 Gaussian input with normal(0.01), normal(1.0), Xavier and
Kaiming weights; prints the per-layer std/mean table, writes it as CSV/JSON and a PNG grid of
histograms (one row per init and activation, one panel per layer).

``python tools/init_study.py -c CFG [--init xavier|kaiming|normal|default] [--layers N]`` runs one
batch of the config's training data through its model and prints per-layer activation
mean/std, saturation (tanh/sigmoid) and dead ReLUs, with the histogram PNG.
Files go to ``--out`` (default ``output/init_study/``).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.build import configure_threads, select_device  # noqa: E402
from utils.config import add_override_arg, load_config  # noqa: E402  (no paddle import: threads are set first)
from utils.errors import UserError, did_you_mean, run_tool  # noqa: E402
from utils.studies import init_study as st  # noqa: E402

INITS = ("default", "xavier", "kaiming", "normal")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", help="YAML config: study its model on its data (without: the classic experiment)")
    add_override_arg(p, "override a config key, e.g. -o Arch.depth=8 (repeatable)")
    p.add_argument("--init", help="weight init: default (the model's own), xavier, kaiming or normal; without -c, "
                                  "the classic schemes to run (default: all four)")
    p.add_argument("--init-std", type=float, help="std of --init normal (classic default: both 0.01 and 1.0; "
                                                  "with -c: Arch.init_std)")
    p.add_argument("--layers", type=int, help="classic: depth (default 10); with -c: show at most N hooked "
                                              "layers, evenly spaced from first to last (default all)")
    p.add_argument("--units", type=int, default=500, help="classic: units per layer (default 500)")
    p.add_argument("--samples", type=int, default=1000, help="classic: input rows (default 1000)")
    p.add_argument("--batch-size", type=int, help="with -c: images in the batch (default DataLoader.batch_size)")
    p.add_argument("--seed", type=int, help="seed (classic default 0; with -c: Global.seed)")
    p.add_argument("--out", default=os.path.join("output", "init_study"),
                   help="output folder (default output/init_study)")
    return p.parse_args(argv)


def check_args(args):
    if args.init is not None and args.init not in INITS:
        raise UserError(f"--init {args.init}: unknown init{did_you_mean(args.init, INITS)}; choose one of "
                        f"{', '.join(INITS)}")
    for name in ("layers", "units", "samples", "batch_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.init_std is not None and not args.init_std > 0:
        raise UserError(f"--init-std must be > 0, got {args.init_std}")


def classic_inits(init, init_std):
    if init in (None, "default"):
        return ("normal_0.01", "normal_1.0", "xavier", "kaiming") if init_std is None else \
            (f"normal_{init_std:g}", "xavier", "kaiming")
    if init == "normal":
        return ("normal_0.01", "normal_1.0") if init_std is None else (f"normal_{init_std:g}",)
    return (init,)


def run_classic(args):
    runs = st.classic_experiment(classic_inits(args.init, args.init_std), num_layers=args.layers or 10,
                                 units=args.units, samples=args.samples, seed=0 if args.seed is None else args.seed)
    print(st.format_classic(runs))
    prefix = os.path.join(args.out, "classic")
    paths = st.save_table(st.classic_table(runs), prefix)
    n = st.plot_histograms(st.classic_panels(runs), prefix + ".png",
                           title=f"act(X @ W), {args.samples} x {args.units} N(0,1) input, zero bias: "
                                 f"one row per init + activation, one panel per layer")
    print(f"\nwrote {paths[0]}, {paths[1]}, {prefix}.png ({n} panels)")


def run_model(args, cfg):
    select_device(cfg["Global"]["device"])
    res = st.model_study(cfg, init=args.init, init_std=args.init_std, batch_size=args.batch_size,
                         max_layers=args.layers or 0, seed=args.seed)
    rows = res["rows"]
    name = cfg["_meta"]["config_name"]
    init = res["init"] + (f"({res['init_std']:g})" if res["init"] == "normal" else "")
    print(f"{name}: model {cfg['Arch']['name']}, init {init}, batch {'x'.join(map(str, res['batch_shape']))} "
          f"(train images, eval transform); BatchNorm on batch statistics, dropout off")
    print(st.format_model_rows(rows))
    notes = st.findings(rows)
    print("\n".join(["", "findings:"] + [f"  - {n}" for n in notes]) if notes else "\nfindings: none (no vanishing, "
          "exploding, saturated or dead layer)")
    prefix = os.path.join(args.out, f"{name}_{res['init']}")
    paths = st.save_table(rows, prefix)
    n = st.plot_histograms(st.model_panels(rows), prefix + ".png", ncols=8,
                           title=f"{name} ({cfg['Arch']['name']}, init {init}): activations per layer")
    print(f"\nwrote {paths[0]}, {paths[1]}, {prefix}.png ({n} panels)")


@run_tool
def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    cfg = load_config(args.config, args.override) if args.config else None
    if cfg is None and args.override:
        raise UserError("-o overrides need a config (-c)")


    configure_threads(cfg["Global"]["num_threads"] if cfg else 0)
    if cfg is None:
        run_classic(args)
    else:
        run_model(args, cfg)


if __name__ == "__main__":
    main()
