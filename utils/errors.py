"""User-facing errors: one line, what is wrong, where, how to fix it.

Tools catch :class:`UserError`, print its message without a traceback and exit
with status 2. Anything else is a bug in the template and keeps its traceback.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, Iterable


class UserError(Exception):
    """A mistake in the user's config, data or command line."""


class ConfigError(UserError):
    """A problem in a YAML config or an ``-o`` override."""


class DataError(UserError):
    """A dataset that is missing, unreadable or inconsistent with the config."""


def closest(name: object, candidates: Iterable[object]) -> str | None:
    """Return the candidate closest to ``name`` (for 'did you mean' hints), or None."""
    import difflib

    candidates = [str(c) for c in candidates]
    found = difflib.get_close_matches(str(name), candidates, n=1, cutoff=0.5)
    if found:
        return found[0]
    low = str(name).lower()
    for c in candidates:
        if c.lower() == low:
            return c
    return None


def did_you_mean(name: object, candidates: Iterable[object]) -> str:
    """' (did you mean 'x'?)' or '' when nothing is close."""
    match = closest(name, candidates)
    return f" (did you mean '{match}'?)" if match else ""


def check_int(key: str, value: object, minimum: int, hint: str = "") -> None:
    """Raise a one-line ConfigError unless ``value`` is an int (not a bool) >= ``minimum``.

    Args:
        key: the config key, named in the message (e.g. ``Doctor.sample_every``).
        hint: appended to the rule, e.g. ``" (0 = off)"``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}{hint}, got {value!r}")


def run_tool(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for tool entry points: UserError -> one line on stderr, exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        except BrokenPipeError:
            # `tool | head`: the reader left. Point stdout at /dev/null so the interpreter's final
            # flush does not raise again, and exit like a process killed by SIGPIPE (128 + 13).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)

    return wrapper
