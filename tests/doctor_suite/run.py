"""Run the doctor suite: train every case in-process, read the doctor's findings, print the table.

    python tests/doctor_suite/run.py [--set dev|heldout|healthy|all] [--only ID,...] [--fast]

Each case trains under a temporary directory with VisualDL off; its findings are read from
``<run>/diagnosis.json`` (most severe first). A case that raises, or ends without metrics.json,
is a crash, never a pass.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.doctor_suite.causes import NAMES, Case, names_cause  # noqa: E402

COMMON = ("Global.verbose=0", "VisualDL.enable=false", "Global.print_flops=false")


@dataclass
class Result:
    case: Case
    findings: list[dict] = field(default_factory=list)   # most severe first, as diagnosis.json orders them
    crash: str | None = None
    seconds: float = 0.0

    @property
    def top(self) -> dict | None:
        return self.findings[0] if self.findings else None

    @property
    def top_id(self) -> str | None:
        return self.top["id"] if self.top else None

    @property
    def alarms(self) -> list[str]:
        """Ids of the WARN/ERROR findings."""
        return [f["id"] for f in self.findings if f["severity"] in ("error", "warn")]

    @property
    def anywhere(self) -> bool:
        """The cause is named by some finding, not necessarily the top one."""
        return self.case.cause is not None and any(f["id"] in NAMES[self.case.cause] for f in self.findings)

    @property
    def passed(self) -> bool:
        if self.crash:
            return False
        if self.case.cause is None:
            return not self.alarms
        return names_cause(self.case.cause, self.top_id)


def case_sets(names: tuple[str, ...] | list[str] = ("dev", "heldout", "healthy")) -> dict[str, list[Case]]:
    """The named sets (dev, heldout, healthy) by name."""
    import importlib

    return {s: importlib.import_module(f"tests.doctor_suite.{m}").CASES
            for s, m in (("dev", "dev_cases"), ("heldout", "heldout_cases"), ("healthy", "healthy_cases"))
            if s in names}


def quiet(*args, **kwargs) -> None:
    pass


def run_case(case: Case, workdir: str) -> Result:
    """Build and train ``case`` under ``workdir``; its findings, or the crash."""
    from tests.doctor_suite.builders import registries_restored  # deferred: builders import paddle
    from utils.config import load_config
    from utils.trainer import train

    t0 = time.time()
    res = Result(case)
    cwd = os.getcwd()
    try:
        os.chdir(ROOT)  # configs and their _base_ are relative to the project root
        data_dir = os.path.join(workdir, "data")
        out = os.path.join(workdir, "out")
        with registries_restored():
            extra = case.build(data_dir) if case.build else []
            cfg = load_config(os.path.join(ROOT, case.config), [*case.overrides, *extra, f"Global.output_dir={out}",
                                                                f"Global.run_name={case.id}", *COMMON])
            metrics = train(cfg, print_fn=quiet)
        run_dir = metrics.get("run_dir") or ""
        if not os.path.isfile(os.path.join(run_dir, "metrics.json")):
            res.crash = "no metrics.json"
        else:
            path = os.path.join(run_dir, "diagnosis.json")
            if not os.path.isfile(path):
                res.crash = "no diagnosis.json"
            else:
                with open(path, encoding="utf-8") as f:
                    res.findings = json.load(f)["findings"]
    except BaseException as e:  # noqa: BLE001 - a crash of any kind is a result here
        if isinstance(e, KeyboardInterrupt):
            raise
        tb = traceback.extract_tb(e.__traceback__)[-1]
        res.crash = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''} " \
                    f"({os.path.basename(tb.filename)}:{tb.lineno})"
    finally:
        os.chdir(cwd)
    res.seconds = time.time() - t0
    return res


def row(set_name: str, r: Result) -> str:
    """One Markdown table row."""
    top = f"{r.top['id']} ({r.top['severity']})" if r.top else "none"
    if r.crash:
        top = f"CRASH: {r.crash}"
    expected = r.case.cause or "(healthy: no warn/error)"
    anywhere = "-" if r.case.cause is None else ("yes" if r.anywhere else "no")
    if r.case.cause is None and r.alarms:
        anywhere = "alarms: " + ", ".join(r.alarms)
    return f"| {set_name} | {r.case.id} | {expected} | {top} | {anywhere} | {'PASS' if r.passed else 'fail'} | {r.seconds:.1f} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", default="all", choices=("dev", "heldout", "healthy", "all"))
    p.add_argument("--only", default="", help="comma-separated case ids")
    p.add_argument("--fast", action="store_true", help="skip the cases marked slow")
    p.add_argument("--xfail-lists", action="store_true",
                   help="also print MISSES / FALSE_ALARMS for tests/test_doctor_suite.py from this run")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    chosen = ["dev", "heldout", "healthy"] if a.set == "all" else [a.set]
    sets = {s: cases for s, cases in case_sets(chosen).items()}
    only = {s for s in a.only.split(",") if s}
    t0 = time.time()
    results: dict[str, list[Result]] = {}
    print("| set | case | expected cause | top finding | cause anywhere | pass | s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="doctor_suite_") as tmp:
        for s in chosen:
            for case in sets[s]:
                if (only and case.id not in only) or (a.fast and case.slow):
                    continue
                r = run_case(case, os.path.join(tmp, s, case.id))
                results.setdefault(s, []).append(r)
                print(row(s, r), flush=True)
    print()
    for s, rs in results.items():
        n = len(rs)
        if s == "healthy":
            print(f"- healthy clean: {sum(r.passed for r in rs)}/{n}")
        else:
            print(f"- {s} top-1: {sum(r.passed for r in rs)}/{n}; cause anywhere: {sum(r.anywhere for r in rs)}/{n}")
    crashes = [r.case.id for rs in results.values() for r in rs if r.crash]
    print(f"- crashes: {len(crashes)}{' (' + ', '.join(crashes) + ')' if crashes else ''}")
    print(f"- wall time: {time.time() - t0:.0f} s")
    if a.xfail_lists:
        print(xfail_lists(results))
    return 0


def xfail_lists(results: dict[str, list[Result]]) -> str:
    """The test file's MISSES and FALSE_ALARMS dicts as this run finds them."""
    def said(r: Result) -> str:
        if not r.top:
            return "no finding at all"
        later = [f["id"] for f in r.findings[1:] if r.case.cause and f["id"] in NAMES[r.case.cause]]
        return f"{r.top['id']} ({r.top['severity']})" + (f"; {later[0]} comes later" if later else "")

    lines = ["MISSES = {"]
    lines += [f'    "{r.case.id}": "{said(r)}",' for s in ("dev", "heldout") for r in results.get(s, [])
              if not r.passed and not r.crash]
    lines += ["}", "FALSE_ALARMS = {"]
    lines += [f'    "{r.case.id}": "{", ".join(r.alarms)}",' for r in results.get("healthy", []) if r.alarms]
    return "\n".join([*lines, "}"])


if __name__ == "__main__":
    sys.exit(main())
