"""Export a trained run for deployment: python tools/export.py output/gmlp_digits/<run>

Writes ``<run>/inference/`` (or ``--out DIR``): ``inference.json`` + ``inference.pdiparams``
(``paddle.jit.save``, input ``x`` [None, 3, H, W]) and ``inference.yml`` (PaddleX 3 layout:
preprocessing, class names, input size). ``tools/infer.py`` and
``paddlex.create_model(model_name=..., model_dir=...)`` both run it. The export checks itself:
its outputs on validation images are compared with the training-time network's.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.config import add_override_arg  # noqa: E402
from utils.deploy import PADDLEX_MODEL_NAME, PARITY_IMAGES, export_run  # noqa: E402
from utils.errors import run_tool  # noqa: E402  (no paddle import: open_run sets the threads first)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="run directory, or a checkpoint prefix/file inside one")
    p.add_argument("--checkpoint", default="best_model", help="checkpoint name in the run directory (best_model, latest, epoch_N)")
    p.add_argument("--out", metavar="DIR", help="export directory (default: RUN/inference); a previous export there is replaced")
    p.add_argument("-c", "--config", help="config to use instead of the run's config.yml")
    add_override_arg(p, "override a config key, e.g. -o Data.data_dir=PATH when the data moved (repeatable)")
    p.add_argument("--model-name", default=PADDLEX_MODEL_NAME,
                   help="Global.model_name in inference.yml: the name to pass to paddlex.create_model "
                        f"(a PaddleX image-classification model name; default {PADDLEX_MODEL_NAME})")
    p.add_argument("--logits", action="store_true", help="export logits instead of softmax probabilities "
                   "(PaddleX would then report logits as scores)")
    p.add_argument("--check", type=int, default=PARITY_IMAGES, metavar="N",
                   help=f"compare the export with the training-time network on N validation images (default {PARITY_IMAGES}; 0 = skip)")
    return p.parse_args(argv)


@run_tool
def main(argv=None):
    args = parse_args(argv)

    info = export_run(args.run, args.checkpoint, args.out, args.config, args.override,
                      model_name=args.model_name, softmax=not args.logits, check_images=args.check)
    cfg = info["config"]
    ex = cfg["Export"]
    shape = "x".join(str(v) for v in ex["input"]["shape"][1:])
    print(f"exported {info['checkpoint']} -> {info['dir']}" + ("  (replaced the previous export)" if info["replaced"] else ""))
    print(f"  files: {', '.join(info['files'])}")
    print(f"  input x: N x {shape} float32 RGB, normalized as inference.yml says"
          + ("; converted to grey inside the program" if ex["network_channels"] == 1 else ""))
    print(f"  output: {ex['output']} over {len(cfg['PostProcess']['Topk']['label_list'])} classes")
    ops = ", ".join(next(iter(o)) for o in cfg["PreProcess"]["transform_ops"])
    print(f"  preprocessing: {ops}")
    par = info["parity"]
    if par is not None:
        status = "ok" if par["ok"] else "MISMATCH"
        print(f"  parity ({status}): {par['images']} {par['split']} images, max |exported - training-time| "
              f"{par['max_abs_diff']:.2e} (tolerance {par['tolerance']:.0e}), top-1 "
              f"{'identical' if par['top1_match'] else 'DIFFERENT'}")
        if not par["ok"]:
            print("  warning: the exported model disagrees with the training-time network; please report this",
                  file=sys.stderr)
    if not ex["paddlex_compatible"]:
        print("  warning: PaddleX runs Resize, then CenterCrop, then Normalize; this eval pipeline has another "
              "order, so PaddleX would preprocess differently (tools/infer.py runs it as written)", file=sys.stderr)
    print(f"\npredict: python tools/infer.py {info['dir']} IMAGES_OR_FOLDER")
    print(f"PaddleX: paddlex.create_model(model_name={cfg['Global']['model_name']!r}, model_dir={info['dir']!r})")


if __name__ == "__main__":
    main()
