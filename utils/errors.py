"""User-facing errors: one line, what is wrong, where, how to fix it.

Tools catch :class:`UserError`, print its message without a traceback and exit
with status 2. Anything else is a bug in the template and keeps its traceback.
"""
from __future__ import annotations

import errno
import functools
import os
import signal
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


# Exit codes of the tools (README, "Errors"): 0 done, 2 a user mistake (one line), 3 a training run
# stopped by a non-finite loss, input or weight, 130 Ctrl-C, 143 SIGTERM, 141 a pipe reader left;
# 1 (with a traceback) is a bug in the template.
EXIT_USER_ERROR, EXIT_NON_FINITE, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_BROKEN_PIPE = 2, 3, 130, 143, 141
# OS errors that are the machine's state, not a bug: a full disk, a read-only or forbidden path.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by :func:`handle_sigterm`'s handler: handled like Ctrl-C."""


def handle_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` (after Paddle's import, whose own handler prints a C++ stack)."""
    def raise_terminated(signum: int, frame: object) -> None:
        raise Terminated("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, raise_terminated)


def run_tool(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for tool entry points: UserError -> one line on stderr, exit 2; signals -> 130/143."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        except Terminated:
            print("terminated (SIGTERM)", file=sys.stderr)
            sys.exit(EXIT_TERMINATED)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # `tool | head`: the reader left. Point stdout at /dev/null so the interpreter's final
            # flush does not raise again, and exit like a process killed by SIGPIPE (128 + 13).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except OSError as e:
            if e.errno not in DISK_ERRNOS:
                raise
            where = f" {e.filename}" if e.filename else ""
            print(f"error: cannot write{where}: {e.strerror}: free some space or choose another "
                  f"-o Global.output_dir", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper
