"""Running the registered checks in order (SKIP after a failed prerequisite, FAIL on a crash)
and printing their results."""
from __future__ import annotations

import textwrap
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from utils.build import select_device
from utils.checks.context import CheckContext
from utils.checks.messages import message
from utils.checks.registry import CHECKS, select_checks
from utils.checks.result import FAIL, PASS, SKIP, WARN, CheckResult, make_result
from utils.errors import UserError


def run_checks(cfg: dict, only: Iterable[str] | None = None, bundle: Any = None,
               model_fn: Callable[[], Any] | None = None, settings: dict | None = None, lang: str = "en",
               on_result: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Run the checks of ``only`` (names or groups; None = all) and return their results in order.

    Args:
        cfg: validated config (``utils.config.load_config``).
        only: iterable of check or group names (``data``, ``model``, ``training``).
        bundle: data to check instead of building it from ``cfg`` (tests inject faults this way).
        model_fn: zero-argument callable returning a fresh model instead of ``Arch``'s.
        settings: overrides of :data:`DEFAULTS`.
        lang: language of the rendered evidence and remedies.
        on_result: called with each :class:`CheckResult` as soon as it is known.

    Returns:
        list of :class:`CheckResult`. A check whose ``requires`` FAILed is SKIPped; a check that
        raises anything but a :class:`UserError` becomes a FAIL naming the exception.

    Raises:
        UserError: unknown check names, or a config/data problem met while building.
    """
    import paddle  # noqa: F401  (deferred until the thread count is set)

    names = select_checks(only)
    select_device(cfg["Global"]["device"])
    # BatchNorm in training mode warns "we now always track global mean and variance" once.
    warnings.filterwarnings("ignore", message="When training, we now always track global mean")
    ctx = CheckContext(cfg, bundle, model_fn, settings)
    results = []
    for name in names:
        fn, _, requires = CHECKS[name]
        t0 = time.time()
        failed = [d for d in requires if d in ctx.results and ctx.results[d].status == FAIL]
        if failed:
            res = make_result(name, SKIP, "skipped", dep=failed[0])
        else:
            try:
                res = fn(ctx)
            except UserError:
                raise
            except Exception as e:  # a crash is a finding too, but keep the traceback reachable
                tb = traceback.extract_tb(e.__traceback__)
                where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
                first = (str(e).strip().splitlines() or [""])[0][:300]
                res = make_result(name, FAIL, "check_error", error=f"{type(e).__name__}: {first}{where}", check=name)
                res.values["traceback"] = traceback.format_exc()
        res.seconds = round(time.time() - t0, 3)
        res.render(lang)
        ctx.results[name] = res
        results.append(res)
        if on_result is not None:
            on_result(res)
    return results


def format_result(res: CheckResult, lang: str = "en", width: int = 110) -> str:
    """'PASS  name  evidence' plus, for WARN/FAIL/SKIP, an indented remedy paragraph."""
    name_w = max(len(n) for n in CHECKS)
    lines = [f"{res.status:<4}  {res.name:<{name_w}}  {res.evidence}"]
    if res.remedy and res.status != PASS:
        label = message("_remedy", lang)
        indent = " " * 6
        lines += textwrap.wrap(f"{label}: {res.remedy}", width=width, initial_indent=indent,
                               subsequent_indent=indent + "  ")
    return "\n".join(lines)


def summarize(results: list[CheckResult], seconds: float | None = None, lang: str = "en") -> str:
    """The closing line: counts per status, the total time and the verdict."""
    counts = {s: sum(r.status == s for r in results) for s in (PASS, WARN, FAIL, SKIP)}
    total = seconds if seconds is not None else sum(r.seconds for r in results)
    line = message("_summary", lang).format(n_pass=counts[PASS], n_warn=counts[WARN], n_fail=counts[FAIL],
                                  n_skip=counts[SKIP], seconds=total)
    return line + "\n" + message("_verdict_fail" if counts[FAIL] else "_verdict_ok", lang)


def exit_status(results: list[CheckResult]) -> int:
    """0 when no check FAILed, 1 otherwise (2, a user error, is the tool's)."""
    return 1 if any(r.status == FAIL for r in results) else 0
