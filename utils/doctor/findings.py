"""Findings and reports: what the doctor noticed (:class:`Finding`), sorted and rendered as console
text (:func:`format_report`) or as the content of ``diagnosis.json`` (:func:`diagnosis_dict`).

A finding carries numbers only (its evidence); the words come from :data:`~utils.doctor.messages.MESSAGES`
in the language asked for at rendering time, so one finding renders in English and Chinese alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from utils.doctor.messages import MESSAGES, UI, check_lang
from utils.doctor.series import RunContext, RunSeries, series_stats

SEVERITIES = ("error", "warn", "info")


def _plain(v: Any) -> Any:
    """Evidence values as JSON-friendly Python scalars."""
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
        return int(v)
    return v


@dataclass
class Finding:
    """One thing the doctor noticed: what (id), how bad, when, the numbers, and what to do."""

    id: str
    severity: str
    evidence: dict = field(default_factory=dict)
    step: int | None = None
    epoch: int | None = None
    # Set by the report, not the rule: the finding whose conflicting remedy was kept instead of this
    # one's, and why ("severity": it is more severe; "direct": measured directly, see resolve_lr_conflicts).
    set_aside_for: str | None = None
    set_aside_why: str | None = None
    # Printed during the run but not true at the end: "" = it no longer holds; else the id that replaced it.
    superseded_by: str | None = None

    def __post_init__(self) -> None:
        if self.id not in MESSAGES:
            raise ValueError(f"unknown finding id {self.id!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        self.evidence = {k: _plain(v) for k, v in self.evidence.items()}

    def _fill(self, template: str) -> str:
        return template.format(**{"step": self.step, "epoch": self.epoch, **self.evidence})

    def message(self, lang: str = "en") -> str:
        """What was found, with its numbers, in ``lang``."""
        return self._fill(MESSAGES[self.id][check_lang(lang)][0])

    def remedy(self, lang: str = "en") -> str:
        """What to do about it, in ``lang`` (or why its advice was set aside for another finding's)."""
        if self.set_aside_for:
            ui = UI[check_lang(lang)]
            return ui["set_aside"].format(other=self.set_aside_for, why=ui["why_" + (self.set_aside_why or "direct")])
        return self._fill(MESSAGES[self.id][check_lang(lang)][1])

    def note(self, lang: str = "en") -> str:
        """For a finding printed during the run that no longer holds at the end: what became of it."""
        if self.superseded_by is None:
            return ""
        ui = UI[check_lang(lang)]
        return ui["replaced"].format(other=self.superseded_by) if self.superseded_by else ui["resolved"]

    def text(self, lang: str = "en") -> str:
        """``[severity] id (where): message`` and an indented remedy line."""
        ui = UI[check_lang(lang)]
        where = ""
        if self.step is not None:
            where = ui["paren"].format((ui["where"] if self.epoch is not None else ui["where_step"]).format(
                step=self.step, epoch=self.epoch))
        return (f"[{ui['severity'][self.severity]}] {self.id}{where}{ui['colon']}{self.message(lang)}{self.note(lang)}\n"
                f"    {ui['remedy']}{self.remedy(lang)}")

    def to_dict(self, lang: str = "en") -> dict:
        """The finding with its message and remedy rendered in ``lang`` (an entry of diagnosis.json)."""
        d = {"id": self.id, "severity": self.severity, "step": self.step, "epoch": self.epoch,
             "evidence": dict(self.evidence), "message": self.message(lang) + self.note(lang), "remedy": self.remedy(lang)}
        for k in ("set_aside_for", "set_aside_why", "superseded_by"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        """The finding :meth:`to_dict` wrote (the rendered texts are dropped)."""
        return cls(d["id"], d["severity"], dict(d.get("evidence") or {}), d.get("step"), d.get("epoch"),
                   d.get("set_aside_for"), d.get("set_aside_why"), d.get("superseded_by"))


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Most severe first, then by step (findings without one first), then by id."""
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (order[f.severity], f.step if f.step is not None else -1, f.id))


def format_report(findings: list[Finding], lang: str = "en") -> str:
    """The findings as console text, most severe first."""
    ui = UI[check_lang(lang)]
    if not findings:
        return ui["none"]
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    lines = [ui["header"].format(n=len(findings), **counts)]
    lines += ["  " + f.text(lang).replace("\n", "\n  ") for f in sort_findings(findings)]
    return "\n".join(lines)


def diagnosis_dict(findings: list[Finding], lang: str, context: RunContext, series: RunSeries | None = None) -> dict:
    """diagnosis.json's content: counts, the rendered findings, the context and (live) the series' statistics."""
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    out = {"lang": lang, "counts": counts, "findings": [f.to_dict(lang) for f in sort_findings(findings)],
           "context": context.to_dict()}
    if series is not None:
        out["stats"] = series_stats(series)
    return out
