"""The search space's parameters: :class:`ParamSpec` and what a study computes from a space.

One :class:`ParamSpec` per searched config key: how a trial suggests its value, the grid the
grid sampler enumerates, the ``-o`` overrides that apply a trial's values, and the warnings
for a best value at the edge of its range. Reading and checking a space file is
``utils.tune.space_file``'s part.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import yaml

from utils.errors import ConfigError

if TYPE_CHECKING:
    import optuna

# A best value within 5% of its range from an edge (in log space for log ranges) is flagged:
# with a 5-decade LR range that is the outer quarter decade, where the optimum may lie beyond.
EDGE_MARGIN = 0.05
# An int range is enumerated in full for the grid sampler; beyond this many values, ask for a list.
MAX_INT_GRID = 1000


@dataclasses.dataclass
class ParamSpec:
    """One searched config key.

    Attributes:
        key: dotted config key, e.g. ``Optimizer.lr`` (also the Optuna parameter name).
        type: ``float``, ``int`` or ``categorical``.
        low, high: the range of a float or int parameter (inclusive).
        log: sample the range uniformly in log space.
        step: discretisation step of the range (None = continuous float, 1 for int).
        grid: explicit values for the grid sampler (floats need one; other samplers ignore it).
        choices: the values of a categorical parameter, as the config takes them.
        where: ``space.yml:line`` for error messages.
    """

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    grid: list | None = None
    choices: list | None = None
    where: str = ""

    def encoded_choices(self) -> list:
        """Choices as Optuna stores them: scalars as they are, lists and mappings as YAML text.

        Optuna's categorical values must be None, bool, int, float or str (to persist in the
        database), but ``Arch.hidden: [[64], [128, 64]]`` is a natural thing to search.
        """
        return [c if is_scalar(c) else yaml_text(c) for c in self.choices]

    def decode(self, value: Any) -> Any:
        """The config value of an Optuna value (inverse of :meth:`encoded_choices`)."""
        if self.type == "categorical":
            for raw, enc in zip(self.choices, self.encoded_choices()):
                if enc == value and type(enc) is type(value):
                    return raw
        return value

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask ``trial`` for this parameter; returns the config value."""
        if self.type == "categorical":
            return self.decode(trial.suggest_categorical(self.key, self.encoded_choices()))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self) -> list:
        """The values the grid sampler tries (encoded for Optuna). Raises UserError for a float range."""
        if self.type == "categorical":
            return self.encoded_choices()
        if self.grid is not None:
            return list(self.grid)
        if self.type == "int":
            step = int(self.step or 1)
            n = (int(self.high) - int(self.low)) // step + 1
            if n > MAX_INT_GRID:
                raise ConfigError(f"{self.where}: {self.key}: the grid sampler would enumerate {n} values of "
                                  f"[{self.low}, {self.high}]; give a 'grid' list or a larger 'step'")
            return list(range(int(self.low), int(self.high) + 1, step))
        raise ConfigError(f"{self.where}: {self.key}: the grid sampler needs a 'grid' list for a float range, "
                          f"e.g. grid: {_suggest_grid(self)} (or use --sampler tpe, random or qmc)")


def is_scalar(v: Any) -> bool:
    """Whether Optuna can store ``v`` as a categorical value as it is (None, bool, int, float, str)."""
    return v is None or isinstance(v, (bool, int, float, str))


def yaml_text(v: Any) -> str:
    """A value as one line of YAML that ``yaml.safe_load`` reads back to the same value."""
    text = yaml.safe_dump(v, default_flow_style=True, width=1 << 20, allow_unicode=True).strip()
    return text[:-4].strip() if text.endswith("\n...") else text  # a scalar ends with the document end marker


def _suggest_grid(spec: ParamSpec) -> str:
    """Four values spread over a float range, as an example for an error message."""
    if spec.log:
        a, b = math.log10(spec.low), math.log10(spec.high)
        vals = [10 ** (a + (b - a) * i / 3) for i in range(4)]
    else:
        vals = [spec.low + (spec.high - spec.low) * i / 3 for i in range(4)]
    return "[" + ", ".join(f"{v:.3g}" for v in vals) + "]"


def check_grid(space: dict[str, ParamSpec]) -> dict[str, list]:
    """The grid for Optuna's GridSampler: ``{name: [values]}``; UserError where a range has no grid."""
    return {key: spec.grid_values() for key, spec in space.items()}


def grid_size(grid: dict[str, list]) -> int:
    """How many points the grid ``{name: [values]}`` has (the product of its lists' lengths)."""
    n = 1
    for values in grid.values():
        n *= len(values)
    return n


def param_overrides(params: dict[str, Any]) -> list[str]:
    """``-o`` style overrides (``Optimizer.lr=0.001``) applying a trial's config values."""
    return [f"{k}={yaml_text(v)}" for k, v in params.items()]


def edge_warnings(space: dict[str, ParamSpec], params: dict[str, Any], margin: float = EDGE_MARGIN,
                  use_grid: bool = False) -> list[str]:
    """Warnings for best values at (within ``margin`` of) an edge of their search range.

    Args:
        space: ``{key: ParamSpec}``.
        params: the best trial's values (config values).
        margin: fraction of the range, measured in log space for log ranges.
        use_grid: the study used the grid sampler: a float's edges are its grid's ends.

    Returns:
        A list of one-line messages (empty when nothing is at an edge).
    """
    out = []
    for key, spec in space.items():
        v = params.get(key)
        if spec.type == "categorical" or v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if use_grid and spec.grid is not None:
            lo, hi = min(spec.grid), max(spec.grid)
            if len(spec.grid) < 2:
                continue
            what, edge = ("low", lo) if v <= lo else ("high", hi) if v >= hi else (None, None)
            if what:
                out.append(f"best {key} = {v:.4g} is the {what}est value of its grid {spec.grid}: the optimum may "
                           f"lie beyond it; extend the grid (and range) past {edge:g}")
            continue
        lo, hi, x = spec.low, spec.high, float(v)
        if spec.log:
            lo, hi, x = math.log(lo), math.log(hi), math.log(max(x, 1e-300))
        frac = (x - lo) / (hi - lo)
        if frac <= margin or frac >= 1 - margin:
            what, edge = ("low", spec.low) if frac <= margin else ("high", spec.high)
            scale = " in log space" if spec.log else ""
            hint = ""
            if spec.log:
                hint = f" (e.g. {what}: {edge / 10 if what == 'low' else edge * 10:.1e})"
            out.append(f"best {key} = {v:.4g} is at the {what} edge of its range [{spec.low:g}, {spec.high:g}] "
                       f"(within {margin:.0%}{scale}): the optimum may lie beyond it; widen '{what}'{hint}")
    return out
