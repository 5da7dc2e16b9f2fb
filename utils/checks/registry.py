"""The registry of checks: name -> (function, group, prerequisites), in run order, and the
selection of names or groups a user asks for."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from utils.checks.messages import MESSAGES
from utils.errors import UserError, did_you_mean

# name -> (function, group, names of checks that must not FAIL first), in run order
CHECKS: dict[str, tuple[Callable, str, tuple[str, ...]]] = {}
GROUPS: dict[str, list[str]] = {}    # group -> [names]

# The data checks the model and training checks need: with non-finite inputs, labels outside
# [0, C) or mixed input shapes their numbers would be meaningless, so they SKIP.
MODEL_REQUIRES = ("data_finite", "labels_in_range", "input_shapes")


def register_check(name: str, group: str, requires: Iterable[str] = ()) -> Callable[[Callable], Callable]:
    """Register ``fn(ctx) -> CheckResult`` under ``name`` in ``group`` (run in registration order)."""

    def deco(fn: Callable) -> Callable:
        CHECKS[name] = (fn, group, tuple(requires))
        GROUPS.setdefault(group, []).append(name)
        return fn

    return deco


def select_checks(only: Iterable[str] | None = None) -> list[str]:
    """Check names for ``only`` (names or group names, in registry order); UserError on unknown."""
    if not only:
        return list(CHECKS)
    wanted = set()
    for item in only:
        for name in str(item).split(","):
            name = name.strip()
            if not name:
                continue
            if name in CHECKS:
                wanted.add(name)
            elif name in GROUPS:
                wanted.update(GROUPS[name])
            else:
                t = MESSAGES["en"]["_unknown_check"]
                raise UserError(t.format(name=name, hint=did_you_mean(name, list(CHECKS) + list(GROUPS)),
                                         names=", ".join(CHECKS), groups=", ".join(GROUPS)))
    return [n for n in CHECKS if n in wanted]
