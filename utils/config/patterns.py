"""The pattern language that names a model's parameters in the config (``FineTune``, ``Optimizer.param_groups``).

Patterns name parameters as ``network.named_parameters()`` does (``layer1.0.conv1.weight``,
``fc.bias``): a name without wildcards is that parameter or the whole layer (``layer1`` =
``layer1.*``), ``*?[]`` make an fnmatch glob over the full name (``*`` crosses dots), ``re:REGEX``
is a regular expression searched in the name. Pure Python: the config checks a group's shape at
load, the training parts match it against the model's names.
"""
from __future__ import annotations

import fnmatch
import numbers
import re
from typing import Callable, Iterable, Sequence

from utils.errors import ConfigError, did_you_mean

GROUP_KEYS = ("params", "lr_mult", "weight_decay_mult")


REGEX_PREFIX = "re:"


# ----------------------------------------------------------------------------- patterns

def compile_pattern(pattern: str, key: str = "FineTune") -> Callable[[str], bool]:
    """A predicate on parameter names for one pattern (see the module docstring)."""
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{key}: patterns are non-empty strings, got {pattern!r}")
    if pattern.startswith(REGEX_PREFIX):
        try:
            rx = re.compile(pattern[len(REGEX_PREFIX):])
        except re.error as e:
            raise ConfigError(f"{key}: bad regular expression {pattern!r}: {e}") from None
        return lambda name: rx.search(name) is not None
    if any(ch in pattern for ch in "*?["):
        return lambda name: fnmatch.fnmatchcase(name, pattern)
    return lambda name: name == pattern or name.startswith(pattern + ".")


def layers_of(names: Iterable[str]) -> list[str]:
    tops = []
    for n in names:
        top = n.split(".", 1)[0]
        if top not in tops:
            tops.append(top)
    return tops


def no_match(key: str, pattern: str, names: Sequence[str], why: str = "matches no parameter") -> ConfigError:
    tops = layers_of(names)
    hint = did_you_mean(pattern, tops + list(names))
    some = ", ".join(list(names)[:4])
    return ConfigError(f"{key}: pattern {pattern!r} {why}{hint}; top-level layers: {', '.join(tops)}; "
                       f"parameters look like {some}, ... ({len(names)} in all)")


def select(patterns: str | Iterable[str] | None, names: Sequence[str], key: str) -> list[str]:
    """Names matched by any of ``patterns``, in model order; a pattern matching nothing is a ConfigError."""
    if isinstance(patterns, str):
        patterns = [patterns]
    chosen = set()
    for pat in patterns or ():
        pred = compile_pattern(pat, key)
        hit = [n for n in names if pred(n)]
        if not hit:
            raise no_match(key, pat, names)
        chosen.update(hit)
    return [n for n in names if n in chosen]


def resolve_lr_mult(mapping: dict | None, names: Sequence[str], key: str = "FineTune.lr_mult") -> dict[str, float]:
    """{name: multiplier} from ``{pattern: multiplier}``; the first pattern (in the order written) wins.

    A pattern that matches nothing, or only names earlier patterns already took, is a ConfigError.
    """
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"{key}: expected a mapping {{pattern: multiplier}}, got {type(mapping).__name__}")
    out = {}
    for pat, m in mapping.items():
        if isinstance(m, bool) or not isinstance(m, (int, float)) or m < 0:
            raise ConfigError(f"{key}: the multiplier of {pat!r} must be a number >= 0, got {m!r}")
        pred = compile_pattern(pat, key)
        hit = [n for n in names if pred(n)]
        if not hit:
            raise no_match(key, pat, names)
        new = [n for n in hit if n not in out]
        if not new:
            raise no_match(key, pat, names, why=f"only matches parameters that earlier patterns took "
                                                 f"(first match wins: put {pat!r} before them)")
        for n in new:
            out[n] = float(m)
    return out


def check_param_groups(groups: object, where: str = "Optimizer.param_groups") -> list[dict]:
    """The groups with defaults filled in; a malformed group is a ConfigError naming it (no model needed)."""
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise ConfigError(f"{where}: expected a list of {{params: PATTERN, lr_mult: M, weight_decay_mult: W}}, "
                          f"got {type(groups).__name__}")
    out = []
    for i, g in enumerate(groups):
        at = f"{where}[{i}]"
        if not isinstance(g, dict):
            raise ConfigError(f"{at}: expected a mapping {{params: PATTERN, lr_mult: M, weight_decay_mult: W}}, "
                              f"got {g!r}")
        for k in g:
            if k not in GROUP_KEYS:
                raise ConfigError(f"{at}: unknown key {k!r}{did_you_mean(str(k), GROUP_KEYS)}; "
                                  f"a group has {', '.join(GROUP_KEYS)}")
        if "params" not in g:
            raise ConfigError(f"{at}: no 'params' (the parameter pattern(s) the group applies to, e.g. '*norm*.bias')")
        pats = [g["params"]] if isinstance(g["params"], str) else g["params"]
        if not isinstance(pats, list) or not pats:
            raise ConfigError(f"{at}.params: expected a pattern or a list of patterns, got {g['params']!r}")
        for p in pats:
            compile_pattern(p, f"{at}.params")
        mults = {}
        for k in ("lr_mult", "weight_decay_mult"):
            m = g.get(k, 1.0)
            if isinstance(m, bool) or not isinstance(m, numbers.Real) or not m >= 0 or m == float("inf"):
                raise ConfigError(f"{at}.{k}: expected a finite number >= 0, got {m!r}")
            mults[k] = float(m)
        out.append({"params": pats, **mults})
    return out
