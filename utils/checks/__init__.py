"""Pre-flight checks: find a broken pipeline in seconds, before a long training run.

``run_checks(cfg)`` builds the data and the model of a config and runs the checks of
:data:`CHECKS` in order; each returns a :class:`CheckResult` with a status (PASS, WARN,
FAIL, or SKIP when a check it depends on failed), the evidence as numbers and, unless it
passed, a remedy. ``tools/check.py -c CFG`` prints them and exits 1 when one FAILs.

Checks and thresholds (why these values: see each function's docstring):

* data (every sample up to ``audit_samples`` per split, after the transform pipeline):
  ``data_finite`` (NaN/Inf: FAIL), ``labels_in_range`` (outside [0, C): FAIL),
  ``input_shapes`` (more than one shape, or not float32 CHW: FAIL), ``class_balance``
  (max/min count above 3:1: WARN; a class without a training sample: FAIL),
  ``train_val_duplicates`` (exact copies of training images in val/test: WARN, above 1% of
  the split FAIL), ``input_normalization`` (network input |mean| > 0.5 or std outside
  [0.5, 2]: WARN).
* model (fresh init, ``Global.seed``): ``loss_at_init`` (BatchNorm on batch statistics,
  dropout off; loss / ln(C) in [0.8, 1.25] PASS, up to 2 WARN, above 2 or below 0.8 FAIL,
  outputs that are already probabilities FAIL), ``gradient_flow`` (a trainable parameter
  with a zero, missing or non-finite gradient: FAIL; frozen ones: WARN),
  ``batch_independence`` (eval mode, d loss_i / d x_j for j != i above 1e-6 of the j = i
  gradient: FAIL).
* training: ``overfit_tiny`` (2 batches of 16, eval transform, no weight decay or label
  smoothing, Adam lr 1e-3, at most 300 steps: loss < 0.1 and 100% accuracy PASS; 100% with
  a loss below a quarter of the initial one WARN; else FAIL), ``input_baseline`` (the same
  steps on zeroed inputs: the real-input loss must be at most half of theirs),
  ``heldout_signal`` (50 steps on a few hundred samples: held-out accuracy or loss must beat
  the best input-independent predictor by 3 standard errors).

SKIP is a fourth status: a model or training check is skipped when a data check it needs
(``data_finite``, ``labels_in_range``, ``input_shapes``) FAILed, since its numbers would be
meaningless. A check that crashes is reported as a FAIL naming the exception.

Every user-facing sentence is a template in :data:`MESSAGES`, keyed by language and
finding id; a result keeps its ``finding`` and ``values`` and can be rendered again in
another language with :meth:`CheckResult.render`. The checks use their own RNG seeds and
re-seed Paddle's global generator; training seeds everything again at its start.
"""
# Importing the check modules registers their checks, in this order (data, model, training),
# which is the order they run in.
from utils.checks import data_checks, model_checks, training_checks
from utils.checks.context import DEFAULTS, CheckContext
from utils.checks.messages import MESSAGES, message
from utils.checks.registry import CHECKS, GROUPS, MODEL_REQUIRES, register_check, select_checks
from utils.checks.result import FAIL, PASS, SKIP, WARN, CheckResult, make_result
from utils.checks.runner import exit_status, format_result, run_checks, summarize
from utils.errors import UserError

__all__ = [
    "CHECKS", "DEFAULTS", "FAIL", "GROUPS", "MESSAGES", "MODEL_REQUIRES", "PASS", "SKIP", "WARN",
    "CheckContext", "CheckResult", "UserError", "data_checks", "exit_status", "format_result", "make_result",
    "message", "model_checks", "register_check", "run_checks", "select_checks", "summarize", "training_checks",
]
