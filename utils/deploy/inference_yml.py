"""The export directory's files and its ``inference.yml``: written by :mod:`utils.deploy.export`,
read back by :mod:`utils.deploy.predictor`.

``inference.yml`` follows PaddleX 3's image-classification layout -- ``Global.model_name``,
``PreProcess.transform_ops`` (``ResizeImage``, ``CropImage``, ``NormalizeImage``,
``ToCHWImage``) and ``PostProcess.Topk`` (``topk``, ``label_list``) -- plus an ``Export``
section of our own (source run, checkpoint, input shape, channels, the config's eval ops).
The predictor reads the preprocessing from this file, not from the training config, so the
directory is self-contained.

Decisions, each forced by something measured or read in PaddleX 3.7.2:

* The preprocessing is the run's eval pipeline (``DataBundle.eval_transform``), op for op.
  PaddleX's classifier always runs a ``Resize`` op (``ClasRunnerPredictor.process`` indexes
  ``preprocessors["Resize"]`` unconditionally), so an eval pipeline without ``Resize`` gets
  a ``ResizeImage`` to the training images' own size: a no-op for images of that size
  (PIL and PaddleX both return the image untouched), a resize for other sizes.
* ``ResizeImage`` is written with ``backend: pil, interpolation: BILINEAR``: the template's
  ``Resize`` is PIL bilinear; PaddleX's default (OpenCV ``INTER_LINEAR``) does not
  antialias when shrinking and gives different pixels.
* PaddleX runs ``Resize`` then ``Crop`` then ``Normalize`` whatever the order in the file,
  and keeps one op of each kind. Eval pipelines of that shape ([Resize] [CenterCrop]
  Normalize, the only ones the configs produce) are marked ``Export.paddlex_compatible:
  true``; others still export and run in order in the predictor, with a warning.
"""
from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING

import numpy as np
import yaml

from utils.errors import UserError

if TYPE_CHECKING:
    from utils.data import DataBundle
    from utils.data.transforms import Compose

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


def _wh(size: tuple[int, int]) -> list[int]:
    """(h, w) -> [w, h]: PaddleX sizes are width first."""
    return [int(size[1]), int(size[0])]


def _hw(value: int | list[int], where: str) -> tuple[int, int]:
    """PaddleX size (int or [w, h]) -> (h, w)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, value
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        return int(value[1]), int(value[0])
    raise UserError(f"{where}: size must be a positive int or [width, height], got {value!r}")


def preprocess_ops(bundle: DataBundle) -> tuple[list[dict], bool]:
    """PaddleX ``transform_ops`` reproducing ``bundle.eval_transform``.

    Args:
        bundle: the run's :class:`~utils.data.DataBundle`.

    Returns:
        (ops, paddlex_compatible): the op list for ``PreProcess.transform_ops`` and whether
        PaddleX, which always runs Resize, Crop, Normalize in that order, runs it as written.

    Raises:
        UserError: the eval pipeline has a random op, which an exported model cannot repeat.
    """
    from utils.data.transforms import CenterCrop, Resize  # imports paddle: deferred until the thread count is set

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


def inference_config(bundle: DataBundle, input_shape: list[int], model_name: str = PADDLEX_MODEL_NAME, softmax: bool = True,
                     meta: dict | None = None) -> dict:
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
    import paddle  # deferred until the thread count is set

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


def write_yaml(data: dict, path: str) -> None:
    """Write ``data`` as YAML in the layout ``inference.yml`` uses (keys in order, short lists inline)."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True, default_flow_style=None)


def is_export_dir(path: str) -> bool:
    """Whether ``path`` holds an export: its ``inference.yml`` and ``inference.pdiparams``."""
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isfile(os.path.join(path, MODEL_FILES[1]))


def read_yaml(path: str) -> dict:
    """The ``inference.yml`` at ``path`` as a dict; a one-line UserError when it is unreadable or not a mapping."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: unreadable ({reason}); export the run again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with PreProcess and PostProcess; export the run again")
    return data


def build_preprocess(config: dict, where: str = CONFIG_FILE) -> Compose:
    """``PreProcess.transform_ops`` -> a :class:`~utils.data.transforms.Compose` (HWC uint8 RGB in, CHW float32 out).

    Maps PaddleX ops to the template's own eval ops, so the arithmetic is the eval loader's:
    ``ResizeImage`` (size, PIL bilinear) -> ``Resize``, ``CropImage`` -> ``CenterCrop``,
    ``NormalizeImage`` (scale 1/255) -> the final normalization.

    Raises:
        UserError: an op or setting this template cannot reproduce exactly.
    """
    from utils.data.transforms import CenterCrop, Compose, Resize  # imports paddle: deferred until the thread count is set

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
