"""An exported model under Paddle Inference: :class:`Predictor` reads the export's
``inference.yml``, preprocesses images the way the run's eval loader did, runs the program
and ranks its outputs.

For a 1-channel model the predictor decodes with PIL's ``convert('L')`` first, exactly as the
eval loader does, and repeats the grey image to the program's 3 channels (the program turns
them back into luminance, see :mod:`utils.deploy.export`); so colour images fed to a grayscale
model match the loader too. PaddleX skips PIL's rounding to integer grey levels there (at
most half a grey level, 0.5/255 in [0, 1] units).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from utils.deploy.inference_yml import CONFIG_FILE, DEFAULT_DIRNAME, MODEL_FILES, build_preprocess, is_export_dir, read_yaml
from utils.deploy.native_output import drop_native_lines
from utils.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Iterable


def resolve_model_dir(path: str) -> str:
    """An export directory, or a run directory holding ``inference/`` -> the export directory."""
    stem = path[: -len(".pdparams")] if path.endswith(".pdparams") else path
    if os.path.isfile(stem + ".pdparams"):
        raise UserError(f"{path} is a training checkpoint: export it first (python tools/export.py {stem}) "
                        f"and pass the export directory")
    if not os.path.exists(path):
        raise UserError(f"{path}: no such export or run directory (export a run first: python tools/export.py RUN)")
    if not os.path.isdir(path):
        raise UserError(f"{path} is a file: pass the export directory (holding {CONFIG_FILE}) or its run directory")
    if is_export_dir(path):
        return path
    sub = os.path.join(path, DEFAULT_DIRNAME)
    if is_export_dir(sub):
        return sub
    if os.path.isfile(os.path.join(path, "config.yml")):
        raise UserError(f"{path}: this run has no exported model ({sub}/{CONFIG_FILE} missing); "
                        f"export it first: python tools/export.py {path}")
    missing = [f for f in (CONFIG_FILE, *MODEL_FILES) if not os.path.isfile(os.path.join(path, f))]
    raise UserError(f"{path}: not an export directory ({', '.join(missing)} missing); "
                    f"pass the directory tools/export.py wrote (default <run>/{DEFAULT_DIRNAME})")


def _threads() -> int:
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

    def __init__(self, model_dir: str, threads: int | None = None, mkldnn: bool = False, device: str = "cpu") -> None:
        import paddle.inference as pi  # deferred until the thread count is set

        self.model_dir = resolve_model_dir(model_dir)
        where = os.path.join(self.model_dir, CONFIG_FILE)
        self.config = read_yaml(where)
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
            import paddle  # deferred until the thread count is set

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

    def load_image(self, item: str | os.PathLike | Image.Image | np.ndarray) -> np.ndarray:
        """A path, PIL image or uint8 array -> HWC uint8 RGB array, decoded as the eval loader does.

        Arrays are RGB (H x W x 3) or grey (H x W or H x W x 1). For a 1-channel model the
        image goes through PIL's ``convert('L')`` first (what the loader does), then is
        repeated to the program's 3 channels.
        """
        from utils.data import GRAY_MODES, decode_image  # imports paddle: deferred until the thread count is set

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

    def preprocess(self, item: str | os.PathLike | Image.Image | np.ndarray, name: str | None = None) -> np.ndarray:
        """One input -> the program's input ``float32 [3, H, W]``; a UserError when its size is wrong."""
        out = self.transform(self.load_image(item))
        if self.input_shape is not None and tuple(out.shape) != self.input_shape:
            label = name or (os.fspath(item) if isinstance(item, (str, os.PathLike)) else "input image")
            raise UserError(f"{label}: preprocessed to {'x'.join(map(str, out.shape))} but the model takes "
                            f"{'x'.join(map(str, self.input_shape))}: the PreProcess ops in {self.model_dir}/{CONFIG_FILE} "
                            f"do not end at the model's size; export the run again with tools/export.py")
        return out

    # -- running

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run the program on ``float32 [N, 3, H, W]``; returns its output ``[N, classes]``."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        self._input.reshape(list(x.shape))
        self._input.copy_from_cpu(x)
        if self._mkldnn:
            with drop_native_lines(1, "ReduceMeanCheckIfOneDNNSupport"):
                self._predictor.run()
        else:
            self._predictor.run()
        return self._predictor.get_output_handle(self._output_name).copy_to_cpu()

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities of a preprocessed batch (softmax applied when the program outputs logits)."""
        out = self.run(batch)
        if self.output == "probabilities":
            return out
        from utils.training.evaluate import softmax  # imports paddle: deferred until the thread count is set

        return softmax(out).astype(np.float32)

    def predict(self, inputs: Iterable, topk: int | None = None, batch_size: int = 32) -> list[dict]:
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


def load_predictor(path: str, **kwargs: object) -> Predictor:
    """A :class:`Predictor` on the export at ``path`` (an export dir or a run dir holding one)."""
    return Predictor(path, **kwargs)
