"""Export a trained run for deployment: the inference program, its ``inference.yml``, and a
check that the export computes what the training-time network computes.

One export directory (default ``<run>/inference/``) serves both this template's
``tools/infer.py`` and PaddleX 3 (``paddlex.create_model(model_name=..., model_dir=...)``):

* ``inference.json`` + ``inference.pdiparams``: the program saved by ``paddle.jit.save``
  (PIR JSON format in Paddle 3) with one input ``x`` of shape ``[None, 3, H, W]``, float32,
  already normalized, and one output: class probabilities (softmax included, as PaddleClas
  exports with ``Global.infer_add_softmax``; PaddleX's ``Topk`` ranks the program's output
  as is and reports it as the scores).
* ``inference.yml``: the preprocessing, class names and input size
  (:mod:`utils.deploy.inference_yml`, where the preprocessing decisions are written down).

1-channel models (digits, grayscale folders): PaddleX decodes every image as 3-channel RGB
and its ``NormalizeImage`` asserts ``channel_num == 3``. The exported program therefore takes
3 channels and converts them to luminance first (0.299 R + 0.587 G + 0.114 B, ITU-R 601-2,
what PIL's ``convert('L')`` computes). For a grayscale image (R = G = B) this gives exactly
the 1-channel eval input (see :func:`_inference_layer`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from typing import TYPE_CHECKING

import numpy as np

from utils.build import build_network, network_input_side
from utils.data import build_datasets
from utils.deploy.inference_yml import (
    CONFIG_FILE,
    DEFAULT_DIRNAME,
    GRAY_WEIGHTS,
    MODEL_FILES,
    PADDLEX_MODEL_NAME,
    inference_config,
    is_export_dir,
    write_yaml,
)
from utils.deploy.native_output import drop_native_lines
from utils.deploy.predictor import Predictor
from utils.errors import DataError, UserError
from utils.runs import Run, open_run

if TYPE_CHECKING:
    import paddle

    from utils.data import DataBundle

PARITY_IMAGES = 16                     # images the export checks itself on
PARITY_TOL = 1e-5


# --------------------------------------------------------------------------- the program

def _inference_layer(network: paddle.nn.Layer, channels: int, softmax: bool) -> paddle.nn.Layer:
    """``network`` behind a 3-channel input (luminance first when it takes 1) and a softmax."""
    import paddle  # deferred until the thread count is set

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


def _install(tmp: str, out_dir: str) -> bool:
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


def check_output_dir(out_dir: str) -> None:
    """Refuse an output path that is a file, or a non-empty directory that holds no export."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir} is a file: give a directory for the exported model")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not is_export_dir(out_dir):
        raise UserError(f"--out {out_dir} is a non-empty directory without an exported model "
                        f"({CONFIG_FILE} + {MODEL_FILES[1]}): choose an empty or new directory")


def export_network(network: paddle.nn.Layer, bundle: DataBundle, out_dir: str, model_name: str = PADDLEX_MODEL_NAME,
                   softmax: bool = True, meta: dict | None = None) -> dict:
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
    # paddle: deferred until the thread count is set
    import paddle
    from paddle.static import InputSpec

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
        with warnings.catch_warnings(), drop_native_lines(2, "not support input out tensor"):
            warnings.simplefilter("ignore")
            paddle.jit.save(layer, os.path.join(tmp, "inference"), input_spec=spec)
        write_yaml(config, os.path.join(tmp, CONFIG_FILE))
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

def load_run_network(path: str, checkpoint: str = "best_model", config: str | None = None,
                     overrides: tuple | list = ()) -> tuple[Run, DataBundle, paddle.nn.Layer]:
    """Open a run and rebuild its trained network and data.

    Args:
        path: run directory, checkpoint prefix or checkpoint file.
        checkpoint: checkpoint name when ``path`` is a directory.
        config, overrides: as ``tools/eval.py`` (-c, -o).

    Returns:
        (run, bundle, network): :class:`utils.runs.Run`, the
        :class:`~utils.data.DataBundle` and the network with the checkpoint's weights, in eval mode.
    """
    run = open_run(path, checkpoint, config, overrides)
    return (run, *_rebuild(run))


def _rebuild(run: Run) -> tuple[DataBundle, paddle.nn.Layer]:
    """(bundle, network with the checkpoint's weights) of an opened run."""
    # imports paddle: deferred until the thread count is set
    from utils.training.checkpoint import load_weights  # imports paddle: deferred until the thread count is set

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


def export_run(path: str, checkpoint: str = "best_model", out_dir: str | None = None, config: str | None = None,
               overrides: tuple | list = (), model_name: str = PADDLEX_MODEL_NAME, softmax: bool = True,
               check_images: int = PARITY_IMAGES, mkldnn: bool = False) -> dict:
    """Export a run's checkpoint to ``out_dir`` (default ``<run>/inference``) and check it.

    After writing, the exported model is loaded with Paddle Inference and run on
    ``check_images`` validation images (training images when there is no validation split),
    decoded and preprocessed from the export's own ``inference.yml``; its outputs are
    compared with the training-time network's on the eval loader's tensors.

    Returns:
        The :func:`export_network` dict plus ``run_dir``, ``checkpoint`` and ``parity``
        (:func:`parity_check`'s dict, None when ``check_images`` is 0).
    """
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


def parity_check(network: paddle.nn.Layer, predictor: Predictor, images: list, tensors: np.ndarray,
                 softmax: bool = True) -> dict:
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
    import paddle  # deferred until the thread count is set

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
