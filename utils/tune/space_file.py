"""Reading a search-space file into checked :class:`ParamSpec` entries (:func:`load_space`).

Every key is checked against the config schema, and ``Arch`` keys against the model factories'
arguments, before anything runs: a typo is a one-line ConfigError naming the file, line, key
and the fix, not a study of failed trials. The model checks need the model registry, so this
module imports paddle.
"""
from __future__ import annotations

import inspect
import math
from typing import Any

import yaml

import models  # noqa: F401  (importing the package registers every model family)
from models.registry import check_kwargs, model_factory
from utils.config import SCHEMA, model_kwargs, read_yaml_text
from utils.errors import ConfigError, did_you_mean
from utils.tune.space import ParamSpec, is_scalar, yaml_text

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
# Keys the tuner sets itself for every trial.
RESERVED = {"Global.output_dir", "Global.run_name", "Global.checkpoints"}


def _number(value: Any, where: str, key: str, field: str, integer: bool = False) -> float | int:
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


def _line_map(text: str) -> dict[str, int]:
    """Top-level key -> 1-based line number in the space file (best effort)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value}


def read_space_file(path: str) -> tuple[dict, dict[str, int]]:
    """The raw search-space mapping and its key -> line map; one-line ConfigError when unreadable."""
    data, text = read_yaml_text(path, f"search space file not found: {path} (pass a YAML file with --space, "
                                      f"e.g. configs/spaces/lr_wd_digits.yml)")
    if not data:
        raise ConfigError(f"{path}: the search space is empty: add entries like "
                          f"'Optimizer.lr: {{type: float, low: 1.0e-4, high: 0.1, log: true}}'")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must map config keys to ranges "
                          f"(Optimizer.lr: {{type: float, ...}}), got {type(data).__name__}")
    return data, _line_map(text)


def load_space(path: str, cfg: dict) -> dict[str, ParamSpec]:
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


def _parse_spec(key: str, body: Any, where: str) -> ParamSpec:
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
        enc = [c if is_scalar(c) else yaml_text(c) for c in choices]
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


def _check_against_config(spec: ParamSpec, space: dict[str, ParamSpec], cfg: dict) -> None:
    """Type-check a spec against its schema key, or an ``Arch`` model argument against the factories."""
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


def _model_names(space: dict[str, ParamSpec], cfg: dict) -> list[str]:
    return space["Arch.name"].choices if "Arch.name" in space else [cfg["Arch"]["name"]]


def model_takes(name: str, arg: str) -> bool:
    """Whether model ``name``'s factory takes the keyword argument ``arg``."""
    try:
        check_kwargs(name, {arg: None})
    except ConfigError:
        return False
    return True


def applies(key: str, model_name: str) -> bool:
    """Whether config key ``key`` means anything for model ``model_name``.

    Arch keys beyond the schema (``Arch.depth``, ``Arch.widths``) are factory arguments: a
    study over ``Arch.name`` applies each only to the families that take it. Every other key applies.
    """
    sec, _, k = key.partition(".")
    return not (sec == "Arch" and k not in SCHEMA["Arch"]) or model_takes(model_name, k)


def fit_arch(cfg: dict) -> list[str]:
    """Drop the Arch arguments ``cfg``'s model does not take (in place); returns the dropped keys.

    Used when a study searches ``Arch.name``: the config's Arch section was written for one
    family (``widths`` for cnn, ``depth`` for gMLP) and the others ignore what they do not take.
    """
    name = cfg["Arch"]["name"]
    dropped = [k for k in model_kwargs(cfg) if not model_takes(name, k)]
    for k in dropped:
        del cfg["Arch"][k]
    return [f"Arch.{k}" for k in dropped]


def _check_model_choices(spec: ParamSpec, space: dict[str, ParamSpec], cfg: dict) -> None:
    """Every model of ``Arch.name: {choices}`` exists; each of the config's own Arch arguments is
    taken by at least one of them (the others leave it out, see :func:`fit_arch`)."""
    searched = {s.key.split(".")[1] for s in space.values() if s.key.startswith("Arch.")}
    for name in spec.choices:
        try:
            model_factory(name)
        except ConfigError as e:
            raise ConfigError(f"{spec.where}: {spec.key} choice '{name}': {e}") from None
    for k in model_kwargs(cfg):
        if k not in searched and not any(model_takes(name, k) for name in spec.choices):
            raise ConfigError(f"{spec.where}: {spec.key}: the config sets Arch.{k}, which none of the models "
                              f"{spec.choices} takes: remove it from the config's Arch section or add a model "
                              f"that takes it")


def _check_model_argument(spec: ParamSpec, space: dict[str, ParamSpec], cfg: dict) -> None:
    """An ``Arch.<arg>`` beyond the schema: a model the study may build takes it (as a number when ranged).

    With ``Arch.name`` searched, the argument applies only to the families that take it; at
    least one of them must.
    """
    k = spec.key.split(".")[1]
    names = _model_names(space, cfg)
    takers = [n for n in names if model_takes(n, k)]
    if not takers:
        try:
            check_kwargs(names[0], {k: None})
        except ConfigError as e:
            also = f" (nor do the other searched models: {', '.join(names[1:])})" if len(names) > 1 else ""
            raise ConfigError(f"{spec.where}: {e}{also}") from None
    for name in takers:
        param = inspect.signature(model_factory(name)).parameters.get(k)
        default = param.default if param is not None else inspect.Parameter.empty
        if spec.type == "categorical" or default is inspect.Parameter.empty or default is None:
            continue
        if isinstance(default, (tuple, list)):
            raise ConfigError(f"{spec.where}: {spec.key}: model '{name}' takes a list here (default {list(default)}), "
                              f"not a number: use type: categorical, e.g. choices: [{yaml_text(list(default))}, ...]")
        if isinstance(default, (bool, str)) or callable(default):
            raise ConfigError(f"{spec.where}: {spec.key}: model '{name}' takes a {type(default).__name__} here, "
                              f"not a number: use type: categorical with choices")
        if spec.type == "float" and isinstance(default, int):
            raise ConfigError(f"{spec.where}: {spec.key}: model '{name}' takes an integer here (default {default}): "
                              f"use type: int")
