"""Classify images with an exported model: python tools/infer.py RUN_OR_EXPORT_DIR IMAGES...

Inputs are image files, folders (searched recursively for .jpg/.jpeg/.png/.bmp) or file lists
(``path`` or PaddleClas ``path label`` lines, relative to the list's folder). The model runs
under Paddle Inference with the preprocessing written in the export's ``inference.yml`` (the
run's eval pipeline), and prints the top-k labels with their probabilities; with labelled
file lists also the top-1 accuracy.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.build import configure_threads  # noqa: E402
from utils.deploy import Predictor, collect_inputs, format_table  # noqa: E402
from utils.errors import UserError, run_tool  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="export directory (from tools/export.py), or a run directory holding inference/")
    p.add_argument("inputs", nargs="+", help="image files, folders or file lists")
    p.add_argument("--topk", type=int, default=None, help="classes shown per image (default: inference.yml's Topk.topk)")
    p.add_argument("--json", metavar="OUT", help="also write the predictions as JSON to OUT")
    p.add_argument("--batch-size", type=int, default=32, help="images per program run (default 32)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: OMP_NUM_THREADS, else every core)")
    p.add_argument("--mkldnn", action="store_true", help="use oneDNN CPU kernels: 4-7x faster on conv nets, "
                   "but logits differ from the training-time network by up to ~2e-5 (off: identical)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    return p.parse_args(argv)


@run_tool
def main(argv=None):
    args = parse_args(argv)
    if args.topk is not None and args.topk < 1:
        raise UserError(f"--topk must be >= 1, got {args.topk}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")

    threads = configure_threads(args.threads)  # before paddle is imported

    items = collect_inputs(args.inputs)
    predictor = Predictor(args.model, threads=args.threads or threads, mkldnn=args.mkldnn, device=args.device)
    results = predictor.predict([p for p, _ in items], topk=args.topk, batch_size=args.batch_size)
    labels = [lab for _, lab in items]
    print(format_table(results, labels, predictor.class_names))
    if args.json:
        from utils.training.files import save_json  # imports paddle: after the thread count is set

        for r, lab in zip(results, labels):
            if lab is not None:
                r["true_label"] = lab
        save_json({"model_dir": predictor.model_dir, "predictions": results}, args.json)
        print(f"\npredictions written to {args.json}")


if __name__ == "__main__":
    main()
