"""Reading a config: ``_base_`` inheritance, ``-o Key.sub=value`` overrides, validation against the schema.

Unknown keys and wrong types are errors that name the key, the file and line, and the closest
valid key. YAML is read with ``yaml.safe_load`` only; override values too.
"""
from __future__ import annotations

import copy
import inspect
import os
import re
from typing import TYPE_CHECKING, Any, Container, Sequence

import yaml

from utils.config.aliases import PADDLECLAS, key_hint, note, prefixes, rename_paddleclas, translate
from utils.config.ranges import check_values
from utils.config.schema import OPEN_SECTIONS, REGRESSION_DATASETS, REGRESSION_METRICS, SCHEMA, TASK_LOSSES, defaults
from utils.data.registry import read_text
from utils.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    import argparse


MERGE_TAG = "tag:yaml.org,2002:merge"  # '<<: *anchor' merges a mapping; its keys may be overridden


def _key_lines(path: str, text: str) -> dict[str, int]:
    """Map 'Section.key' -> 1-based line number in a YAML file (best effort)."""
    lines = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(n, prefix):
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                name = f"{prefix}{k.value}"
                lines.setdefault(name, k.start_mark.line + 1)
                walk(v, name + ".")

    walk(node, "")
    return lines


def _check_duplicate_keys(path: str, node: yaml.Node | None) -> None:
    """ConfigError at the second of two equal keys in one mapping (YAML itself keeps the last silently)."""
    def walk(n, prefix, seen_nodes):
        if id(n) in seen_nodes:  # an alias: its anchor was checked where it was written
            return
        seen_nodes.add(id(n))
        if isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, f"{prefix}[{i}]", seen_nodes)
        elif isinstance(n, yaml.MappingNode):
            first = {}
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != MERGE_TAG:
                    name = f"{prefix}.{k.value}" if prefix else k.value
                    ident = (k.tag, k.value)
                    if ident in first:
                        raise ConfigError(f"{path}:{k.start_mark.line + 1}: duplicate key '{name}' (first at line "
                                          f"{first[ident]}); YAML would silently keep only the last one: remove "
                                          f"one or merge them")
                    first[ident] = k.start_mark.line + 1
                    walk(v, name, seen_nodes)

    walk(node, "", set())


def read_yaml_text(path: str, missing: str, what: str = "YAML file") -> tuple[Any, str]:
    """(data, text) of a UTF-8 YAML file (a BOM dropped) read with ``yaml.safe_load``.

    Raises:
        ConfigError: ``missing`` when there is no such file; one line naming ``path`` when it is
            not UTF-8, does not parse (``path:line: malformed YAML: ...``) or repeats a key in one
            mapping (``path:line: duplicate key 'Section.key' (first at line N)``).
    """
    if not os.path.isfile(path):
        raise ConfigError(missing)
    text = read_text(path, what, ConfigError)
    try:
        _check_duplicate_keys(path, yaml.compose(text, Loader=yaml.SafeLoader))
        return yaml.safe_load(text), text
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{line}: malformed YAML: {problem} (check indentation and the ':' after each key)") from None


def _read_yaml(path: str, parent: str | None = None) -> tuple[dict, dict[str, int]]:
    what = "config file" if parent is None else "base config"
    problem = f"{what} {path} is a directory, not a YAML file" if os.path.isdir(path) else f"{what} not found: {path}"
    if parent is None:
        missing = f"{problem} (pass an existing YAML file with -c, e.g. configs/gmlp_digits.yml)"
    else:
        missing = f"{problem} (in _base_ of {parent}; its paths are relative to that file)"
    data, text = read_yaml_text(path, missing, "config")
    if data is None or data == {}:
        # an empty file would train the default model on the default data for 30 epochs
        raise ConfigError(f"config is empty: {path} (no sections; write at least the sections you change, "
                          f"e.g. '_base_: [_base_/digits.yml]' and an Arch: section, as configs/mlp_digits.yml does)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (Global:, Arch:, ...), got {type(data).__name__}")
    lines = _key_lines(path, text)
    for sec, body in data.items():
        if sec != "_base_" and body is not None and not isinstance(body, dict):
            raise ConfigError(f"{path}:{lines.get(str(sec), '?')}: section '{sec}' must be a mapping of keys "
                              f"(key: value lines indented below it), got {type(body).__name__} {body!r:.60}")
    return data, lines


def _merge(dst: dict, src: dict, top: bool = True) -> dict:
    """Recursively merge src into dst (mappings merge, everything else replaces).

    A section left empty in the file (``Optimizer:`` with nothing under it, which YAML reads as
    null) keeps what the ``_base_`` files set instead of wiping it.
    """
    for k, v in src.items():
        if top and v is None and isinstance(dst.get(k), dict):
            continue
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v, top=False)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def _load_raw(path: str, origin: dict[str, str], stack: tuple[str, ...] = ()) -> dict:
    """Load a file and its _base_ chain; record where each dotted key came from."""
    path = os.path.normpath(path)
    if path in stack:
        raise ConfigError(f"{path}: _base_ cycle: {' -> '.join(stack + (path,))}")
    data, lines = _read_yaml(path, stack[-1] if stack else None)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}:{lines.get('_base_', '?')}: _base_ must be a file name or a list of file names, "
                          f"got {bases!r:.60}")
    merged = {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), base)
        _merge(merged, _load_raw(base_path, origin, stack + (path,)))
    translated = rename_paddleclas(data, lambda name: f"{path}:{lines.get(name, '?')}")
    for sec, body in data.items():
        origin[sec] = f"{path}:{lines.get(str(sec), '?')}"
        if isinstance(body, dict):
            for k in body:
                origin[f"{sec}.{k}"] = f"{path}:{lines.get(f'{sec}.{k}', '?')}"
    origin.update(translated)
    return _merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'A.b=value' -> (['A', 'b'], parsed value). Values go through yaml.safe_load."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected KEY=VALUE, e.g. -o Optimizer.lr=0.01")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{text}': empty part in key '{key}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # an unquoted string with YAML punctuation: keep it as text
    return parts, value


def validate(cfg: dict, origin: dict[str, str] | None = None) -> dict:
    """Check sections, keys and types in place; fill defaults. Raises ConfigError."""
    origin = origin or {}
    out = defaults()
    for sec, body in cfg.items():
        where = origin.get(sec, "config")
        if sec not in SCHEMA:
            raise ConfigError(f"{where}: unknown section '{sec}'{key_hint('', sec, SCHEMA)}; valid sections: {', '.join(SCHEMA)}")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: section '{sec}' must be a mapping of keys, got {type(body).__name__}")
        for k, v in body.items():
            where = origin.get(f"{sec}.{k}", origin.get(sec, "config"))
            key = SCHEMA[sec].get(k)
            if key is None:
                if sec in OPEN_SECTIONS:
                    out[sec][k] = v  # model kwargs: the factory checks names and types
                    continue
                raise ConfigError(f"{where}: unknown key '{sec}.{k}'{key_hint(sec, k, SCHEMA[sec])}; "
                                  f"valid keys of {sec}: {', '.join(SCHEMA[sec])}")
            out[sec][k] = key.check(v, f"{where}: {sec}.{k}")
    explicit = {f"{sec}.{k}" for sec, body in cfg.items() if isinstance(body, dict) for k in body}
    check_values(out, origin)  # finite numbers everywhere, drop probabilities, the schedule's own check
    check_task(out, explicit, origin)
    check_ema(out, origin)  # EMA.decay in (0, 1), EMA.every_iters >= 1
    return out


def check_task(cfg: dict, explicit: Container[str] = (), origin: dict[str, str] | None = None) -> None:
    """``Global.task`` against the data, loss and monitored metrics; fills the regression defaults.

    Regression: ``Loss.name`` defaults to mse, ``EarlyStopping.monitor`` to mae and its mode to
    min, unless the config sets them (``explicit``: the 'Section.key' names it sets). A
    classification loss, dataset or metric under regression (and the reverse) is a one-line
    ConfigError naming both keys.
    """
    origin = origin or {}
    task = cfg["Global"]["task"]

    def fail(key, text):
        where = origin.get(key) or origin.get("Global.task") or "config"
        raise ConfigError(f"{where}: {key}: {text}")

    regression = task == "regression"
    data = cfg["Data"]["name"]
    if regression and data not in REGRESSION_DATASETS:
        fail("Data.name", f"{data!r} is a classification dataset but Global.task is regression "
                          f"(regression datasets: {', '.join(REGRESSION_DATASETS)})")
    if not regression and data in REGRESSION_DATASETS:
        fail("Data.name", f"{data!r} is a regression dataset (one real-valued target) but Global.task is "
                          f"classification: set Global.task: regression")
    if regression and cfg.get("Eval", {}).get("tta", "none") != "none":
        fail("Eval.tta", f"{cfg['Eval']['tta']!r} flips and shifts images; a regression table has none: "
                         f"set Eval.tta: none")
    if regression and "Loss.name" not in explicit:
        cfg["Loss"]["name"] = "mse"
    loss = cfg["Loss"]["name"]
    if loss not in TASK_LOSSES[task]:
        other = "regression" if not regression else "classification"
        fail("Loss.name", f"{loss!r} is a {other} loss but Global.task is {task}: use "
                          f"{' or '.join(TASK_LOSSES[task])}")
    if regression and cfg["Loss"]["label_smoothing"]:
        fail("Loss.label_smoothing", f"{cfg['Loss']['label_smoothing']} applies to classification only, but "
                                     f"Global.task is regression: remove it")
    es = cfg["EarlyStopping"]
    if regression:
        if "EarlyStopping.monitor" not in explicit:
            es["monitor"] = "mae"
        if "EarlyStopping.mode" not in explicit:
            es["mode"] = "min"
    # what a classification evaluation reports (utils/training/evaluate.py), 'ema_' versions with EMA
    reported = ["loss", "acc", *(f"acc_top{k}" for k in cfg["Metric"]["topk"] if k > 1)]
    for key, value in (("EarlyStopping.monitor", es["monitor"]), ("LRScheduler.monitor", cfg["LRScheduler"]["monitor"])):
        if regression and value not in REGRESSION_METRICS:
            fail(key, f"{value!r} is not a metric of Global.task regression (it reports {', '.join(REGRESSION_METRICS)})")
        if not regression and value in REGRESSION_METRICS and value != "loss":
            fail(key, f"{value!r} is a regression metric but Global.task is classification "
                      f"(it reports loss, acc, acc_topK)")
        if not regression and value.removeprefix("ema_") not in reported:
            fail(key, f"{value!r} is not a validation metric{did_you_mean(value, reported)}: classification reports "
                      f"{', '.join(reported)} (acc_topK for each K of Metric.topk)")


def check_ema(cfg: dict, origin: dict[str, str] | None = None) -> None:
    """Ranges of the EMA keys (utils/addons/ema.py); a ConfigError naming the key and where it was set."""
    origin = origin or {}
    e = cfg["EMA"]
    check_ema_decay(e["decay"], origin.get("EMA.decay", "config"))
    check_ema_every_iters(e["every_iters"], origin.get("EMA.every_iters", "config"))


def check_ema_decay(decay: object, where: str | None = None) -> float:
    """``EMA.decay`` as a float in (0, 1); the rule of the config and of ``utils.addons.ema.ModelEMA``.

    Raises:
        ConfigError: naming the key, prefixed with ``where`` it was set when given.
    """
    if not (isinstance(decay, (int, float)) and 0.0 < float(decay) < 1.0):
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}EMA.decay must be in (0, 1) (e.g. 0.999: an average over ~1000 steps), got {decay!r}")
    return float(decay)


def check_ema_every_iters(every_iters: object, where: str | None = None) -> int:
    """``EMA.every_iters`` as an int >= 1; the rule of the config and of ``utils.addons.ema.EMACallback``.

    Raises:
        ConfigError: naming the key, prefixed with ``where`` it was set when given.
    """
    prefix = f"{where}: " if where else ""
    # the config's schema already made it an int; a direct caller may pass anything
    if isinstance(every_iters, bool) or not isinstance(every_iters, int):
        raise ConfigError(f"{prefix}EMA.every_iters must be an integer >= 1, got {every_iters!r}")
    if every_iters < 1:
        raise ConfigError(f"{prefix}EMA.every_iters must be >= 1, got {every_iters!r}")
    return int(every_iters)


def load_config(path: str, overrides: Sequence[str] = ()) -> dict:
    """Load ``path`` with its ``_base_`` chain, apply ``-o`` overrides, validate.

    PaddleClas names (``Global.eval_interval``, ``-o Optimizer.lr.name=Cosine``) are read as ours
    with a note, or refused where the unit differs (utils/config/aliases.py). A run's saved
    ``config.yml`` keeps the name of the config it came from (:func:`dump_config`), so a rerun
    lands beside the original runs.

    Args:
        path: YAML file.
        overrides: iterable of 'Section.key=value' strings.

    Returns:
        A nested dict with every section and key of :data:`SCHEMA` present.
    """
    origin = {}
    raw = _load_raw(path, origin)
    file_arch = dict(raw.get("Arch") or {})
    overridden: list[str] = []
    for text in overrides:
        parts, value = parse_override(text)
        name = ".".join(parts)
        if name in PADDLECLAS or (len(parts) > 2 and ".".join(parts[:2]) in prefixes()):
            # -o Optimizer.lr.name=Cosine, -o Global.eval_interval=2: PaddleClas spellings
            for key, v in translate(name, value, {name: value}, f"override '{text}'").items():
                _set(raw, key, v)
                origin[key] = f"override -o {text}"
                overridden.append(key)
            continue
        if len(parts) != 2:
            raise ConfigError(f"override '{text}': keys are Section.key (two parts), got '{name}'")
        sec, k = parts
        if sec not in SCHEMA:
            raise ConfigError(f"override '{text}': unknown section '{sec}'{key_hint('', sec, SCHEMA)}")
        if k not in SCHEMA[sec] and sec not in OPEN_SECTIONS:
            raise ConfigError(f"override '{text}': unknown key '{sec}.{k}'{key_hint(sec, k, SCHEMA[sec])}")
        key = SCHEMA[sec].get(k)
        if key is not None and str in key.types and not isinstance(value, (str, type(None))) \
                and not isinstance(value, tuple(t for t in key.types if t is not str)):
            value = text.split("=", 1)[1].strip()  # '-o Global.run_name=off' means the text, not False
        _set(raw, name, value)
        origin[name] = f"override -o {text}"
        overridden.append(name)
    cfg = validate(raw, origin)
    ema = raw.get("EMA") or {}
    if "decay" in ema and "enable" not in ema and not cfg["EMA"]["enable"]:
        note("EMA.decay is set but EMA is off: PaddleClas turns EMA on by the section's presence, here set "
             "EMA.enable: true")
    cfg["_meta"] = {"config_path": path, "config_name": saved_config_name(path) or
                    os.path.splitext(os.path.basename(path))[0], "overridden": overridden}
    if "Arch.name" in overridden and raw["Arch"]["name"] != file_arch.get("name", SCHEMA["Arch"]["name"].default):
        # family-specific keys of the file's model (gmlp's patch_size under -o Arch.name=cnn): model_kwargs
        # drops those the new model does not take; keys given with -o on the same command stay errors
        cfg["_meta"]["arch_from_file"] = [k for k in file_arch if k not in SCHEMA["Arch"] and f"Arch.{k}" not in overridden]
    return cfg


def _set(raw: dict, key: str, value: Any) -> None:
    sec, k = key.split(".")
    if not isinstance(raw.get(sec), dict):
        raw[sec] = {}
    raw[sec][k] = value


# The first line dump_config writes into a run's config.yml; a strict load reads it as a comment.
CONFIG_NAME_LINE = re.compile(r"^# config_name: ([A-Za-z0-9][A-Za-z0-9_.+-]{0,127})\s*$")


def saved_config_name(path: str) -> str | None:
    """The original config's name recorded in a run's saved ``config.yml`` (its first line), or None.

    Only a file named ``config.yml`` is read so: a copy renamed to ``configs/my_exp.yml`` runs under
    its own name, as every other config does.
    """
    if os.path.basename(path) != "config.yml":
        return None
    try:
        with open(path, encoding="utf-8-sig") as f:
            m = CONFIG_NAME_LINE.match(f.readline())
    except (OSError, UnicodeDecodeError):
        return None  # _load_raw already read it; nothing to add
    return m.group(1) if m and ".." not in m.group(1) else None


def add_override_arg(parser: argparse.ArgumentParser,
                     help: str = "override a config key, e.g. -o Global.epochs=5 (repeatable)") -> None:
    """The ``-o KEY=VALUE`` option every tool takes (PaddleClas style), collected in ``args.override``."""
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE", help=help)


def model_kwargs(cfg: dict) -> dict:
    """The Arch keys that go to the model factory (everything but name/init).

    After ``-o Arch.name=X``, the file's keys that X does not take (left from the file's model) are
    dropped from ``cfg["Arch"]`` itself, with a one-line note, so the run's saved config is clean.
    """
    left = [k for k in (cfg.get("_meta") or {}).pop("arch_from_file", []) if k in cfg["Arch"]]
    if left:
        from models.registry import model_factory  # imports paddle: deferred until the thread count is set

        params = inspect.signature(model_factory(cfg["Arch"]["name"])).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            dropped = [k for k in left if k not in params]
            for k in dropped:
                del cfg["Arch"][k]
            if dropped:
                where = (cfg.get("_meta") or {}).get("config_path", "the config")
                note(f"-o Arch.name={cfg['Arch']['name']}: dropped {', '.join(f'Arch.{k}' for k in dropped)} "
                     f"set by {where} ({cfg['Arch']['name']} does not take them)")
    return {k: v for k, v in cfg["Arch"].items() if k not in SCHEMA["Arch"]}


def dump_config(cfg: dict, path: str) -> None:
    """Write the resolved config (no _base_, every key) so the run can be reproduced from it alone."""
    body = {k: v for k, v in cfg.items() if not k.startswith("_")}
    name = (cfg.get("_meta") or {}).get("config_name")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        if isinstance(name, str) and CONFIG_NAME_LINE.match(f"# config_name: {name}") and ".." not in name:
            # -c RUN/config.yml reruns under this name (saved_config_name), not under 'config'
            f.write(f"# config_name: {name}\n")
        yaml.safe_dump(body, f, sort_keys=False, default_flow_style=None, allow_unicode=True)
    os.replace(tmp, path)


