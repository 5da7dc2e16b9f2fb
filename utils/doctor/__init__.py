"""The training doctor: findings about a run, live (a hapi callback) and offline (a run directory).

Three layers, each usable alone:

* **Findings** (:mod:`~utils.doctor.findings`, words in :mod:`~utils.doctor.messages`): an id, a
  severity, the step and epoch, an evidence dict of numbers, and a message and a remedy rendered
  in English or Chinese from one table keyed by finding id.
* **Rules** (:mod:`~utils.doctor.rules`, :mod:`~utils.doctor.probe_rules`, numbers in
  :mod:`~utils.doctor.thresholds`): pure functions over plain series
  (:mod:`~utils.doctor.series`) that return findings; :func:`diagnose` runs them all.
* **Collection**: :mod:`~utils.doctor.callback` (the live hapi callback, with the Paddle probes of
  :mod:`~utils.doctor.probes`) and :mod:`~utils.doctor.offline` (:func:`diagnose_run` over a
  finished or crashed run directory).
"""
from utils.doctor.callback import build_doctor
from utils.doctor.findings import SEVERITIES, Finding, format_report
from utils.doctor.messages import LANGS, MESSAGES, UI, message_fields
from utils.doctor.offline import diagnose_run, load_run
from utils.doctor.probe_rules import (
    rule_activations,
    rule_batch_purity,
    rule_confidence,
    rule_gradients,
    rule_layer_gradients,
)
from utils.doctor.probes import GradMonitor, locate_nonfinite
from utils.doctor.rules import (
    diagnose,
    rule_accuracy,
    rule_divergence,
    rule_loss_patterns,
    rule_nonfinite_loss,
    rule_nonfinite_source,
    rule_oscillation,
    rule_plateau,
    rule_target_scale,
)
from utils.doctor.series import RunContext, RunSeries
from utils.doctor.thresholds import DIVERGE_FACTOR, OSC_RATIO

__all__ = [
    "DIVERGE_FACTOR", "LANGS", "MESSAGES", "OSC_RATIO", "SEVERITIES", "UI",
    "Finding", "GradMonitor", "RunContext", "RunSeries",
    "build_doctor", "diagnose", "diagnose_run", "format_report", "load_run", "locate_nonfinite", "message_fields",
    "rule_accuracy", "rule_activations", "rule_batch_purity", "rule_confidence", "rule_divergence", "rule_gradients",
    "rule_layer_gradients", "rule_loss_patterns", "rule_nonfinite_loss", "rule_nonfinite_source", "rule_oscillation",
    "rule_plateau", "rule_target_scale",
]
