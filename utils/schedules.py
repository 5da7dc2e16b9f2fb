"""Learning-rate schedules: one table of closed-form curves, registered by name.

Each schedule is a function ``lr(sch, s)`` of the iteration ``s`` counted from the end of the
warmup, reading ``sch.base_lr``, ``sch.steps_per_epoch``, ``sch.main_steps`` (the iterations
after warmup) and ``sch.p`` (the ``LRScheduler`` section), plus an optional ``check(section)``
that rejects bad parameters with a one-line ConfigError. ``utils/config/schema.py`` takes the valid
``LRScheduler.name`` values from this table and ``utils/training/optim.py``'s ``ClosedFormLR``
evaluates it, so a new schedule is one registered function here::

    @register_schedule("linear")
    def linear(sch, s):
        return sch.base_lr * (1 - min(s, sch.main_steps) / sch.main_steps)

Pure Python (no Paddle): the config reads it before the tools set the thread count.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

from utils.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Schedule:
    """A registered schedule: its curve and the check of its ``LRScheduler`` parameters."""

    name: str
    lr: Callable[[Any, int], float]
    check: Callable[[dict], None] | None = None


SCHEDULES: dict[str, Schedule] = {}


def register_schedule(name: str, check: Callable[[dict], None] | None = None) -> Callable:
    """Register ``lr(sch, s)`` under ``name`` (``LRScheduler.name``), with an optional parameter check."""
    def wrap(fn: Callable[[Any, int], float]) -> Callable[[Any, int], float]:
        if name in SCHEDULES:
            raise ValueError(f"schedule '{name}' is registered twice")
        SCHEDULES[name] = Schedule(name, fn, check)
        return fn
    return wrap


def list_schedules() -> list[str]:
    """Names of the registered schedules, in registration order."""
    return list(SCHEDULES)


def get_schedule(name: str) -> Schedule:
    """The schedule registered as ``name``; unknown names raise ConfigError listing the valid ones."""
    if name not in SCHEDULES:
        raise ConfigError(f"LRScheduler.name: unknown schedule {name!r}{did_you_mean(name, SCHEDULES)}; "
                          f"registered schedules: {', '.join(SCHEDULES)}")
    return SCHEDULES[name]


def require(ok: bool, key: str, value: Any, what: str) -> None:
    """Raise ``ConfigError('<key>: <value> is invalid, it must be <what>')`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {value!r} is invalid, it must be {what}")


def _positive_gamma(s: dict) -> None:
    require(s["gamma"] > 0, "LRScheduler.gamma", s["gamma"], "> 0")


def _check_step(s: dict) -> None:
    require(s["step_size"] > 0, "LRScheduler.step_size", s["step_size"], "> 0 (epochs)")
    _positive_gamma(s)


def _check_multistep(s: dict) -> None:
    _positive_gamma(s)
    ms = s["milestones"]
    require(isinstance(ms, list) and all(isinstance(m, numbers.Real) and not isinstance(m, bool) and m >= 0 for m in ms),
            "LRScheduler.milestones", ms, "a list of epoch numbers >= 0, e.g. [30, 60, 90]")


def _check_polynomial(s: dict) -> None:
    require(s["end_lr"] >= 0, "LRScheduler.end_lr", s["end_lr"], ">= 0")
    require(s["power"] > 0, "LRScheduler.power", s["power"], "> 0")


def _check_onecycle(s: dict) -> None:
    require(s["end_lr"] >= 0, "LRScheduler.end_lr", s["end_lr"], ">= 0")
    require(0 < s["pct_start"] < 1, "LRScheduler.pct_start", s["pct_start"], "between 0 and 1 (exclusive)")
    require(s["div_factor"] > 0, "LRScheduler.div_factor", s["div_factor"], "> 0")


def _check_plateau(s: dict) -> None:
    require(0 < s["factor"] < 1, "LRScheduler.factor", s["factor"], "between 0 and 1 (exclusive)")
    require(s["patience"] >= 0, "LRScheduler.patience", s["patience"], ">= 0")
    require(s["cooldown"] >= 0, "LRScheduler.cooldown", s["cooldown"], ">= 0")
    require(s["threshold"] >= 0, "LRScheduler.threshold", s["threshold"], ">= 0")
    require(s["min_lr"] >= 0, "LRScheduler.min_lr", s["min_lr"], ">= 0")


@register_schedule("constant")
def constant(sch: Any, s: int) -> float:
    return sch.base_lr


@register_schedule("step", _check_step)
def step(sch: Any, s: int) -> float:
    every = max(1, int(round(sch.p["step_size"] * sch.steps_per_epoch)))
    return sch.base_lr * sch.p["gamma"] ** (s // every)


@register_schedule("multistep", _check_multistep)
def multistep(sch: Any, s: int) -> float:
    bounds = [int(round(m * sch.steps_per_epoch)) for m in sch.p["milestones"]]
    return sch.base_lr * sch.p["gamma"] ** sum(1 for b in bounds if s >= b)


@register_schedule("exponential", _positive_gamma)
def exponential(sch: Any, s: int) -> float:
    return sch.base_lr * sch.p["gamma"] ** (s / sch.steps_per_epoch)


@register_schedule("inverse_time", lambda s: require(s["gamma"] >= 0, "LRScheduler.gamma", s["gamma"], ">= 0"))
def inverse_time(sch: Any, s: int) -> float:
    return sch.base_lr / (1.0 + sch.p["gamma"] * s / sch.steps_per_epoch)


@register_schedule("cosine", lambda s: require(s["eta_min"] >= 0, "LRScheduler.eta_min", s["eta_min"], ">= 0"))
def cosine(sch: Any, s: int) -> float:
    lo, T = sch.p["eta_min"], sch.main_steps
    return lo + (sch.base_lr - lo) * (1.0 + math.cos(math.pi * min(s, T) / T)) / 2.0


@register_schedule("polynomial", _check_polynomial)
def polynomial(sch: Any, s: int) -> float:
    lo, T = sch.p["end_lr"], sch.main_steps
    return lo + (sch.base_lr - lo) * (1.0 - min(s, T) / T) ** sch.p["power"]


@register_schedule("onecycle", _check_onecycle)
def onecycle(sch: Any, s: int) -> float:
    """Rise from lr/div_factor to lr over pct_start of the run, fall to end_lr (Paddle's OneCycleLR,
    two phases); ``anneal_strategy`` cos (default) or linear shapes both; the peak is at s = pct_start*T."""
    T = sch.main_steps
    peak, start, end = sch.base_lr, sch.base_lr / sch.p["div_factor"], sch.p["end_lr"]
    up = sch.p["pct_start"] * T
    s = min(s, T)
    linear = sch.p.get("anneal_strategy", "cos") == "linear"

    def ramp(a: float, b: float, frac: float) -> float:
        return a + (b - a) * (frac if linear else (1.0 - math.cos(math.pi * frac)) / 2.0)

    if s <= up:
        return ramp(start, peak, s / up if up > 0 else 1.0)
    return ramp(peak, end, (s - up) / (T - up))


@register_schedule("plateau", _check_plateau)
def plateau(sch: Any, s: int) -> float:
    """The base LR times the reductions made so far (``ClosedFormLR.eval_step`` lowers ``plateau_scale``)."""
    return max(sch.base_lr * sch.plateau_scale, sch.p["min_lr"])
