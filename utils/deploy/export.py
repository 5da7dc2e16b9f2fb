"""Export a trained run for deployment, and run the exported model with Paddle Inference.

One export directory (default ``<run>/inference/``) serves both this template's
``tools/infer.py`` and PaddleX 3 (``paddlex.create_model(model_name=..., model_dir=...)``):

* ``inference.json`` + ``inference.pdiparams``: the program saved by ``paddle.jit.save``
  (PIR JSON format in Paddle 3) with one input ``x`` of shape ``[None, 3, H, W]``, float32,
  already normalized, and one output: class probabilities (softmax included, as PaddleClas
  exports with ``Global.infer_add_softmax``; PaddleX's ``Topk`` ranks the program's output
  as is and reports it as the scores).
* ``inference.yml``: PaddleX 3's image-classification layout -- ``Global.model_name``,
  ``PreProcess.transform_ops`` (``ResizeImage``, ``CropImage``, ``NormalizeImage``,
  ``ToCHWImage``) and ``PostProcess.Topk`` (``topk``, ``label_list``) -- plus an ``Export``
  section of our own (source run, checkpoint, input shape, channels, the config's eval ops).
  :class:`Predictor` reads the preprocessing from this file, not from the training config,
  so the directory is self-contained.

Decisions, each forced by something measured or read in PaddleX 3.7.2:

* The preprocessing is the run's eval pipeline (``DataBundle.eval_transform``), op for op.
  PaddleX's classifier always runs a ``Resize`` op (``ClasRunnerPredictor.process`` indexes
  ``preprocessors["Resize"]`` unconditionally), so an eval pipeline without ``Resize`` gets
  a ``ResizeImage`` to the training images' own size: a no-op for images of that size
  (PIL and PaddleX both return the image untouched), a resize for other sizes.
* ``ResizeImage`` is written with ``backend: pil, interpolation: BILINEAR``: the template's
  ``Resize`` is PIL bilinear; PaddleX's default (OpenCV ``INTER_LINEAR``) does not
  antialias when shrinking and gives different pixels.
* 1-channel models (digits, grayscale folders): PaddleX decodes every image as 3-channel RGB
  and its ``NormalizeImage`` asserts ``channel_num == 3``. The exported program therefore
  takes 3 channels and converts them to luminance first (0.299 R + 0.587 G + 0.114 B,
  ITU-R 601-2, what PIL's ``convert('L')`` computes). For a grayscale image (R = G = B) this
  gives exactly the 1-channel eval input (see :func:`_inference_layer`). :class:`Predictor` decodes
  with PIL's ``convert('L')`` first, exactly as the eval loader does, so for colour images
  fed to a grayscale model it matches the loader too; PaddleX skips PIL's rounding to
  integer grey levels there (at most half a grey level, 0.5/255 in [0, 1] units).
* PaddleX runs ``Resize`` then ``Crop`` then ``Normalize`` whatever the order in the file,
  and keeps one op of each kind. Eval pipelines of that shape ([Resize] [CenterCrop]
  Normalize, the only ones the configs produce) are marked ``Export.paddlex_compatible:
  true``; others still export and run in order in :class:`Predictor`, with a warning.
"""
import contextlib
import datetime
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np

from utils.errors import UserError

FORMAT = "paddle-cls-template/1"
MODEL_FILES = ("inference.json", "inference.pdiparams")
CONFIG_FILE = "inference.yml"
DEFAULT_DIRNAME = "inference"
# PaddleX picks its predictor class from the model name and refuses a model_dir whose
# inference.yml names another model (model_resolver.resolve_model_name); any registered
# image-classification name selects the same ClasRunnerPredictor. PP-LCNet_x1_0 is the
# name PaddleX's own documentation uses for classification.
PADDLEX_MODEL_NAME = "PP-LCNet_x1_0"
GRAY_WEIGHTS = (0.299, 0.587, 0.114)   # ITU-R 601-2 luma, PIL's convert('L')
PARITY_IMAGES = 16                     # images the export checks itself on
PARITY_TOL = 1e-5


# --------------------------------------------------------------------------- the yml

def _wh(size):
    """(h, w) -> [w, h]: PaddleX sizes are width first."""
    return [int(size[1]), int(size[0])]


def _hw(value, where):
    """PaddleX size (int or [w, h]) -> (h, w)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return int(value[1]), int(value[0])
    raise UserError(f"{where}: size must be a positive int or [width, height], got {value!r}")


def preprocess_ops(bundle):
    """PaddleX ``transform_ops`` reproducing ``bundle.eval_transform``.

    Args:
        bundle: the run's :class:`~utils.data.DataBundle`.

    Returns:
        (ops, paddlex_compatible): the op list for ``PreProcess.transform_ops`` and whether
        PaddleX, which always runs Resize, Crop, Normalize in that order, runs it as written.

    Raises:
        UserError: the eval pipeline has a random op, which an exported model cannot repeat.
    """
    from utils.data.transforms import CenterCrop, Resize

    t = bundle.eval_transform
    ops = []
    for op in t.ops:
        if isinstance(op, Resize):
            ops.append({"ResizeImage": {"size": _wh(op.size), "backend": "pil", "interpolation": "BILINEAR"}})
        elif isinstance(op, CenterCrop):
            ops.append({"CropImage": {"size": _wh(op.size)}})
        else:
            raise UserError(f"Transforms.eval has {type(op).__name__}, a random op: the exported model would not "
                            f"give repeatable results; keep only Resize, CenterCrop and Normalize in Transforms.eval")
    if not any("ResizeImage" in o for o in ops):
        # Without a Resize in eval the data's images all share one size (build_datasets refuses
        # mixed sizes otherwise); resizing to it is a no-op for such images.
        img, _ = bundle.train.raw(0)
        ops.insert(0, {"ResizeImage": {"size": _wh(img.shape[:2]), "backend": "pil", "interpolation": "BILINEAR"}})
    kinds = [next(iter(o)) for o in ops]
    compatible = kinds in (["ResizeImage"], ["ResizeImage", "CropImage"])
    channels = 3
    mean = list(t.mean) if t.mean is not None else [0.0]
    std = list(t.std) if t.std is not None else [1.0]
    mean = [float(v) for v in np.broadcast_to(np.asarray(mean, np.float64), (channels,))]
    std = [float(v) for v in np.broadcast_to(np.asarray(std, np.float64), (channels,))]
    ops.append({"NormalizeImage": {"channel_num": 3, "mean": mean, "std": std, "scale": 1.0 / 255, "order": ""}})
    ops.append({"ToCHWImage": None})
    return ops, compatible


def inference_config(bundle, input_shape, model_name=PADDLEX_MODEL_NAME, softmax=True, meta=None):
    """The ``inference.yml`` content for a network trained on ``bundle``.

    Args:
        bundle: the run's :class:`~utils.data.DataBundle` (class names, eval pipeline).
        input_shape: the program's input ``[3, H, W]``.
        model_name: ``Global.model_name``; PaddleX needs the same name in ``create_model``.
        softmax: whether the program ends with a softmax (``Export.output``).
        meta: extra entries for the ``Export`` section (source run, checkpoint, ...).

    Returns:
        A dict ready for ``yaml.safe_dump``.
    """
    import paddle

    ops, compatible = preprocess_ops(bundle)
    export = {
        "format": FORMAT,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "paddle_version": paddle.__version__,
        "input": {"name": "x", "shape": [-1, *[int(v) for v in input_shape]], "dtype": "float32",
                  "color": "RGB"},
        "network_channels": int(bundle.in_channels),
        "output": "probabilities" if softmax else "logits",
        "paddlex_compatible": bool(compatible),
    }
    if bundle.in_channels == 1:
        export["gray_conversion"] = ("the program converts its RGB input to luminance "
                                     f"{GRAY_WEIGHTS[0]} R + {GRAY_WEIGHTS[1]} G + {GRAY_WEIGHTS[2]} B (PIL 'L')")
    export.update(meta or {})
    return {
        "Global": {"model_name": model_name},
        "PreProcess": {"transform_ops": ops},
        "PostProcess": {"Topk": {"topk": int(min(5, bundle.num_classes)),
                                 "label_list": [str(n) for n in bundle.class_names]}},
        "Export": export,
    }


# --------------------------------------------------------------------------- the program

def _inference_layer(network, channels, softmax):
    """``network`` behind a 3-channel input (luminance first when it takes 1) and a softmax."""
    import paddle

    class InferenceNet(paddle.nn.Layer):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            if channels == 1:
                # 0.299 R + 0.587 G + 0.114 B written as G + 0.299 (R - G) + 0.114 (B - G): the same
                # luminance, but exactly G for a grey image (R = G = B), so a grey input reaches the
                # network bit for bit as the eval loader's 1-channel tensor. The plain weighted sum
                # was off by up to 1.1e-5 in resnet20's logits (float32 0.299 + 0.587 + 0.114 != 1).
                r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
                x = g + (r - g) * GRAY_WEIGHTS[0] + (b - g) * GRAY_WEIGHTS[2]
            y = self.net(x)
            if softmax:
                y = paddle.nn.functional.softmax(y, axis=-1)
            return y

    layer = InferenceNet(network)
    layer.eval()
    return layer


@contextlib.contextmanager
def _drop_native_lines(fd, pattern):
    """Hide lines containing ``pattern`` that C++ code writes to file descriptor ``fd`` (1 or 2); keep the rest.

    Two known-harmless lines from Paddle 3.3.1's C++ side, which Python cannot silence:
    jit.save logs "Paddle static graph(PIR) not support input out tensor for now!!!!!" (glog,
    fd 2) for softmax and elementwise ops in the traced forward -- the saved program is
    correct, the parity check compares it; and with oneDNN on, the first run of a model with
    a mean over channels prints "ReduceMeanCheckIfOneDNNSupport" to stdout, once per op,
    into the middle of infer.py's table.
    """
    stream = sys.stdout if fd == 1 else sys.stderr
    try:
        stream.flush()
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # no real descriptor (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), fd)
        try:
            yield
        finally:
            try:
                stream.flush()
            finally:
                os.dup2(saved, fd)
                os.close(saved)
            buf.seek(0)
            kept = [ln for ln in buf.read().decode("utf-8", "replace").splitlines(True) if pattern not in ln]
            if kept:
                stream.write("".join(kept))


def _write_yaml(data, path):
    import yaml

    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True, default_flow_style=None)


def _is_export_dir(path):
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isfile(os.path.join(path, MODEL_FILES[1]))


def _install(tmp, out_dir):
    """Move the finished export ``tmp`` to ``out_dir``, replacing a previous export there.

    A directory is renamed in one step; replacing takes two renames (old aside, new in), so
    a crash between them leaves the previous export as ``<out_dir>.old-<pid>`` next to it.
    """
    if not os.path.exists(out_dir):
        os.rename(tmp, out_dir)
        return False
    aside = f"{out_dir}.old-{os.getpid()}"
    os.rename(out_dir, aside)
    os.rename(tmp, out_dir)
    shutil.rmtree(aside, ignore_errors=True)
    return True


def check_output_dir(out_dir):
    """Refuse an output path that is a file, or a non-empty directory that holds no export."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir} is a file: give a directory for the exported model")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not _is_export_dir(out_dir):
        raise UserError(f"--out {out_dir} is a non-empty directory without an exported model "
                        f"({CONFIG_FILE} + {MODEL_FILES[1]}): choose an empty or new directory")


def export_network(network, bundle, out_dir, model_name=PADDLEX_MODEL_NAME, softmax=True, meta=None):
    """Save ``network`` (trained on ``bundle``) as an inference model in ``out_dir``.

    Everything is written into a temporary directory beside ``out_dir`` and renamed into
    place at the end, so an interrupted export never leaves a half-written model; a previous
    export in ``out_dir`` is replaced.

    Args:
        network: the trained ``paddle.nn.Layer`` (switched to eval mode here).
        bundle: the :class:`~utils.data.DataBundle` it was trained on.
        out_dir: the export directory.
        model_name: ``Global.model_name`` for PaddleX.
        softmax: end the program with a softmax (probabilities, PaddleX's convention).
        meta: extra ``Export`` entries for ``inference.yml``.

    Returns:
        A dict: ``dir``, ``files``, ``config`` (the yml content), ``replaced``.
    """
    import paddle
    from paddle.static import InputSpec

    from utils.build import network_input_side

    check_output_dir(out_dir)
    side = network_input_side(bundle)
    shape = [3, side, side]
    config = inference_config(bundle, shape, model_name, softmax, meta)
    was_training = network.training
    network.eval()
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.tmp", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the export is meant to be shared
    try:
        layer = _inference_layer(network, bundle.in_channels, softmax)
        # Batch dimension None: any batch size at inference (PaddleX batches, infer.py too).
        spec = [InputSpec([None, *shape], "float32", "x")]
        with warnings.catch_warnings(), _drop_native_lines(2, "not support input out tensor"):
            warnings.simplefilter("ignore")
            paddle.jit.save(layer, os.path.join(tmp, "inference"), input_spec=spec)
        _write_yaml(config, os.path.join(tmp, CONFIG_FILE))
        missing = [f for f in MODEL_FILES if not os.path.isfile(os.path.join(tmp, f))]
        if missing:  # a Paddle that saves another program format: fail here, not at load time
            raise RuntimeError(f"paddle.jit.save wrote {sorted(os.listdir(tmp))}, expected {list(MODEL_FILES)}")
        replaced = _install(tmp, out_dir)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        if was_training:
            network.train()
    return {"dir": out_dir, "files": [*MODEL_FILES, CONFIG_FILE], "config": config, "replaced": replaced}


# --------------------------------------------------------------------------- from a run

def load_run_network(path, checkpoint="best_model", config=None, overrides=()):
    """Open a run and rebuild its trained network and data.

    Args:
        path: run directory, checkpoint prefix or checkpoint file.
        checkpoint: checkpoint name when ``path`` is a directory.
        config, overrides: as ``tools/eval.py`` (-c, -o).

    Returns:
        (run, bundle, network): :class:`utils.runs.Run`, the
        :class:`~utils.data.DataBundle` and the network with the checkpoint's weights, in eval mode.
    """
    from utils.runs import open_run

    run = open_run(path, checkpoint, config, overrides)
    return (run, *_rebuild(run))


def _rebuild(run):
    """(bundle, network with the checkpoint's weights) of an opened run."""
    from utils.build import build_network
    from utils.data import build_datasets
    from utils.errors import DataError
    from utils.training.checkpoint import load_weights

    cfg = run.cfg
    # Only the class names, the eval pipeline and one image size are needed: reading headers
    # (preload off) instead of decoding every folder image keeps export fast on large data.
    cfg["Data"]["preload"] = False
    try:
        bundle = build_datasets(cfg)
    except DataError as e:
        raise DataError(f"exporting needs the run's data for its class names and eval pipeline: {e} "
                        f"(if the data moved: -o Data.data_dir=PATH)") from None
    network = build_network(cfg, bundle)
    load_weights(network, run.checkpoint)
    network.eval()
    return bundle, network


def export_run(path, checkpoint="best_model", out_dir=None, config=None, overrides=(),
               model_name=PADDLEX_MODEL_NAME, softmax=True, check_images=PARITY_IMAGES, mkldnn=False):
    """Export a run's checkpoint to ``out_dir`` (default ``<run>/inference``) and check it.

    After writing, the exported model is loaded with Paddle Inference and run on
    ``check_images`` validation images (training images when there is no validation split),
    decoded and preprocessed from the export's own ``inference.yml``; its outputs are
    compared with the training-time network's on the eval loader's tensors.

    Returns:
        The :func:`export_network` dict plus ``run_dir``, ``checkpoint`` and ``parity``
        (:func:`parity_check`'s dict, None when ``check_images`` is 0).
    """
    from utils.runs import open_run

    run = open_run(path, checkpoint, config, overrides)
    if run.cfg["Global"].get("task") == "regression":
        raise UserError(f"{run.run_dir}: regression run (Global.task: regression): export writes an image classifier "
                        f"(PaddleX Topk post-processing); regression export is not supported yet, use tools/eval.py")
    out_dir = out_dir or os.path.join(run.run_dir, DEFAULT_DIRNAME)
    check_output_dir(out_dir)  # before the data is read: that can take a while
    bundle, network = _rebuild(run)
    meta = {"run_dir": os.path.abspath(run.run_dir), "checkpoint": os.path.abspath(run.checkpoint),
            "arch": run.cfg["Arch"]["name"], "data": run.cfg["Data"]["name"],
            "eval_transforms": run.cfg["Transforms"]["eval"]}
    info = export_network(network, bundle, out_dir, model_name, softmax, meta)
    info.update(run_dir=run.run_dir, checkpoint=run.checkpoint, parity=None)
    if check_images:
        dataset = bundle.val if bundle.val is not None else bundle.train
        n = min(check_images, len(dataset))
        images = [dataset.raw(i)[0] for i in range(n)]
        tensors = np.stack([dataset[i][0] for i in range(n)])
        info["parity"] = parity_check(network, Predictor(out_dir, mkldnn=mkldnn), images, tensors, softmax)
        info["parity"]["split"] = dataset.split
    return info


def parity_check(network, predictor, images, tensors, softmax=True):
    """Compare the exported model with the training-time network on the same images.

    Args:
        network: the dygraph network (eval mode).
        predictor: a :class:`Predictor` on the export.
        images: raw images (HWC uint8 or paths) given to the predictor, preprocessed by it.
        tensors: the eval loader's tensors of the same images, given to ``network``.
        softmax: compare probabilities (the export's output) rather than logits.

    Returns:
        dict: ``images``, ``max_abs_diff`` (outputs), ``input_max_abs_diff`` (the predictor's
        preprocessing vs the eval tensors, after the grey conversion for 1-channel models),
        ``top1_match`` (bool), ``tolerance``, ``ok``.
    """
    import paddle

    with paddle.no_grad():
        out = network(paddle.to_tensor(np.asarray(tensors, np.float32)))
        # Paddle's own softmax on the reference side: numpy's float64 one differs from the
        # program's float32 kernel by ~2e-7, which would hide an exact match.
        ref = (paddle.nn.functional.softmax(out, axis=-1) if softmax else out).numpy()
    x = np.stack([predictor.preprocess(im) for im in images])
    got = predictor.run(x)
    net_in = x
    if predictor.network_channels == 1:
        w = np.asarray(GRAY_WEIGHTS, np.float32)[None, :, None, None]
        net_in = x[:, 1:2] + (x[:, 0:1] - x[:, 1:2]) * w[:, 0:1] + (x[:, 2:3] - x[:, 1:2]) * w[:, 2:3]
    in_diff = float(np.abs(net_in - tensors).max())
    diff = float(np.abs(got - ref).max())
    top1 = bool((got.argmax(1) == ref.argmax(1)).all())
    return {"images": len(images), "max_abs_diff": diff, "input_max_abs_diff": in_diff, "top1_match": top1,
            "tolerance": PARITY_TOL, "ok": bool(diff <= PARITY_TOL and top1)}


def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------- inference

def resolve_model_dir(path):
    """An export directory, or a run directory holding ``inference/`` -> the export directory."""
    stem = path[: -len(".pdparams")] if path.endswith(".pdparams") else path
    if os.path.isfile(stem + ".pdparams"):
        raise UserError(f"{path} is a training checkpoint: export it first (python tools/export.py {stem}) "
                        f"and pass the export directory")
    if not os.path.exists(path):
        raise UserError(f"{path}: no such export or run directory (export a run first: python tools/export.py RUN)")
    if not os.path.isdir(path):
        raise UserError(f"{path} is a file: pass the export directory (holding {CONFIG_FILE}) or its run directory")
    if _is_export_dir(path):
        return path
    sub = os.path.join(path, DEFAULT_DIRNAME)
    if _is_export_dir(sub):
        return sub
    if os.path.isfile(os.path.join(path, "config.yml")):
        raise UserError(f"{path}: this run has no exported model ({sub}/{CONFIG_FILE} missing); "
                        f"export it first: python tools/export.py {path}")
    missing = [f for f in (CONFIG_FILE, *MODEL_FILES) if not os.path.isfile(os.path.join(path, f))]
    raise UserError(f"{path}: not an export directory ({', '.join(missing)} missing); "
                    f"pass the directory tools/export.py wrote (default <run>/{DEFAULT_DIRNAME})")


def _read_yaml(path):
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: unreadable ({reason}); export the run again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with PreProcess and PostProcess; export the run again")
    return data


def build_preprocess(config, where=CONFIG_FILE):
    """``PreProcess.transform_ops`` -> a :class:`~utils.data.transforms.Compose` (HWC uint8 RGB in, CHW float32 out).

    Maps PaddleX ops to the template's own eval ops, so the arithmetic is the eval loader's:
    ``ResizeImage`` (size, PIL bilinear) -> ``Resize``, ``CropImage`` -> ``CenterCrop``,
    ``NormalizeImage`` (scale 1/255) -> the final normalization.

    Raises:
        UserError: an op or setting this template cannot reproduce exactly.
    """
    from utils.data.transforms import CenterCrop, Compose, Resize

    try:
        op_list = config["PreProcess"]["transform_ops"]
    except (KeyError, TypeError):
        raise UserError(f"{where}: no PreProcess.transform_ops; export the run again") from None
    ops, mean, std = [], None, None
    for i, entry in enumerate(op_list or []):
        at = f"{where}: PreProcess.transform_ops[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise UserError(f"{at}: expected {{OpName: {{params}}}}, got {entry!r}")
        (name, params), = entry.items()
        params = params or {}
        if name == "ResizeImage":
            backend = str(params.get("backend", "cv2")).lower()
            interp = str(params.get("interpolation", "LINEAR")).upper()
            if "size" not in params or backend != "pil" or interp != "BILINEAR":
                raise UserError(f"{at}: ResizeImage {params} is not reproducible here: tools/infer.py runs "
                                f"size + backend pil + interpolation BILINEAR (what tools/export.py writes)")
            ops.append(Resize(_hw(params["size"], at)))
        elif name == "CropImage":
            ops.append(CenterCrop(_hw(params.get("size", 224), at)))
        elif name == "NormalizeImage":
            scale = float(params.get("scale", 1 / 255))
            if abs(scale * 255 - 1) > 1e-6 or params.get("order", "") not in ("", "hwc"):
                raise UserError(f"{at}: NormalizeImage with scale {scale} / order {params.get('order')!r} "
                                f"is not supported (expected scale 1/255)")
            mean = [float(v) for v in params.get("mean", [0.485, 0.456, 0.406])]
            std = [float(v) for v in params.get("std", [0.229, 0.224, 0.225])]
        elif name == "ToCHWImage":
            pass  # Compose always ends in CHW
        else:
            raise UserError(f"{at}: unsupported op {name}; tools/infer.py runs ResizeImage, CropImage, "
                            f"NormalizeImage, ToCHWImage")
    if mean is None:
        raise UserError(f"{where}: no NormalizeImage in PreProcess.transform_ops; export the run again")
    return Compose(ops, mean, std)


def _threads():
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "") or os.cpu_count() or 1))
    except ValueError:
        return 1


class Predictor:
    """An exported model under Paddle Inference, with the preprocessing of its ``inference.yml``.

    Args:
        model_dir: export directory (or a run directory holding ``inference/``).
        threads: CPU math threads (default: ``OMP_NUM_THREADS``, else every core).
        mkldnn: use oneDNN kernels on CPU. Off by default although Paddle Inference 3.3.1 turns
            it on by default: measured over the 9 registered models (64 random inputs, 1x8x8
            and 3x32x32, one thread), with it off all 18 programs were bit-identical to the
            dygraph network; on, logits differed by up to 1.9e-5-2.3e-5 (resnet20, logits up
            to ~67; two runs), beyond the 1e-5 parity target, and probabilities by up to
            3.9e-6. On buys speed: 3-10x on the conv nets (cnn 3x32x32, 64 images: 262-537 ms
            off vs 87-122 ms on, a shared 2-core machine).
        device: ``cpu`` or ``gpu`` (GPU needs a CUDA build of Paddle).

    Attributes:
        config: the ``inference.yml`` dict. class_names: ``PostProcess.Topk.label_list``.
        input_shape: ``(3, H, W)`` or None when the yml does not say.
        network_channels: 1 when the program converts RGB to grey first, else 3.
        output: ``probabilities`` or ``logits``.
    """

    def __init__(self, model_dir, threads=None, mkldnn=False, device="cpu"):
        import paddle.inference as pi

        self.model_dir = resolve_model_dir(model_dir)
        where = os.path.join(self.model_dir, CONFIG_FILE)
        self.config = _read_yaml(where)
        self.transform = build_preprocess(self.config, where)
        export = self.config.get("Export") or {}
        topk = (self.config.get("PostProcess") or {}).get("Topk") or {}
        self.class_names = [str(n) for n in (topk.get("label_list") or [])]
        self.default_topk = int(topk.get("topk") or 5)
        shape = (export.get("input") or {}).get("shape")
        self.input_shape = tuple(int(v) for v in shape[1:]) if shape else None
        self.network_channels = int(export.get("network_channels", 3))
        self.output = export.get("output", "probabilities")  # PaddleX models end with a softmax

        cfg = pi.Config(os.path.join(self.model_dir, MODEL_FILES[0]), os.path.join(self.model_dir, MODEL_FILES[1]))
        self._mkldnn = bool(mkldnn) and device != "gpu"
        if device == "gpu":
            import paddle

            if not paddle.device.is_compiled_with_cuda():
                raise UserError("--device gpu: this Paddle is a CPU build; install paddlepaddle-gpu "
                                "(see README, GPU) or use --device cpu")
            cfg.enable_use_gpu(256, 0)
        else:
            cfg.disable_gpu()
            cfg.set_cpu_math_library_num_threads(threads or _threads())
            if mkldnn:
                cfg.enable_mkldnn()
            else:
                cfg.disable_mkldnn()
        cfg.disable_glog_info()  # ~40 lines of pass logs per predictor otherwise
        try:
            self._predictor = pi.create_predictor(cfg)
        except Exception as e:  # Paddle raises several types for a corrupt or foreign program
            reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise UserError(f"{self.model_dir}: Paddle Inference cannot load the model ({reason}); "
                            f"export the run again with this Paddle version") from None
        self._input = self._predictor.get_input_handle(self._predictor.get_input_names()[0])
        self._output_name = self._predictor.get_output_names()[0]

    # -- preprocessing

    def load_image(self, item):
        """A path, PIL image or uint8 array -> HWC uint8 RGB array, decoded as the eval loader does.

        Arrays are RGB (H x W x 3) or grey (H x W or H x W x 1). For a 1-channel model the
        image goes through PIL's ``convert('L')`` first (what the loader does), then is
        repeated to the program's 3 channels.
        """
        from PIL import Image

        from utils.data import GRAY_MODES, decode_image

        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            if not os.path.isfile(path):
                raise UserError(f"image not found: {path}")
            img = decode_image(path, "L" if self.network_channels == 1 else None)  # DataError when unreadable
        elif isinstance(item, Image.Image):
            gray = self.network_channels == 1 or item.mode in GRAY_MODES
            img = np.asarray(item if item.mode == ("L" if gray else "RGB") else item.convert("L" if gray else "RGB"))
        elif isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (1, 3)):
                raise UserError(f"array input must be uint8 H x W (grey) or H x W x 1|3 (RGB), "
                                f"got {item.dtype} {item.shape}")
            img = item
            if self.network_channels == 1 and img.ndim == 3 and img.shape[2] == 3:
                img = np.asarray(Image.fromarray(img).convert("L"))
        else:
            raise UserError(f"cannot read {type(item).__name__} as an image: give a path, a PIL image or a uint8 array")
        if img.ndim == 2:
            img = img[:, :, None]
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        return img

    def preprocess(self, item, name=None):
        """One input -> the program's input ``float32 [3, H, W]``; a UserError when its size is wrong."""
        out = self.transform(self.load_image(item))
        if self.input_shape is not None and tuple(out.shape) != self.input_shape:
            label = name or (os.fspath(item) if isinstance(item, (str, os.PathLike)) else "input image")
            raise UserError(f"{label}: preprocessed to {'x'.join(map(str, out.shape))} but the model takes "
                            f"{'x'.join(map(str, self.input_shape))}: the PreProcess ops in {self.model_dir}/{CONFIG_FILE} "
                            f"do not end at the model's size; export the run again with tools/export.py")
        return out

    # -- running

    def run(self, batch):
        """Run the program on ``float32 [N, 3, H, W]``; returns its output ``[N, classes]``."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        self._input.reshape(list(x.shape))
        self._input.copy_from_cpu(x)
        if self._mkldnn:
            with _drop_native_lines(1, "ReduceMeanCheckIfOneDNNSupport"):
                self._predictor.run()
        else:
            self._predictor.run()
        return self._predictor.get_output_handle(self._output_name).copy_to_cpu()

    def probabilities(self, batch):
        """Class probabilities of a preprocessed batch (softmax applied when the program outputs logits)."""
        out = self.run(batch)
        return out if self.output == "probabilities" else _softmax(out)

    def predict(self, inputs, topk=None, batch_size=32):
        """Top-k classes of each input.

        Args:
            inputs: paths, PIL images or uint8 arrays (see :meth:`load_image`).
            topk: classes per input (default: the yml's ``Topk.topk``), capped at the class count.
            batch_size: images per program run.

        Returns:
            A list with one dict per input: ``input`` (the path, or its index), ``class_ids``,
            ``scores`` (probabilities, best first) and ``label_names``.
        """
        inputs = list(inputs)
        probs = []
        for s in range(0, len(inputs), batch_size):
            chunk = inputs[s:s + batch_size]
            probs.append(self.probabilities(np.stack([self.preprocess(item) for item in chunk])))
        probs = np.concatenate(probs) if probs else np.zeros((0, len(self.class_names)), np.float32)
        k = max(1, min(int(topk or self.default_topk), probs.shape[1] if probs.size else 1))
        results = []
        for i, (item, p) in enumerate(zip(inputs, probs)):
            order = np.argsort(-p, kind="stable")[:k]
            results.append({
                "input": os.fspath(item) if isinstance(item, (str, os.PathLike)) else i,
                "class_ids": [int(c) for c in order],
                "scores": [float(p[c]) for c in order],
                "label_names": [self.class_names[c] if c < len(self.class_names) else str(c) for c in order],
            })
        return results


def load_predictor(path, **kwargs):
    """A :class:`Predictor` on the export at ``path`` (an export dir or a run dir holding one)."""
    return Predictor(path, **kwargs)


# --------------------------------------------------------------------------- inputs

def collect_inputs(args):
    """Expand command-line inputs into ``[(image path, true label or None)]``.

    Each argument is an image file, a folder (searched recursively for .jpg/.jpeg/.png/.bmp)
    or a file list: a text file of ``path`` or PaddleClas ``path label`` lines, paths relative
    to the list's folder.

    Raises:
        UserError: a missing path, an empty folder or list, a list line naming no file.
    """
    from utils.data import IMAGE_EXTS, list_images

    out = []
    for arg in args:
        if os.path.isdir(arg):
            files = list_images(arg)
            if not files:
                raise UserError(f"{arg}: no {'/'.join(IMAGE_EXTS)} images in this folder (searched recursively)")
            out += [(f, None) for f in files]
        elif os.path.isfile(arg):
            if arg.lower().endswith(IMAGE_EXTS):
                out.append((arg, None))
            else:
                out += _read_file_list(arg)
        else:
            raise UserError(f"{arg}: no such image, folder or file list")
    return out


def _read_file_list(path):
    import re

    root = os.path.dirname(os.path.abspath(path))
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable file list ({type(e).__name__}); give images, a folder, "
                        f"or a text file of 'path [label]' lines") from None
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.rsplit(None, 1)
        label = None
        if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
            text, label = parts[0].strip(), int(parts[1])
        p = text if os.path.isabs(text) else os.path.join(root, text)
        if not os.path.isfile(p):
            raise UserError(f"{path}:{lineno}: image not found: {p} (paths are relative to the list's folder)")
        rows.append((p, label))
    if not rows:
        raise UserError(f"{path}: empty file list: expected 'path' or 'path label' lines")
    return rows


def format_table(results, labels=None, class_names=None):
    """Plain-text table of :meth:`Predictor.predict` results (with the true label when known)."""
    labels = labels or [None] * len(results)
    names = [str(r["input"]) for r in results]
    w = min(60, max([5, *map(len, names)]))
    known = any(lab is not None for lab in labels)
    head = f"{'image':<{w}}  " + (f"{'true':<8}  " if known else "") + "top-k (label probability)"
    lines = [head]
    for r, name, lab in zip(results, names, labels):
        shown = name if len(name) <= w else "..." + name[-(w - 3):]
        true = ""
        if known:
            t = "-" if lab is None else (class_names[lab] if class_names and 0 <= lab < len(class_names) else str(lab))
            true = f"{t:<8}  "
        preds = "  ".join(f"{n} {s:.4f}" for n, s in zip(r["label_names"], r["scores"]))
        lines.append(f"{shown:<{w}}  {true}{preds}")
    if known:
        pairs = [(r["class_ids"][0], lab) for r, lab in zip(results, labels) if lab is not None]
        acc = sum(p == t for p, t in pairs) / len(pairs)
        lines.append(f"top-1 accuracy on the {len(pairs)} labelled images: {acc:.4f}")
    return "\n".join(lines)
