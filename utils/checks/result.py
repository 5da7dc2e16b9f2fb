"""What a check returns: the four statuses and :class:`CheckResult`, rendered from :data:`MESSAGES`."""
from __future__ import annotations

import dataclasses
from typing import Any

from utils.checks.messages import message

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


def _fmt(template: str | None, values: dict) -> str:
    return template.format(**values) if template else ""


@dataclasses.dataclass
class CheckResult:
    """What one check found.

    Attributes:
        name: check name (a key of :data:`CHECKS`).
        status: PASS, WARN, FAIL or SKIP.
        finding: id of the message template in :data:`MESSAGES`.
        values: the evidence as numbers and short strings (JSON-serializable).
        evidence: the evidence sentence, rendered.
        remedy: what to do, rendered ("" for PASS).
        seconds: time the check took.
    """
    name: str
    status: str
    finding: str
    values: dict
    evidence: str = ""
    remedy: str = ""
    seconds: float = 0.0

    def render(self, lang: str = "en") -> CheckResult:
        """Fill ``evidence`` and ``remedy`` from the templates of ``lang``; returns self."""
        ev, rem = message(self.finding, lang)
        self.evidence = _fmt(ev, self.values)
        self.remedy = _fmt(rem, self.values) if self.status != PASS else ""
        return self

    def to_dict(self) -> dict:
        """The result as plain data (the JSON report of tools/check.py)."""
        return dataclasses.asdict(self)


def make_result(name: str, status: str, finding: str, **values: Any) -> CheckResult:
    """An unrendered :class:`CheckResult`: the message ``finding`` filled from ``values`` later."""
    return CheckResult(name, status, finding, values)
