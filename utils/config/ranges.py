"""Ranges of the numeric config keys, checked when the config is loaded.

A value out of range is a one-line ConfigError naming the key and where it was set
(``file:line`` or ``override -o ...``), before any data is read or a run directory made. The
limits below say why they are where they are; the schema attaches them to its keys
(:class:`Bounds`), and :func:`check_values` applies the rules no single key can: finite numbers
and 64-bit integers everywhere (the open ``Arch`` section and nested lists included), dropout
probabilities of the model arguments, the string forms of ``Transforms.mean/std``, the
``FineTune.lr_mult`` multipliers and the active schedule's own check.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from utils.config.patterns import check_param_groups
from utils.data.registry import MAX_CLASSES
from utils.errors import ConfigError
from utils.schedules import get_schedule

# numpy's seeds are 32-bit (np.random.seed rejects 2**32) and seed_everything reduces a seed
# modulo 2**32, so a larger Global.seed would silently repeat a smaller one's run.
SEED_MAX = 2**32 - 1
# Data.split_seed seeds the val carve and, plus one, the Data.fraction subsample: both numpy seeds.
SPLIT_SEED_MAX = 2**32 - 2
# 10**6 epochs is ~1,000x the longest published schedules (ImageNet, 300-1,000 epochs): more is a
# typo. 10**20 trained and then crashed VisualDL's hparams writer (its integers are int64).
EPOCHS_MAX = 10**6
# Every integer anywhere in a config (model arguments, op parameters, periods): Paddle's shapes and
# attributes and VisualDL's records (steps, hparams) are int64; 2**63 is 'Value out of range'.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Side of the (square) model input: one 8192 x 8192 RGB float32 image is 805 MB, so a batch of two
# no longer fits in most machines' memory; a larger side is a typo, not a dataset.
IMAGE_SIZE_MAX = 8192
# Samples per step: 2**20 (~1M) is 16x the largest batches in the literature (64k, LARS on
# ImageNet) and a 1M x 3 x 32 x 32 float32 batch is already 12.9 GB.
BATCH_MAX = 2**20
# Loader worker processes: each is a forked Python holding its own copy of the dataset object;
# 64 is more than the cores of nearly every machine, and workers beyond the cores only wait.
WORKERS_MAX = 64
# CPU threads for Paddle's kernels: 1,024 is above the largest servers (2 x 192 cores x 2 SMT).
THREADS_MAX = 1024
# Images in the eval/predictions grid (utils/training/vdl_images.py: 8 columns of 72 x 100 px
# cells): 1,024 make a 576 x 12,800 image of 22 MB at every evaluation; more is unreadable.
SAMPLE_IMAGES_MAX = 1024
# Arch arguments that are drop probabilities (models/: mlp, cnn, googlenet dropout; gmlp
# drop_path). p = 1 drops everything (Paddle's Dropout rejects p > 1 with a bare ValueError).
DROP_ARGS = ("dropout", "drop_path", "drop_rate", "drop_path_rate")


@dataclass(frozen=True)
class Bounds:
    """A closed, open or half-open interval of allowed numbers; ``None`` = unbounded on that side."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: object) -> bool:
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def text(self) -> str:
        """``in [0, 1)``, ``>= 1``, ``> 0``, ``<= 10``: how the reference and the errors write it."""
        def num(x):
            return f"{x:g}" if isinstance(x, float) and x != int(x) else str(int(x))
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {num(self.lo)}"
        return f"{'<' if self.hi_open else '<='} {num(self.hi)}" if self.hi is not None else "any number"


def at_least(lo: float, hi: float | None = None) -> Bounds:
    """``[lo, hi]`` (``hi`` None: no upper limit)."""
    return Bounds(lo, hi)


POSITIVE = Bounds(0, None, lo_open=True)
NON_NEGATIVE = Bounds(0)
PROBABILITY = Bounds(0, 1, hi_open=True)  # [0, 1)
CLASS_COUNT = at_least(1, MAX_CLASSES)


def check_number(value: Any, where: str, bounds: Bounds | None = None, what: str = "") -> None:
    """ConfigError unless ``value`` is finite, fits in int64 when an int, and lies in ``bounds``.

    ``where`` is ``file:line: Section.key`` (or with an index, ``...[2]``); ``what`` explains
    the unit after the range. The message reads ``<where> must be in [0, 1), got 1.5``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return
    rule = f" {bounds.text()}" if bounds is not None else ""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number{rule}{what}, got {value}")
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise ConfigError(f"{where} must be{rule or ' a 64-bit integer'}, got {value}, which does not fit in "
                          f"64 bits (Paddle and VisualDL store int64)")
    if bounds is not None and value not in bounds:
        raise ConfigError(f"{where} must be{rule}{what}, got {value!r}")


def check_nested(value: Any, where: str) -> None:
    """Every number inside ``value`` (lists and mappings, any depth) finite and int64."""
    if isinstance(value, dict):
        for k, v in value.items():
            check_nested(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_nested(v, f"{where}[{i}]")
    else:
        check_number(value, where)


def check_values(cfg: dict, origin: dict[str, str]) -> None:
    """The rules that span keys or reach inside values (module docstring); ConfigError naming the key."""
    def where(key):
        return f"{origin.get(key, origin.get(key.split('.')[0], 'config'))}: {key}"

    for sec, body in cfg.items():
        for k, v in body.items():
            check_nested(v, where(f"{sec}.{k}"))
    for k, v in cfg["Arch"].items():
        if k in DROP_ARGS:
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise ConfigError(f"{where(f'Arch.{k}')}: expected a probability in [0, 1), got {type(v).__name__} {v!r}")
            check_number(v, where(f"Arch.{k}"), PROBABILITY, " (a drop probability)")
    for k in ("mean", "std"):
        v = cfg["Transforms"][k]
        if isinstance(v, str) and v != "auto":
            raise ConfigError(f"{where(f'Transforms.{k}')}: expected a list of per-channel values or 'auto', got {v!r}")
        for i, x in enumerate(v if isinstance(v, list) else []):
            if isinstance(x, bool) or not isinstance(x, numbers.Real):
                raise ConfigError(f"{where(f'Transforms.{k}')}[{i}]: expected a number, got {type(x).__name__} {x!r}")
            if k == "std":
                check_number(x, f"{where('Transforms.std')}[{i}]", POSITIVE, " (a standard deviation)")
    mult = cfg["FineTune"]["lr_mult"]
    for pat, m in (mult.items() if isinstance(mult, dict) else ()):
        if isinstance(m, bool) or not isinstance(m, numbers.Real):
            raise ConfigError(f"{where('FineTune.lr_mult')}.{pat}: the multiplier must be a number >= 0, got {m!r}")
        check_number(m, f"{where('FineTune.lr_mult')}.{pat}", NON_NEGATIVE)
    check_param_groups(cfg["Optimizer"]["param_groups"], where("Optimizer.param_groups"))
    schedule = get_schedule(cfg["LRScheduler"]["name"])
    if schedule.check is not None:
        try:
            schedule.check(cfg["LRScheduler"])
        except ConfigError as e:  # 'LRScheduler.gamma: 0 is invalid, ...': add where that key was set
            key = str(e).split(":", 1)[0]
            raise ConfigError(f"{origin[key]}: {e}" if key in origin else str(e)) from None
