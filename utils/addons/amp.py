"""Mixed precision from the ``AMP`` config section, through hapi's ``Model.prepare(amp_configs=...)``.

Keys follow PaddleClas's ``AMP`` section where they mean the same (``level``, ``scale_loss``,
``use_dynamic_loss_scaling``); ``AMP.level: null`` (the default) is float32. hapi takes
``level`` plus ``paddle.amp.GradScaler``'s arguments and ``auto_cast``'s custom lists
(``paddle/hapi/model.py: Model._prepare_amp``); O2 casts the network to float16 in ``prepare``.

Paddle's AMP does nothing on CPU ("amp_guard can only be enabled on CUDAPlace"), so on CPU
the level is ignored with a one-line warning and the run is float32.
"""
from __future__ import annotations

import contextlib
from typing import Callable

from utils.errors import UserError
from utils.training.addon import AddOn, TrainRun


def amp_configs_for(cfg: dict, device: str) -> tuple[dict | None, str | None]:
    """``(amp_configs for Model.prepare or None, warning line or None)`` for ``cfg['AMP']`` on ``device``.

    Raises:
        UserError: O2 with ``Optimizer.grad_clip: value`` (hapi accepts only norm clipping in pure float16).
    """
    a = cfg["AMP"]
    level = a["level"]
    if not level:
        return None, None
    if device != "gpu":
        return None, (f"AMP.level {level} ignored: Paddle's mixed precision needs a GPU (running in float32)")
    if level == "O2" and cfg["Optimizer"]["grad_clip"] == "value":
        raise UserError("AMP.level O2 supports only norm clipping: set Optimizer.grad_clip to norm or "
                        "global_norm, or use AMP.level O1")
    configs = {"level": level, "init_loss_scaling": float(a["scale_loss"]),
               "use_dynamic_loss_scaling": bool(a["use_dynamic_loss_scaling"])}
    for key in ("custom_white_list", "custom_black_list"):
        if a[key]:
            configs[key] = [str(op) for op in a[key]]
    return configs, None


def eval_autocast(amp_configs: dict | None) -> contextlib.AbstractContextManager:
    """The context our own evaluation passes run in: ``auto_cast`` at O2 (float16 weights), else nothing.

    hapi's ``train_batch`` casts inside ``auto_cast``; ``utils.training.evaluate.predict`` calls the network
    directly. O1 keeps float32 weights, so float32 evaluation is exact there; O2's float16 weights
    need the same ``auto_cast`` as training.
    """
    if not amp_configs or amp_configs.get("level") != "O2":
        return contextlib.nullcontext()
    import paddle

    lists = {k: amp_configs[k] for k in ("custom_white_list", "custom_black_list") if k in amp_configs}
    return paddle.amp.auto_cast(enable=True, level="O2", **lists)


def wrap_eval(eval_fn: Callable[[], dict], amp_configs: dict | None) -> Callable[[], dict]:
    """``eval_fn`` run inside :func:`eval_autocast` (only O2 changes anything)."""
    if not amp_configs or amp_configs.get("level") != "O2":
        return eval_fn

    def evaluate():
        with eval_autocast(amp_configs):
            return eval_fn()
    return evaluate


class MixedPrecision(AddOn):
    """``AMP.level`` through ``Model.prepare(amp_configs=...)``; our evaluation under the same autocast."""

    name = "amp"

    @classmethod
    def create(cls, run: TrainRun) -> MixedPrecision | None:
        return cls() if run.cfg["AMP"]["level"] else None

    def prepare(self, run: TrainRun) -> dict:
        self.amp_configs, warning = amp_configs_for(run.cfg, run.device)
        if warning:
            run.print_fn(f"warning: {warning}")
        return {"amp_configs": self.amp_configs}

    def callbacks(self, run: TrainRun) -> dict[str, list]:
        run.eval_fn = wrap_eval(run.eval_fn, self.amp_configs)
        return {}
