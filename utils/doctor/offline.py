"""The offline doctor: rebuild the series of a finished or crashed run directory and re-run the rules.

The sources, any of which may be missing: ``metrics.json`` (the evaluation history), the VisualDL
log (training loss per step, gradient norm, confidence) and ``diagnosis.json`` (the context and
the statistics only the live doctor could measure). ``tools/diagnose.py`` is the command line.
"""
from __future__ import annotations

import json
import os

import yaml

from utils.doctor.config_context import run_context
from utils.doctor.findings import Finding, diagnosis_dict, format_report, sort_findings
from utils.doctor.messages import check_lang
from utils.doctor.rules import STEP_RULES, diagnose
from utils.doctor.series import RunContext, RunSeries
from utils.errors import UserError
from utils.training.vdl_log import log_files, read_scalars


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _read_vdl(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of the run's VisualDL scalars (the newest log file); {} without one."""
    logs = log_files(run_dir)
    try:
        return read_scalars(logs[-1:])
    except Exception:  # a log cut off mid-record by a crash: use what the other files give
        return {}


def load_run(run_dir: str) -> tuple[RunSeries, RunContext, list[str]]:
    """(RunSeries, RunContext, sources) rebuilt from a run directory; UserError if it is not one."""
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir}: not a directory (pass a run directory such as output/gmlp_digits/<timestamp>)")
    metrics = _read_json(os.path.join(run_dir, "metrics.json"))
    diag = _read_json(os.path.join(run_dir, "diagnosis.json"))
    cfg = None
    cfg_path = os.path.join(run_dir, "config.yml")
    if os.path.isfile(cfg_path):
        try:
            with open(cfg_path, encoding="utf-8") as f:
                cfg = yaml.safe_load(f) or None
        except (OSError, yaml.YAMLError):
            cfg = None
    scalars = _read_vdl(run_dir)
    sources = [name for name, have in (("metrics.json", metrics), ("diagnosis.json", diag), ("config.yml", cfg),
                                       ("VisualDL log", scalars)) if have]
    if not (metrics or diag or scalars):
        raise UserError(f"{run_dir}: no metrics.json, diagnosis.json or VisualDL log here: not a run directory "
                        f"(pass one such as output/gmlp_digits/<timestamp>)")

    if diag and diag.get("context"):
        known = RunContext.__dataclass_fields__
        ctx = RunContext(**{k: v for k, v in diag["context"].items() if k in known})
    elif cfg:
        ctx = run_context(cfg)
    else:
        ctx = RunContext()
    stats = (diag or {}).get("stats") or {}
    series = RunSeries(clip=stats.get("clip") or {})
    series.train_loss = scalars.get("train/loss", [])
    if stats.get("evals"):  # the live doctor's: they keep the train loss mean even without a VisualDL log
        series.evals = [dict(e) for e in stats["evals"]]
    elif metrics and metrics.get("history"):
        series.evals = [{"step": h["step"], "epoch": h.get("epoch"), "loss": h.get("loss"), "acc": h.get("acc")}
                        for h in metrics["history"]]
    elif "eval/loss" in scalars:
        acc = dict(scalars.get("eval/acc", []))
        series.evals = [{"step": s, "epoch": ctx.epoch_of(s), "loss": v, "acc": acc.get(s)}
                        for s, v in scalars["eval/loss"]]
    # training_doctor/* since the group sorts after train/eval in VisualDL; doctor/* in older logs
    series.grad_norm = (scalars.get("training_doctor/grad_norm") or scalars.get("doctor/grad_norm")
                        or [tuple(p) for p in stats.get("grad_norm", [])])
    series.confidence = (scalars.get("training_doctor/confidence") or scalars.get("doctor/confidence")
                         or [tuple(p) for p in stats.get("confidence", [])])
    series.batch_purity = [tuple(p) for p in stats.get("batch_purity", [])]
    series.layers, series.layers_step = stats.get("layers") or [], stats.get("layers_step")
    series.input_rms = stats.get("input_rms")
    series.grads, series.grads_step = stats.get("grads") or [], stats.get("grads_step")
    series.nonfinite = stats.get("nonfinite")
    if not ctx.total_steps and metrics and metrics.get("global_step"):
        ctx.total_steps = int(metrics["global_step"])
    return series, ctx, sources


def diagnose_run(run_dir: str, lang: str = "en") -> dict:
    """Diagnose a finished or crashed run directory offline; returns the report dict.

    The findings come from re-running the rules on ``metrics.json`` (evaluation history), the
    VisualDL log (training loss per step, gradient norm, confidence) and the statistics the live
    doctor stored in ``diagnosis.json`` (per-layer, clipping, the non-finite source); any of them
    may be missing. ``report['text']`` is the console rendering in ``lang``.
    """
    check_lang(lang)
    series, ctx, sources = load_run(run_dir)
    failed = {}
    findings = diagnose(series, ctx, failed)
    if not series.train_loss:
        # No per-step loss (VisualDL was off): keep what the live doctor found from it.
        diag = _read_json(os.path.join(run_dir, "diagnosis.json")) or {}
        findings = sort_findings(findings + [Finding.from_dict(f) for f in diag.get("findings", [])
                                             if f.get("id") in STEP_RULES])
    out = diagnosis_dict(findings, lang, ctx)
    text = format_report(findings, lang)
    if failed:
        text += "".join(f"\nwarning: doctor rule {k} failed ({v}); it was skipped" for k, v in sorted(failed.items()))
        out["failed_rules"] = failed
    out.update(run_dir=run_dir, sources=sources, text=text)
    return out
