"""Draw a run as PNG files: curves, a training batch, weights, feature maps, attention, predictions, confusion.

    python tools/visualize.py curves RUN [RUN ...]          # loss / accuracy (regression: MAE) / LR, runs overlaid
    python tools/visualize.py batch -c CONFIG               # a training batch after augmentation
    python tools/visualize.py weights RUN                   # first-layer filters, weight histograms
    python tools/visualize.py features RUN IMAGE [--layers NAME ...]
    python tools/visualize.py attention RUN [IMAGE]         # *_sa models need IMAGE; gMLP does not
    python tools/visualize.py predictions RUN               # val images, top losses, confused pairs
    python tools/visualize.py confusion RUN [--normalize]
    python tools/visualize.py visualdl LOGDIR [--page image]  # screenshot of the VisualDL page (Chromium)

RUN is a run directory, a checkpoint prefix (RUN/best_model) or file (RUN/best_model.pdparams);
--checkpoint latest picks another checkpoint of a run directory, -c another config than
RUN/config.yml. Output: --out PATH, by default RUN/vis/<command>.png (curves: the first
run's vis/curves.png; batch without RUN: <Global.output_dir>/vis/batch_<config name>.png,
by default output/vis/).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.config import add_override_arg  # noqa: E402
from utils.errors import UserError, run_tool  # noqa: E402
from utils.runs import open_config, open_run, run_dir_of  # noqa: E402  (no paddle import: open_run sets the threads first)

COMMANDS = ("curves", "batch", "weights", "features", "attention", "predictions", "confusion", "visualdl")


def _run_args(p, image=None):
    p.add_argument("run", help="run directory, or a checkpoint prefix/file inside one")
    if image == "required":
        p.add_argument("image", help="image file (PNG/JPEG), pushed through the config's Transforms.eval")
    elif image == "optional":
        p.add_argument("image", nargs="?", help="image file (PNG/JPEG); required for spatial-attention models")
    p.add_argument("--checkpoint", default="best_model", help="checkpoint name in a run directory (best_model, latest, epoch_N)")
    p.add_argument("-c", "--config", help="config to use instead of the run's config.yml")
    add_override_arg(p)
    p.add_argument("--out", metavar="PATH", help="PNG to write (default: RUN/vis/<command>.png)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[1:]))
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")

    s = sub.add_parser("curves", help="train/val loss, accuracy and LR of one or more runs")
    s.add_argument("runs", nargs="+", metavar="RUN", help="run directories to overlay")
    s.add_argument("--out", metavar="PATH", help="PNG to write (default: FIRST_RUN/vis/curves.png)")

    s = sub.add_parser("batch", help="a training batch as the network receives it")
    s.add_argument("run", nargs="?", help="run directory whose config.yml to use (or give -c)")
    s.add_argument("-c", "--config", help="config file")
    add_override_arg(s)
    s.add_argument("--epoch", type=int, default=1, help="draw the first batch of this epoch (1-based, default 1)")
    s.add_argument("--out", metavar="PATH", help="PNG to write (default: RUN/vis/batch.png, or output/vis/batch_<config>.png)")

    _run_args(sub.add_parser("weights", help="first-layer filters and weight histograms"))
    s = sub.add_parser("features", help="feature maps of chosen layers for one image")
    _run_args(s, "required")
    s.add_argument("--layers", nargs="+", metavar="NAME", help="layer names as in network.named_sublayers() "
                   "(default: up to 4 evenly spaced blocks or convs)")
    _run_args(sub.add_parser("attention", help="spatial attention maps / gMLP token-mixing weights"), "optional")
    s = sub.add_parser("predictions", help="images with predictions, top losses, most confused pairs")
    _run_args(s)
    s.add_argument("--split", default="val", choices=("val", "test", "train"))
    s = sub.add_parser("confusion", help="confusion matrix heatmap")
    _run_args(s)
    s.add_argument("--split", default="val", choices=("val", "test", "train"))
    s.add_argument("--normalize", action="store_true", help="divide each row by its count (recall on the diagonal)")

    s = sub.add_parser("visualdl", help="screenshot of the VisualDL page for a log directory (headless Chromium)")
    s.add_argument("logdir", help="a run directory, or a folder of runs (e.g. output) to compare them")
    s.add_argument("--page", default="scalar", choices=("scalar", "image"), help="which VisualDL page")
    s.add_argument("--groups", nargs="+", default=["train", "eval"], metavar="GROUP",
                   help="scalar tag groups to open (default: train eval)")
    s.add_argument("--width", type=int, default=1400, help="viewport width in CSS pixels")
    s.add_argument("--out", metavar="PATH", help="PNG to write (default: LOGDIR/vis/visualdl_<page>.png)")
    return p.parse_args(argv)


# Commands about images or classes: a regression run (Global.task: regression) has neither.
CLASSIFICATION_ONLY = {"batch": "draws training images", "features": "draws feature maps of an image",
                       "attention": "draws attention over an image", "predictions": "draws class predictions",
                       "confusion": "draws a confusion matrix of classes"}


def _classification_only(cfg, cmd):
    if cmd in CLASSIFICATION_ONLY and cfg["Global"].get("task") == "regression":
        raise UserError(f"{cmd}: regression run (Global.task: regression, Data.name {cfg['Data']['name']}): {cmd} "
                        f"{CLASSIFICATION_ONLY[cmd]}; use curves (loss, MAE, RMSE) or tools/eval.py (MAE/RMSE)")


def _default_out(run_dir, command):
    return os.path.join(run_dir, "vis", f"{command}.png")


@run_tool
def main(argv=None):
    args = parse_args(argv)
    cmd = args.command
    if cmd == "curves":
        from utils.visual import plot_curves  # matplotlib (~0.4 s): deferred so --help and argument errors answer at once

        res = plot_curves(args.runs, args.out or _default_out(run_dir_of(args.runs[0]), "curves"))
    elif cmd == "visualdl":
        from utils.visual import screenshot  # matplotlib: deferred, as above

        out = args.out or os.path.join(args.logdir, "vis", f"visualdl_{args.page}.png")
        res = screenshot(args.logdir, out, args.page, args.groups, args.width)
    elif cmd == "batch":
        if not args.run and not args.config:
            raise UserError("batch: give a config with -c (e.g. -c configs/cnn_digits.yml) or a run directory")
        if args.run:
            run = open_run(args.run, config=args.config, overrides=args.override, need_checkpoint=False)
            cfg, out = run.cfg, args.out or _default_out(run.run_dir, "batch")
        else:
            cfg = open_config(args.config, args.override)
            # Under Global.output_dir (ignored by git), not the current directory.
            out = args.out or os.path.join(cfg["Global"]["output_dir"], "vis", f"batch_{cfg['_meta']['config_name']}.png")
        _classification_only(cfg, "batch")
        from utils.visual import plot_batch  # matplotlib: deferred, as above

        res = plot_batch(cfg, out, epoch=args.epoch)
    else:
        run = open_run(args.run, args.checkpoint, args.config, args.override)
        _classification_only(run.cfg, cmd)
        out = args.out or _default_out(run.run_dir, cmd)
        # matplotlib: deferred, as above
        from utils.visual import plot_attention, plot_confusion, plot_features, plot_predictions, plot_weights

        if cmd == "weights":
            res = plot_weights(run.cfg, run.checkpoint, out)
        elif cmd == "features":
            res = plot_features(run.cfg, run.checkpoint, args.image, out, args.layers)
        elif cmd == "attention":
            res = plot_attention(run.cfg, run.checkpoint, out, args.image)
        elif cmd == "predictions":
            res = plot_predictions(run.cfg, run.checkpoint, out, args.split)
        else:
            res = plot_confusion(run.cfg, run.checkpoint, out, args.split, args.normalize)
    for note in res.notes:
        print(f"note: {note}")
    print(f"wrote {res.path} ({res.size[0]}x{res.size[1]} px, {res.panels} panels)")


if __name__ == "__main__":
    main()
