"""Hyperparameter search with Optuna over any config keys: ``tools/tune.py``'s logic.

A *search space* is a small YAML file, one dotted config key per entry::

    Optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
    Optimizer.name: {type: categorical, choices: [SGD, AdamW]}
    Arch.depth: {type: int, low: 2, high: 6}

Every key is checked against the config schema (``Arch`` keys against the model factory's
arguments) before anything runs, so a typo is a one-line error with a suggestion, not a
study of failed trials.

Each trial is an ordinary training run (:func:`utils.trainer.train`, in this process) with
the trial's values applied as ``-o`` overrides, in ``<output_dir>/<config>/tune_<study>/trial_<n>/``:
its own VisualDL log, resolved ``config.yml`` and checkpoints, so any trial can be re-run
or resumed alone with ``tools/train.py``. :class:`TrialReporter`, a hapi callback, reports
the monitored validation metric (``EarlyStopping.monitor``/``mode``) to Optuna at every
evaluation and stops the run when the pruner says so.

The study lives in ``study.db`` (SQLite) in the study directory unless a storage URL is
given, so re-running the same command continues it; a PostgreSQL URL lets several
processes or machines work on one study. After the study: ``trials.csv``, ``trials.md``
and ``best_config.yml`` in the study directory.
"""
import contextlib
import csv
import dataclasses
import math
import os
import traceback
import warnings

import yaml
from paddle.callbacks import Callback

from utils.errors import ConfigError, UserError, did_you_mean

TYPES = ("float", "int", "categorical")
FIELDS = {
    "float": ("type", "low", "high", "log", "step", "grid"),
    "int": ("type", "low", "high", "log", "step", "grid"),
    "categorical": ("type", "choices"),
}
# Names other tools use for the same types (Optuna's old suggest_* names, hyperopt, Ray Tune).
TYPE_ALIASES = {"double": "'float'", "real": "'float'", "uniform": "'float'", "loguniform": "'float' with log: true",
                "integer": "'int'", "randint": "'int'", "choice": "'categorical'", "category": "'categorical'",
                "enum": "'categorical'"}
SAMPLERS = ("tpe", "random", "grid", "qmc")
PRUNERS = ("median", "hyperband", "none")
# Keys the tuner sets itself for every trial.
RESERVED = {"Global.output_dir", "Global.run_name", "Global.checkpoints"}
# A best value within 5% of its range from an edge (in log space for log ranges) is flagged:
# with a 5-decade LR range that is the outer quarter decade, where the optimum may lie beyond.
EDGE_MARGIN = 0.05
# An int range is enumerated in full for the grid sampler; beyond this many values, ask for a list.
MAX_INT_GRID = 1000
# The same UserError from this many trials in a row is not about the parameters (missing data,
# a bad override): stop the study instead of failing every remaining trial the same way.
MAX_SAME_ERRORS = 3
# A PostgreSQL server that does not answer fails the study this fast (psycopg2's connect_timeout).
DB_CONNECT_TIMEOUT_S = 5


# ----------------------------------------------------------------------------- search space

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
    low: float = None
    high: float = None
    log: bool = False
    step: float = None
    grid: list = None
    choices: list = None
    where: str = ""

    def encoded_choices(self):
        """Choices as Optuna stores them: scalars as they are, lists and mappings as YAML text.

        Optuna's categorical values must be None, bool, int, float or str (to persist in the
        database), but ``Arch.hidden: [[64], [128, 64]]`` is a natural thing to search.
        """
        return [c if _is_scalar(c) else _yaml_text(c) for c in self.choices]

    def decode(self, value):
        """The config value of an Optuna value (inverse of :meth:`encoded_choices`)."""
        if self.type == "categorical":
            for raw, enc in zip(self.choices, self.encoded_choices()):
                if enc == value and type(enc) is type(value):
                    return raw
        return value

    def suggest(self, trial):
        """Ask ``trial`` for this parameter; returns the config value."""
        if self.type == "categorical":
            return self.decode(trial.suggest_categorical(self.key, self.encoded_choices()))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self):
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


def _is_scalar(v):
    return v is None or isinstance(v, (bool, int, float, str))


def _yaml_text(v):
    """A value as one line of YAML that ``yaml.safe_load`` reads back to the same value."""
    text = yaml.safe_dump(v, default_flow_style=True, width=1 << 20, allow_unicode=True).strip()
    return text[:-4].strip() if text.endswith("\n...") else text  # a scalar ends with the document end marker


def _suggest_grid(spec):
    """Four values spread over a float range, as an example for an error message."""
    if spec.log:
        a, b = math.log10(spec.low), math.log10(spec.high)
        vals = [10 ** (a + (b - a) * i / 3) for i in range(4)]
    else:
        vals = [spec.low + (spec.high - spec.low) * i / 3 for i in range(4)]
    return "[" + ", ".join(f"{v:.3g}" for v in vals) + "]"


def _number(value, where, key, field, integer=False):
    """A range bound as a number; PyYAML reads ``1e-4`` (no dot) as a string, so accept that too."""
    if isinstance(value, str) and not integer:
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}: {key}: '{field}' must be {kind}, got {value!r}")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: {key}: '{field}' must be an integer for type: int, got {value!r} "
                              f"(use type: float for a real range)")
        return int(value)
    return float(value)


def _line_map(text):
    """Top-level key -> 1-based line number in the space file (best effort)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value}


def read_space_file(path):
    """The raw search-space mapping and its key -> line map; one-line ConfigError when unreadable."""
    from utils.config import read_yaml_text

    data, text = read_yaml_text(path, f"search space file not found: {path} (pass a YAML file with --space, "
                                      f"e.g. configs/spaces/lr_wd_digits.yml)")
    if not data:
        raise ConfigError(f"{path}: the search space is empty: add entries like "
                          f"'Optimizer.lr: {{type: float, low: 1.0e-4, high: 0.1, log: true}}'")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must map config keys to ranges "
                          f"(Optimizer.lr: {{type: float, ...}}), got {type(data).__name__}")
    return data, _line_map(text)


def load_space(path, cfg):
    """Read and validate a search-space file against ``cfg``'s schema and model.

    Args:
        path: the YAML search-space file.
        cfg: the loaded config (``utils.config.load_config``): its ``Arch.name`` decides which
            model arguments ``Arch.*`` keys may name.

    Returns:
        ``{key: ParamSpec}`` in file order.

    Raises:
        ConfigError: one line naming the file, line, key and the fix.
    """
    from utils.config import SCHEMA

    data, lines = read_space_file(path)
    space = {}
    for key, body in data.items():
        key = str(key)
        where = f"{path}:{lines.get(key, '?')}"
        parts = key.split(".")
        if len(parts) == 1 and key in SCHEMA and isinstance(body, dict):
            raise ConfigError(f"{where}: '{key}': write dotted keys at the top level, e.g. "
                              f"'{key}.{next(iter(body), 'key')}: {{type: ...}}', not a nested section")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"{where}: '{key}': keys are Section.key, e.g. Optimizer.lr")
        sec, k = parts
        if sec not in SCHEMA:
            raise ConfigError(f"{where}: unknown section '{sec}' in '{key}'{did_you_mean(sec, SCHEMA)}; "
                              f"valid sections: {', '.join(SCHEMA)}")
        if key in RESERVED:
            raise ConfigError(f"{where}: {key} is set by the tuner for every trial and cannot be searched; "
                              f"remove it from the space")
        if k not in SCHEMA[sec] and sec != "Arch":
            raise ConfigError(f"{where}: unknown key '{key}'{did_you_mean(k, SCHEMA[sec])}; "
                              f"valid keys of {sec}: {', '.join(SCHEMA[sec])}")
        space[key] = _parse_spec(key, body, where)
    for spec in space.values():
        _check_against_config(spec, space, cfg)
    return space


def _parse_spec(key, body, where):
    """A :class:`ParamSpec` from one entry's mapping; checks fields, ranges and choices."""
    example = "{type: float, low: 1.0e-4, high: 0.1, log: true}"
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: {key}: expected a mapping like {example} or "
                          f"{{type: categorical, choices: [a, b]}}, got {type(body).__name__} {body!r}")
    kind = body.get("type")
    if kind is None:
        raise ConfigError(f"{where}: {key}: missing 'type': one of {', '.join(TYPES)}")
    if kind not in TYPES:
        hint = f" (did you mean {TYPE_ALIASES[kind]}?)" if kind in TYPE_ALIASES else did_you_mean(kind, TYPES)
        raise ConfigError(f"{where}: {key}: unknown type {kind!r}{hint}; "
                          f"valid types: {', '.join(TYPES)}")
    for field in body:
        if field not in FIELDS[kind]:
            raise ConfigError(f"{where}: {key}: unknown field '{field}' for type {kind}{did_you_mean(field, FIELDS[kind])}; "
                              f"valid fields: {', '.join(FIELDS[kind])}")
    spec = ParamSpec(key=key, type=kind, where=where)
    if kind == "categorical":
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: {key}: 'choices' must be a non-empty list, e.g. choices: [SGD, AdamW], "
                              f"got {choices!r}")
        enc = [c if _is_scalar(c) else _yaml_text(c) for c in choices]
        dup = next((c for i, c in enumerate(enc) if c in enc[:i]), None)
        if dup is not None:
            raise ConfigError(f"{where}: {key}: choice {dup!r} is listed twice")
        spec.choices = list(choices)
        return spec
    integer = kind == "int"
    for field in ("low", "high"):
        if field not in body:
            raise ConfigError(f"{where}: {key}: missing '{field}' (a {kind} range needs low and high)")
    spec.low = _number(body["low"], where, key, "low", integer)
    spec.high = _number(body["high"], where, key, "high", integer)
    if spec.low >= spec.high:
        raise ConfigError(f"{where}: {key}: empty range: low {spec.low:g} >= high {spec.high:g} "
                          f"(make low < high; for a fixed value use -o {key}=VALUE instead)")
    log = body.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: {key}: 'log' must be true or false, got {log!r}")
    spec.log = log
    if log and spec.low <= 0:
        raise ConfigError(f"{where}: {key}: log: true needs low > 0, got low {spec.low:g} "
                          f"(e.g. low: {spec.high / 1000:.1e}, or log: false)")
    if "step" in body:
        spec.step = _number(body["step"], where, key, "step", integer)
        if spec.step <= 0:
            raise ConfigError(f"{where}: {key}: 'step' must be > 0, got {spec.step:g}")
        if log:
            raise ConfigError(f"{where}: {key}: 'step' and log: true cannot be combined (Optuna samples a log "
                              f"range continuously); drop one of them")
    if "grid" in body:
        grid = body["grid"]
        if not isinstance(grid, list) or not grid:
            raise ConfigError(f"{where}: {key}: 'grid' must be a non-empty list of values within [low, high], got {grid!r}")
        grid = [_number(v, where, key, "grid", integer) for v in grid]
        outside = [v for v in grid if not spec.low <= v <= spec.high]
        if outside:
            raise ConfigError(f"{where}: {key}: grid value {outside[0]:g} lies outside [low, high] = "
                              f"[{spec.low:g}, {spec.high:g}]: widen the range or drop the value")
        if len(set(grid)) < len(grid):
            raise ConfigError(f"{where}: {key}: 'grid' lists a value twice")
        spec.grid = grid
    return spec


def _check_against_config(spec, space, cfg):
    """Type-check a spec against its schema key, or an ``Arch`` model argument against the factories."""
    from utils.config import SCHEMA

    sec, k = spec.key.split(".")
    key = SCHEMA[sec].get(k)
    if key is None:
        _check_model_argument(spec, space, cfg)
        return
    if spec.type == "categorical":
        spec.choices = [key.check(c, f"{spec.where}: {spec.key} choices") for c in spec.choices]
        if spec.key == "Arch.name":
            _check_model_choices(spec, space, cfg)
        return
    if key.choices is not None:
        raise ConfigError(f"{spec.where}: {spec.key} takes one of {list(key.choices)}: use type: categorical")
    if spec.type == "float" and float not in key.types:
        fix = "type: int" if int in key.types and bool not in key.types else "type: categorical with choices"
        raise ConfigError(f"{spec.where}: {spec.key} takes {key.type_name()}, not a float range: use {fix}")
    if spec.type == "int" and not ({int, float} & set(key.types)):
        raise ConfigError(f"{spec.where}: {spec.key} takes {key.type_name()}, not an int range: "
                          f"use type: categorical with choices")


def _model_names(space, cfg):
    return space["Arch.name"].choices if "Arch.name" in space else [cfg["Arch"]["name"]]


def _check_model_choices(spec, space, cfg):
    """Every model of ``Arch.name: {choices}`` exists and takes the config's own Arch arguments."""
    import models  # noqa: F401  (importing the package registers every model family)
    from models.registry import check_kwargs, model_factory
    from utils.config import model_kwargs

    searched = {s.key.split(".")[1] for s in space.values() if s.key.startswith("Arch.")}
    fixed = {k: v for k, v in model_kwargs(cfg).items() if k not in searched}
    for name in spec.choices:
        try:
            model_factory(name)
            check_kwargs(name, fixed)
        except ConfigError as e:
            raise ConfigError(f"{spec.where}: {spec.key} choice '{name}': {e} (the config's Arch section sets it; "
                              f"models with different arguments need separate studies)") from None


def _check_model_argument(spec, space, cfg):
    """An ``Arch.<arg>`` beyond the schema: every model the study may build takes it, as a number when ranged."""
    import inspect

    import models  # noqa: F401  (importing the package registers every model family)
    from models.registry import check_kwargs, model_factory

    k = spec.key.split(".")[1]
    for name in _model_names(space, cfg):
        try:
            check_kwargs(name, {k: None})
        except ConfigError as e:
            raise ConfigError(f"{spec.where}: {e}") from None
        param = inspect.signature(model_factory(name)).parameters.get(k)
        default = param.default if param is not None else inspect.Parameter.empty
        if spec.type == "categorical" or default is inspect.Parameter.empty or default is None:
            continue
        if isinstance(default, (tuple, list)):
            raise ConfigError(f"{spec.where}: {spec.key}: model '{name}' takes a list here (default {list(default)}), "
                              f"not a number: use type: categorical, e.g. choices: [{_yaml_text(list(default))}, ...]")
        if isinstance(default, (bool, str)) or callable(default):
            raise ConfigError(f"{spec.where}: {spec.key}: model '{name}' takes a {type(default).__name__} here, "
                              f"not a number: use type: categorical with choices")
        if spec.type == "float" and isinstance(default, int):
            raise ConfigError(f"{spec.where}: {spec.key}: model '{name}' takes an integer here (default {default}): "
                              f"use type: int")


def check_grid(space):
    """The grid for Optuna's GridSampler: ``{name: [values]}``; UserError where a range has no grid."""
    return {key: spec.grid_values() for key, spec in space.items()}


def grid_size(grid):
    n = 1
    for values in grid.values():
        n *= len(values)
    return n


def param_overrides(params):
    """``-o`` style overrides (``Optimizer.lr=0.001``) applying a trial's config values."""
    return [f"{k}={_yaml_text(v)}" for k, v in params.items()]


def edge_warnings(space, params, margin=EDGE_MARGIN, use_grid=False):
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


# ----------------------------------------------------------------------------- storage, sampler, pruner

def default_storage(study_dir):
    """SQLite in the study directory: re-running the same command finds and continues the study."""
    return "sqlite:///" + os.path.abspath(os.path.join(study_dir, "study.db"))


def redact(url):
    """The storage URL with its password hidden (it goes to the console and trials.md)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password field we can find
        return url.split("@")[-1] if "@" in url else url


def _rdb_storage(optuna, sqlalchemy, url, kwargs, attempts=5):
    """``RDBStorage(url)``, retried when another worker is creating the same tables right now.

    Two workers started together on an empty PostgreSQL database both run CREATE TABLE; the
    slower one fails with 'duplicate key value violates unique constraint
    "pg_type_typname_nsp_index"' (seen in 1 of 4 runs of tests/test_tune_postgres.py). The
    tables exist by the time it retries, so a second attempt succeeds.
    """
    import random
    import time

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * 0.5)


def open_storage(url):
    """Optuna's ``RDBStorage`` for ``url`` (``sqlite:///...``, ``postgresql://user:pw@host/db``, ...).

    Connects at once, so an unreachable database is a one-line UserError before any training.

    Raises:
        UserError: bad URL, missing driver, or the database cannot be reached.
    """
    import optuna
    import sqlalchemy
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise UserError(f"--storage {url!r}: not a database URL; use e.g. sqlite:///path/study.db or "
                        f"postgresql://user:password@host:5432/dbname") from None
    if parsed.drivername == "postgresql" and _has_module("psycopg2") and not _has_module("psycopg"):
        # SQLAlchemy 2.1 made psycopg 3 the driver of a bare postgresql:// URL; requirements.txt
        # installs psycopg2-binary, so name it unless psycopg 3 is there.
        parsed = parsed.set(drivername="postgresql+psycopg2")
        url = parsed.render_as_string(hide_password=False)
    kwargs = {}
    if parsed.get_backend_name() == "postgresql":
        # psycopg2 waits for the OS TCP timeout (minutes) on a host that drops packets.
        kwargs["connect_args"] = {"connect_timeout": DB_CONNECT_TIMEOUT_S}
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
    try:
        return _rdb_storage(optuna, sqlalchemy, url, kwargs)
    except ImportError:
        raise UserError(f"--storage {redact(url)}: the database driver is not installed "
                        f"(PostgreSQL: pip install psycopg2-binary, as in requirements.txt)") from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise UserError(f"--storage {redact(url)}: unknown database scheme '{parsed.drivername}'; "
                        f"use sqlite:///... or postgresql://...") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        first = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise UserError(f"cannot reach the study database {redact(url)}: {first} "
                        f"(is the server running and the host, port, user and password right?)") from None


def _has_module(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def make_sampler(name, space, seed, startup_trials=None):
    """An Optuna sampler by name: tpe, random, grid or qmc."""
    import optuna

    if name == "tpe":
        kw = {} if startup_trials is None else {"n_startup_trials": startup_trials}
        return optuna.samplers.TPESampler(seed=seed, **kw)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(check_grid(space), seed=seed)
    if name == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Categorical parameters go to its independent (random) sampler: expected, not news.
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise UserError(f"unknown sampler '{name}'{did_you_mean(name, SAMPLERS)}; choose one of {', '.join(SAMPLERS)}")


def evaluations_per_run(cfg):
    """How many validations a full run makes (the pruners' resource), or None when it varies."""
    g = cfg["Global"]
    if g["eval_every_iters"]:
        return None
    every = g["eval_every_epochs"]
    return sum(1 for e in range(g["epochs"]) if e + 1 == g["epochs"] or (every and (e + 1) % every == 0))


def make_pruner(name, cfg, space, startup_trials=None):
    """An Optuna pruner by name: median (default), hyperband or none.

    Trials report at their k-th validation (step k): the same point of training in every
    trial of a study unless the space changes the evaluation schedule.
    """
    import optuna

    if not isinstance(name, str):
        return name  # a pruner object (tests script one)
    if name == "median":
        # Optuna's defaults: no pruning before 5 trials have finished; compare from the first eval.
        return optuna.pruners.MedianPruner(n_startup_trials=5 if startup_trials is None else startup_trials)
    if name == "hyperband":
        varies = {"Global.epochs", "Global.eval_every_epochs", "Global.eval_every_iters"} & set(space)
        n = None if varies else evaluations_per_run(cfg)
        # reduction 3 (Hyperband's paper): each rung keeps the best third of the trials.
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=n or "auto", reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner '{name}'{did_you_mean(name, PRUNERS)}; choose one of {', '.join(PRUNERS)}")


# ----------------------------------------------------------------------------- the trial callback

class TrialReporter(Callback):
    """hapi callback: reports each validation's monitored metric to an Optuna trial; prunes.

    Added to the run with ``train(cfg, callbacks=[reporter])``, it gets ``on_eval_end(logs)``
    after every validation. It reports ``logs[monitor]`` at step k (the k-th validation) and,
    when ``trial.should_prune()``, stops training after the current batch
    (:func:`utils.training.callbacks.request_stop`) and records where; the tuner then raises
    ``optuna.TrialPruned``. It also counts training steps and notes a non-finite loss or metric.

    Args:
        trial: an ``optuna.Trial`` (or anything with ``report`` and ``should_prune``).
        monitor: validation metric name (``EarlyStopping.monitor``).
    """

    def __init__(self, trial, monitor="acc"):
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.evals = 0
        self.steps = 0
        self.last = None
        self.pruned_at = None
        self.nonfinite = None

    def on_train_batch_end(self, step, logs=None):
        import numpy as np

        self.steps += 1
        loss = (logs or {}).get("loss")
        if loss is not None and self.nonfinite is None:
            value = float(np.asarray(loss).reshape(-1)[0])
            if not math.isfinite(value):
                self.nonfinite = f"training loss is {value} at step {self.steps}"

    def on_eval_end(self, logs=None):
        from utils.training.callbacks import request_stop

        logs = logs or {}
        if self.monitor not in logs:
            available = [k for k in logs if k not in ("epoch", "step", "samples", "eval_time")]
            raise ConfigError(f"EarlyStopping.monitor: no validation metric '{self.monitor}' to tune on; "
                              f"available: {', '.join(available)}")
        self.evals += 1
        value = float(logs[self.monitor])
        if not math.isfinite(value):
            # Optuna's pruners would treat NaN as "prune"; a diverged run is a failure, not a pruning.
            self.nonfinite = self.nonfinite or f"validation {self.monitor} is {value} at step {logs.get('step')}"
            request_stop(self.model)
            return
        self.last = value
        self.trial.report(value, self.evals)
        if self.trial.should_prune():
            self.pruned_at = {"eval": self.evals, "step": logs.get("step"), "epoch": logs.get("epoch"), "value": value}
            request_stop(self.model)


class TrialFailed(Exception):
    """A trial that diverged or failed on a user error; the study records FAIL and goes on."""


def failure_reason(metrics, reporter):
    """Why a finished run counts as failed (None = it did not): NaN/Inf, or no validation result."""
    reason = metrics.get("stop_reason")
    if reporter.nonfinite:
        return reason or reporter.nonfinite
    if reason and str(reason).startswith("doctor:"):
        return reason  # the doctor stops on a non-finite input, gradient or weight
    if not metrics.get("best"):
        return reason or "no validation result (is there a validation set?)"
    return None


# ----------------------------------------------------------------------------- the study

@dataclasses.dataclass
class TuneSetup:
    """Everything a study needs, resolved from the command line."""

    config_path: str
    space_path: str
    overrides: list
    cfg: dict
    space: dict
    study_name: str
    study_dir: str
    storage_url: str
    sampler: str
    pruner: object
    monitor: str
    mode: str


def prepare(config_path, space_path, overrides=(), study_name=None, storage=None, sampler="tpe", pruner="median"):
    """Load the config and the space and check both, before any database or training.

    Returns:
        A :class:`TuneSetup`.
    """
    from utils.config import load_config

    cfg = load_config(config_path, list(overrides))
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler '{sampler}'{did_you_mean(sampler, SAMPLERS)}; choose one of {', '.join(SAMPLERS)}")
    if isinstance(pruner, str) and pruner not in PRUNERS:
        raise UserError(f"unknown pruner '{pruner}'{did_you_mean(pruner, PRUNERS)}; choose one of {', '.join(PRUNERS)}")
    space = load_space(space_path, cfg)
    if sampler == "grid":
        check_grid(space)
    name = study_name or os.path.splitext(os.path.basename(space_path))[0]
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise UserError(f"--study {name!r}: use a plain name (letters, digits, '-', '_'); it names a directory")
    config_name = cfg["_meta"]["config_name"]
    study_dir = os.path.join(cfg["Global"]["output_dir"], config_name, f"tune_{name}")
    return TuneSetup(config_path, space_path, list(overrides), cfg, space, name, study_dir,
                     storage or default_storage(study_dir), sampler, pruner,
                     cfg["EarlyStopping"]["monitor"], cfg["EarlyStopping"]["mode"])


def open_study(setup, seed=None, startup_trials=None):
    """Create or load the study; checks that a loaded one was made for this config and metric."""
    import optuna

    storage = open_storage(setup.storage_url)
    direction = "maximize" if setup.mode == "max" else "minimize"
    try:
        study_id = storage.get_study_id_from_name(setup.study_name)
    except KeyError:
        study_id = None
    n_prior = len(storage.get_all_trials(study_id, deepcopy=False)) if study_id is not None else 0
    config_name = setup.cfg["_meta"]["config_name"]
    if study_id is not None:
        attrs = storage.get_study_user_attrs(study_id)
        if attrs.get("config_name") not in (None, config_name):
            raise UserError(f"study '{setup.study_name}' in {redact(setup.storage_url)} was made for config "
                            f"'{attrs['config_name']}', not '{config_name}': choose another --study")
        if (attrs.get("monitor"), attrs.get("mode")) not in ((None, None), (setup.monitor, setup.mode)):
            raise UserError(f"study '{setup.study_name}' optimizes {attrs['monitor']} ({attrs['mode']}) but the config "
                            f"now monitors {setup.monitor} ({setup.mode}): set EarlyStopping.monitor/mode back, "
                            f"or choose another --study")
    elif setup.storage_url == default_storage(setup.study_dir) and _has_trial_runs(setup.study_dir):
        # Checked for the default SQLite file only: workers sharing a server create the study concurrently.
        raise UserError(f"{setup.study_dir} holds trial runs of a study that {redact(setup.storage_url)} does not "
                        f"have: choose another --study, or the --storage that study used")
    # A seeded sampler replays its first proposals in every process: offset the seed by the
    # trials already in the study so a continued run proposes new values. Workers sharing a
    # database may start at the same moment (same trial count): without --seed they draw fresh entropy.
    if seed is None and setup.storage_url != default_storage(setup.study_dir):
        sampler_seed = None
    else:
        sampler_seed = (setup.cfg["Global"]["seed"] if seed is None else seed) + n_prior
    sampler = make_sampler(setup.sampler, setup.space, sampler_seed, startup_trials)
    pruner = make_pruner(setup.pruner, setup.cfg, setup.space, startup_trials)
    study = optuna.create_study(storage=storage, study_name=setup.study_name, direction=direction,
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    if study_id is None:
        study.set_user_attr("config_name", config_name)
        study.set_user_attr("config", setup.config_path)
        study.set_user_attr("monitor", setup.monitor)
        study.set_user_attr("mode", setup.mode)
    return study


def _has_trial_runs(study_dir):
    return os.path.isdir(study_dir) and any(d.startswith("trial_") for d in os.listdir(study_dir))


def grid_remaining(study, setup):
    """Grid points not yet finished in this study (GridSampler's own bookkeeping)."""
    if setup.sampler != "grid":
        return None
    grid = check_grid(setup.space)
    done = {t.system_attrs.get("grid_id") for t in study.get_trials(deepcopy=False)
            if t.state.is_finished() and "grid_id" in t.system_attrs}
    return grid_size(grid) - len(done - {None})


class _Objective:
    """Runs one trial: suggest, train with the reporter, decide the state.

    The trial's values reach VisualDL's HParams view through the trainer: they are ``-o``
    overrides, and :func:`utils.training.vdl.run_hparams` adds every overridden key.
    """

    def __init__(self, setup, print_fn, train_print_fn):
        self.setup = setup
        self.print = print_fn
        self.train_print = train_print_fn
        self.last_errors = []

    def __call__(self, trial):
        import optuna

        from utils.config import load_config
        from utils.trainer import train

        s = self.setup
        params = {key: spec.suggest(trial) for key, spec in s.space.items()}
        name = f"trial_{trial.number}"
        run_dir = os.path.join(s.study_dir, name)
        trial.set_user_attr("config_params", params)
        trial.set_user_attr("overrides", s.overrides)
        trial.set_user_attr("run_dir", run_dir)
        trial.set_user_attr("steps", 0)
        reporter = TrialReporter(trial, s.monitor)
        try:
            cfg = load_config(s.config_path, [*s.overrides, *param_overrides(params), f"Global.run_name={name}",
                                              f"Global.output_dir={os.path.dirname(s.study_dir)}"])
            # The run goes to <output_dir>/<config>/tune_<study>/trial_<n>: the trainer joins
            # output_dir, the config name and the run name.
            cfg["_meta"]["config_name"] = os.path.basename(s.study_dir)
            metrics = train(cfg, print_fn=self.train_print, callbacks=[reporter])
        except UserError as e:
            trial.set_user_attr("steps", reporter.steps)
            return self._error(trial, str(e), e)
        except KeyboardInterrupt:
            trial.set_user_attr("steps", reporter.steps)
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); resume the run alone with "
                                               f"python tools/train.py --resume {run_dir}")
            raise
        except Exception as e:  # noqa: BLE001  a crash for one combination of values must not end a long study
            trial.set_user_attr("steps", reporter.steps)
            self.print(traceback.format_exc().rstrip())
            return self._error(trial, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}", e)
        self.last_errors = []
        trial.set_user_attr("steps", int(metrics["global_step"]))
        reason = failure_reason(metrics, reporter)
        if reporter.pruned_at and not reason:
            p = reporter.pruned_at
            trial.set_user_attr("fail_reason", f"pruned at evaluation {p['eval']} (epoch {p['epoch']}, step {p['step']}): "
                                               f"{s.monitor} {p['value']:.4f}")
            raise optuna.TrialPruned(trial.user_attrs["fail_reason"])
        if reason:
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailed(reason)
        value = float(metrics["best"][s.monitor])
        return value

    def _error(self, trial, message, exc):
        """Record a trial's error as FAIL; the same error 3 times in a row ends the study with it."""
        trial.set_user_attr("fail_reason", message)
        self.last_errors.append(message)
        if len(self.last_errors) >= MAX_SAME_ERRORS and len(set(self.last_errors[-MAX_SAME_ERRORS:])) == 1:
            if isinstance(exc, UserError):
                raise UserError(f"{MAX_SAME_ERRORS} trials in a row failed with: {message}") from None
            raise exc
        raise TrialFailed(message)


def _trial_line(study, t, monitor):
    """One console line per finished trial."""
    attrs = t.user_attrs
    params = " ".join(f"{k}={_fmt(v)}" for k, v in attrs.get("config_params", t.params).items())
    head = f"trial {t.number} {t.state.name}"
    if t.state.name == "COMPLETE":
        head += f" {monitor} {t.value:.4f}"
    elif attrs.get("fail_reason"):
        head += f": {attrs['fail_reason']}"
    try:
        best = study.best_trial
        tail = f"; best {best.value:.4f} (trial {best.number})"
    except ValueError:
        tail = ""
    secs = t.duration.total_seconds() if t.duration else 0.0
    return f"{head} [{params}] {attrs.get('steps', 0)} steps {secs:.1f}s{tail}"


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return _yaml_text(v) if not isinstance(v, str) else v


@contextlib.contextmanager
def _quiet_optuna():
    """Optuna logs every trial at INFO and a failed trial with its traceback at WARNING: we print
    our own one line per trial instead."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def run_study(setup, n_trials=None, seed=None, timeout=None, startup_trials=None, print_fn=print,
              train_print_fn=None, enqueue=()):
    """Run ``n_trials`` more trials of the study (continuing it if it exists), then write the results.

    Args:
        setup: from :func:`prepare`.
        n_trials: trials to run in this process; None = 20, or the unfinished grid points for
            the grid sampler; 0 = only (re)write the results.
        seed: sampler seed (default ``Global.seed``; with a storage URL given, fresh entropy), offset
            by the trials already in the study.
        timeout: stop starting new trials after this many seconds.
        startup_trials: TPE's random start-up trials and the median pruner's warm-up trials
            (Optuna's defaults 10 and 5 when None).
        print_fn: console output of the tuner.
        train_print_fn: console output of the trainer in each trial (default: print_fn, indented).
        enqueue: parameter dicts (config values) to try first, e.g. for tests.

    Returns:
        ``{"study": optuna.Study, "results": dict from write_results, "ran": trials run now}``.
    """
    with _quiet_optuna():
        study = open_study(setup, seed, startup_trials)
        before = len(study.trials)
        remaining = grid_remaining(study, setup)
        if remaining is not None:
            # GridSampler would start over on visited points once every point has run.
            if remaining == 0 and n_trials != 0:
                print_fn(f"grid complete: every grid point of study '{setup.study_name}' has run")
            n_trials = remaining if n_trials is None else min(n_trials, remaining)
        elif n_trials is None:
            n_trials = 20
        for params in enqueue:
            study.enqueue_trial({k: setup.space[k].encoded_choices()[setup.space[k].choices.index(v)]
                                 if setup.space[k].type == "categorical" else v for k, v in params.items()})
        print_fn(f"study '{setup.study_name}' ({setup.sampler} sampler, "
                 f"{setup.pruner if isinstance(setup.pruner, str) else type(setup.pruner).__name__} pruner, "
                 f"{'maximize' if setup.mode == 'max' else 'minimize'} {setup.monitor}): {before} trials so far, "
                 f"running {n_trials} more; storage {redact(setup.storage_url)}; runs in {setup.study_dir}")
        train_print = train_print_fn or (lambda *a, **k: print_fn("    " + " ".join(str(x) for x in a)))
        objective = _Objective(setup, print_fn, train_print)
        try:
            if n_trials:
                # No gc_after_trial: a full gc.collect() after each trial cost 0.23 s with Paddle loaded
                # (13% of a 5-epoch MLP trial on digits); Python's own collector frees the cycles.
                study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(TrialFailed,),
                               callbacks=[lambda st, t: print_fn(_trial_line(st, t, setup.monitor))])
        finally:
            results = write_results(study, setup, print_fn)
    return {"study": study, "results": results, "ran": len(study.trials) - before}


# ----------------------------------------------------------------------------- results

def trial_rows(study, space_keys=()):
    """One dict per trial: number, state, value, each parameter, steps, seconds, run_dir, reason."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    keys = list(space_keys)
    for t in trials:
        for k in t.user_attrs.get("config_params", t.params):
            if k not in keys:
                keys.append(k)
    for t in trials:
        params = t.user_attrs.get("config_params", t.params)
        row = {"number": t.number, "state": t.state.name, "value": t.value}
        for k in keys:
            row[k] = params.get(k, "")
        row["steps"] = int(t.user_attrs.get("steps", 0))
        row["seconds"] = round(t.duration.total_seconds(), 1) if t.duration else ""
        row["run_dir"] = t.user_attrs.get("run_dir", "")
        row["reason"] = t.user_attrs.get("fail_reason", "") if t.state.name != "COMPLETE" else ""
        rows.append(row)
    return rows, keys


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return _yaml_text(v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def write_best_config(study, setup, path):
    """``best_config.yml``: the config with the best trial's values, every key resolved, no ``_base_``.

    ``python tools/train.py -c best_config.yml`` trains it (into ``output/best_config/<timestamp>``).
    Returns the best FrozenTrial, or None when no trial completed.
    """
    from utils.config import dump_config, load_config

    try:
        best = study.best_trial
    except ValueError:
        return None
    params = best.user_attrs.get("config_params", best.params)
    overrides = best.user_attrs.get("overrides", setup.overrides)
    cfg = load_config(setup.config_path, [*overrides, *param_overrides(params)])
    dump_config(cfg, path)
    head = [f"# Best trial {best.number} of study '{setup.study_name}' ({setup.monitor} {best.value:.4f}), "
            f"config {setup.config_path}", "# " + " ".join(f"-o {o}" for o in [*overrides, *param_overrides(params)]),
            f"# Train it: python tools/train.py -c {path}"]
    with open(path, encoding="utf-8") as f:
        body = f.read()
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(head) + "\n" + body)
    os.replace(tmp, path)
    return best


def write_results(study, setup, print_fn=print):
    """Write ``trials.csv``, ``trials.md`` and ``best_config.yml`` into the study directory; print a summary.

    Returns:
        ``{"csv", "md", "best_config", "best", "warnings", "total_steps", "counts"}``.
    """
    os.makedirs(setup.study_dir, exist_ok=True)
    rows, keys = trial_rows(study, setup.space)
    cols = ["number", "state", "value", *keys, "steps", "seconds", "run_dir", "reason"]
    csv_path = os.path.join(setup.study_dir, "trials.csv")
    with open(csv_path + ".tmp", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (_yaml_text(v) if isinstance(v, (list, dict)) else ("" if v is None else v))
                        for k, v in r.items()})
    os.replace(csv_path + ".tmp", csv_path)

    best_path = os.path.join(setup.study_dir, "best_config.yml")
    best = write_best_config(study, setup, best_path)
    warn = []
    if best is not None:
        warn = edge_warnings(setup.space, best.user_attrs.get("config_params", best.params),
                             use_grid=setup.sampler == "grid")
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    total_steps = sum(r["steps"] for r in rows)

    md = [f"# Study `{setup.study_name}`", "",
          f"- config `{setup.config_path}`" + (f" with `{' '.join('-o ' + o for o in setup.overrides)}`" if setup.overrides else ""),
          f"- search space `{setup.space_path}`; sampler `{setup.sampler}`; "
          f"{'maximize' if setup.mode == 'max' else 'minimize'} validation `{setup.monitor}` (best over each run)",
          f"- storage `{redact(setup.storage_url)}`",
          f"- {len(rows)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f"; {total_steps} training steps in all"]
    if best is not None:
        md += [f"- best: trial {best.number}, {setup.monitor} {best.value:.4f}; "
               f"`python tools/train.py -c {best_path}`"]
    md += [f"- HParams: `visualdl --logdir {setup.study_dir} --port 8040`, tab HParams",
           "- any trial alone: `python tools/train.py --resume <run_dir>` (continue) or "
           "`python tools/train.py -c <run_dir>/config.yml -o Global.run_name=again` (re-run)", ""]
    if warn:
        md += ["## Warnings", ""] + [f"- {w}" for w in warn] + [""]
    md += ["## Trials", "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    best_n = best.number if best is not None else None
    for r in rows:
        cells = [_cell(r[c]) for c in cols]
        if r["number"] == best_n:
            cells[1] += " (best)"
        md.append("| " + " | ".join(cells) + " |")
    md_path = os.path.join(setup.study_dir, "trials.md")
    with open(md_path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    os.replace(md_path + ".tmp", md_path)

    print_fn(f"{len(rows)} trials (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
             + f"), {total_steps} training steps")
    if best is not None:
        params = " ".join(f"{k}={_fmt(v)}" for k, v in best.user_attrs.get("config_params", best.params).items())
        print_fn(f"best: trial {best.number} {setup.monitor} {best.value:.4f} [{params}] "
                 f"run {best.user_attrs.get('run_dir', '?')}")
        print_fn(f"best config: {best_path}  (python tools/train.py -c {best_path})")
    else:
        print_fn("no trial completed yet: no best_config.yml")
    for w in warn:
        print_fn(f"warning: {w}")
    print_fn(f"trials: {csv_path}, {md_path}")
    return {"csv": csv_path, "md": md_path, "best_config": best_path if best is not None else None,
            "best": best, "warnings": warn, "total_steps": total_steps, "counts": counts}
