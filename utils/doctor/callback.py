"""The live training doctor: :class:`Doctor`, a hapi callback that collects a run's series as it
trains, and :func:`build_doctor`, which makes one from the ``Doctor`` config section.

It records the training loss per step, the validation history (as a listener of
``on_eval_end``), the global gradient norm every ``grad_every`` steps and per-layer
activation/gradient statistics every ``sample_every`` steps, stops at once on a non-finite loss
and names where the first non-finite value came from (through the probes of
:mod:`utils.doctor.probes`). The input batch is checked every step because ``relu(NaN)`` is 0 in
Paddle: a NaN pixel can leave the loss finite while the backward pass writes NaN into the first
layer's weights, after which the network silently outputs a constant.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import paddle
from paddle import nn
from paddle.callbacks import Callback

from utils.doctor.config_context import run_context
from utils.doctor.findings import SEVERITIES, Finding, diagnosis_dict, format_report
from utils.doctor.messages import UI
from utils.doctor.probes import FLOAT_DTYPES, GradMonitor, first_tensor, layer_kind, layer_stats, leaf_layers, locate_nonfinite
from utils.doctor.rules import NAN_SOURCES, diagnose
from utils.doctor.series import RunContext, RunSeries, interval_mean
from utils.errors import UserError, check_int
from utils.training.callbacks import Progress, request_stop
from utils.training.files import save_json

# The doctor's VisualDL tag group. VisualDL 2.5.3's SCALARS page sorts tag groups by name, case-insensitively, and
# opens only the first one: "doctor" came before "eval" and "train" and was the only group open on arrival.
# "training_doctor" sorts after "train" (it extends it), so eval opens first and train follows.
VDL_GROUP = "training_doctor"
GRAD_NORM_TAG = f"{VDL_GROUP}/grad_norm"
CONFIDENCE_TAG = f"{VDL_GROUP}/confidence"
DIAGNOSIS_TAG = f"{VDL_GROUP}/diagnosis"

# The doctor's entry points hapi, Paddle's forward hooks and the GradMonitor call, and the part of
# the doctor each is named by in the one warning its first failure prints. Looked up through
# Doctor.__getattribute__, so whatever the class attribute holds runs guarded.
GUARDED = {"on_train_begin": "hooks (on_train_begin)", "on_train_batch_begin": "hooks (on_train_batch_begin)",
           "on_train_batch_end": "hooks (on_train_batch_end)", "on_eval_end": "hooks (on_eval_end)",
           "on_train_end": "report (on_train_end)", "_keep_inputs": "input probe", "_network_output": "confidence probe",
           "_check_loss": "loss probe", "_layer_output": "layer probe", "record_grads": "gradient probe",
           "locate_now": "non-finite locator"}

# A finding printed during the run that a later, more specific one explains away (rules.diagnose drops
# divergence and oscillation once class-sorted batches are found).
REPLACED_BY = {"divergence": ("unshuffled_batches",), "oscillation": ("unshuffled_batches",)}


class Doctor(Callback):
    """The live training doctor (a hapi callback and a :class:`~utils.training.callbacks.PeriodicEval` listener).

    Args:
        progress: the run's :class:`~utils.training.callbacks.Progress` (global step and epoch).
        context: a :class:`~utils.doctor.series.RunContext`.
        run_dir: where ``diagnosis.json`` goes (None: not written).
        writer: a VisualDL ``LogWriter`` for ``doctor/*`` scalars and the report text (or None).
        print_fn: console output.
        lang: ``en`` or ``zh`` for what is printed and written.
        sample_every: per-layer activation and gradient statistics every N steps (and at the first and
            last step).
        grad_every: global gradient norm (and clipping) every N steps.
        verbose: 0 prints only warnings and errors; 1 also the informational findings at the end.
        sync_flag: data parallel: ``flag -> flag on any rank`` (``utils.training.ranks.any_rank``). A NaN
            input or loss is seen by one rank but the gradients are averaged over all: every rank
            must skip the update of that step, or the ranks' weights part.

    Hooks only route; :meth:`diagnose` decides (the pure rules over what was collected). The doctor
    never ends a run: the first exception in one of its hooks or probes (:data:`GUARDED`) is one
    warning line naming the part, the exception type and message, and switches the doctor off; a
    failing rule or VisualDL write switches off that rule or the doctor's VisualDL output only.
    """

    def __getattribute__(self, name: str) -> Any:
        attr = object.__getattribute__(self, name)
        if name not in GUARDED or not callable(attr):
            return attr

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if object.__getattribute__(self, "off"):
                return None
            try:
                return attr(*args, **kwargs)
            except Exception as e:  # the doctor must never take the run down
                if "KeyboardInterrupt" in f"{type(e).__name__} {e}":  # a Ctrl-C Paddle re-raised as its own error
                    raise KeyboardInterrupt from e
                self.fail(GUARDED[name], e)
                return None
        return guarded

    def fail(self, part: str, error: BaseException) -> None:
        """Report the doctor's first failure in one line and switch the doctor off; training continues."""
        if self.off:
            return
        self.off = True
        self.failure = f"{part}: {type(error).__name__}: {error}"
        self.print(f"warning: doctor {part} failed ({type(error).__name__}: {error}); "
                   f"the doctor is off for the rest of this run, training continues")
        try:
            self._unwire()
            self.write()  # diagnosis.json says the doctor stopped and why (with what it had found so far)
            self.sample_layers_now = self.measure_grads = self.nonfinite_pending = False
        except Exception:  # noqa: S110 - unhooking a half-wired network: nothing more can be done
            pass

    def __init__(self, progress: Progress, context: RunContext, run_dir: str | None = None, writer: Any = None,
                 print_fn: Callable[[str], Any] = print, lang: str = "en", sample_every: int = 50, grad_every: int = 10,
                 verbose: int = 1, sync_flag: Callable[[bool], bool] | None = None) -> None:
        super().__init__()
        self.sync_flag = sync_flag
        if lang not in UI:
            raise UserError(f"Doctor.lang: {lang!r} is not one of {list(UI)}")
        check_int("Doctor.sample_every", sample_every, 1)
        check_int("Doctor.grad_every", grad_every, 1)
        self.progress = progress
        self.context = context
        self.run_dir = run_dir
        self.writer = writer
        self.print = print_fn
        self.lang = lang
        self.sample_every = sample_every
        self.grad_every = grad_every
        self.verbose = verbose
        self.shown = SEVERITIES if verbose else ("error", "warn")
        self.series = RunSeries(clip={"samples": 0, "clipped": 0}, finished=False)
        self.reported = set()
        self.findings = []
        # per-step state
        self.sample_layers_now = False
        self.measure_grads = False
        self.nonfinite_pending = False
        self._last_inputs = None
        self._last_loss = None
        self._handles = []
        self._layer_handles = []
        self._layer_out = []
        self._monitor = None
        self._names = {}
        self._confidence = None
        self._input_rms = None
        self._replaying = False
        self.stop_reason = None
        self.off = False               # a hook failed: the doctor does nothing more
        self.failure = None            # ... which part, and the exception
        self.vdl_off = False           # a VisualDL write failed: no more doctor scalars
        self.rule_failures = {}        # rule name -> "Type: message" (that rule is skipped from then on)
        self.printed = {}              # finding id -> the Finding as printed live

    # -- wiring
    def on_train_begin(self, logs: dict | None = None) -> None:
        """Hook the network and the loss, and install the :class:`GradMonitor` in the optimizer."""
        net = self.model.network
        self._names = {p.name: n for n, p in net.named_parameters()}
        self._handles = [net.register_forward_pre_hook(self._keep_inputs),
                         net.register_forward_post_hook(self._network_output)]
        loss = getattr(self.model, "_loss", None)
        if isinstance(loss, nn.Layer):
            self._handles.append(loss.register_forward_post_hook(self._check_loss))
        opt = self.model._optimizer
        if opt is not None and not isinstance(opt._grad_clip, GradMonitor):
            self._monitor = GradMonitor(opt._grad_clip, self)
            opt._grad_clip = self._monitor

    def _unwire(self) -> None:
        for h in self._handles + self._layer_handles:
            h.remove()
        self._handles, self._layer_handles = [], []
        opt = getattr(self.model, "_optimizer", None) if self.model is not None else None
        if self._monitor is not None and opt is not None and opt._grad_clip is self._monitor:
            opt._grad_clip = self._monitor.inner
        self._monitor = None

    def _keep_inputs(self, layer: nn.Layer, inputs: tuple) -> None:
        if not layer.training or self._replaying:
            return  # validation passes go through the same network
        self._last_inputs = inputs  # a reference only: the batch is alive anyway
        x = first_tensor(inputs)
        if x is None or x.dtype not in FLOAT_DTYPES:
            return
        # One reduction per step: a NaN pixel can vanish behind a ReLU (relu(NaN) = 0 in Paddle)
        # and leave the loss finite while the gradients poison the first layer's weights.
        if not bool(paddle.isfinite(x).all()):
            self.nonfinite_pending = True
        if self.sample_layers_now:
            self._input_rms = x.astype("float32").square().mean().sqrt()

    def _network_output(self, layer: nn.Layer, inputs: tuple, output: Any) -> None:
        if self.sample_layers_now and layer.training and not self._replaying and self.context.task != "regression":
            logits = first_tensor(output)
            if logits is not None and logits.ndim == 2:
                with paddle.no_grad():
                    self._confidence = paddle.nn.functional.softmax(logits.astype("float32"), axis=-1).max(axis=-1).mean()

    def _check_loss(self, layer: nn.Layer, inputs: tuple, output: Any) -> None:
        t = first_tensor(output)
        if t is None:
            return
        v = float(t) if t.size == 1 else float(t.sum())
        self._last_loss = v
        if not math.isfinite(v):
            self.nonfinite_pending = True
        if self.measure_grads and len(inputs) >= 2 and isinstance(inputs[-1], paddle.Tensor):
            labels = inputs[-1].numpy().reshape(-1)
            if labels.size and np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0:
                share = float(np.bincount(labels).max() / labels.size)
                self.series.batch_purity.append((self.progress.global_step + 1, share, int(labels.size)))

    def _layer_hook(self, name: str) -> Callable[[nn.Layer, tuple, Any], None]:
        def hook(layer: nn.Layer, inputs: tuple, output: Any) -> None:
            self._layer_output(name, layer, output)
        return hook

    def _layer_output(self, name: str, layer: nn.Layer, output: Any) -> None:
        x = first_tensor(output)
        if x is not None and not self._replaying and x.dtype in FLOAT_DTYPES:
            k = layer_kind(layer)
            self._layer_out.append((name, k, layer_stats(x, k)))

    # -- the step
    def on_train_batch_begin(self, step: int, logs: dict | None = None) -> None:
        """Decide what this step measures; on a sampling step, hook every leaf layer."""
        s = self.progress.global_step + 1
        self.sample_layers_now = s == 1 or s % self.sample_every == 0 or s == self.context.total_steps
        self.measure_grads = self.sample_layers_now or s % self.grad_every == 0
        self._confidence = self._input_rms = None
        if self.sample_layers_now:
            self._layer_out = []
            for name, layer in leaf_layers(self.model.network):
                self._layer_handles.append(layer.register_forward_post_hook(self._layer_hook(name)))

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        """Record the step's loss and samples; stop the run on a non-finite loss or a located source."""
        s = self.progress.global_step
        for h in self._layer_handles:
            h.remove()
        self._layer_handles = []
        loss = logs.get("loss") if logs else None
        if loss is not None:
            self.series.train_loss.append((s, float(np.asarray(loss).reshape(-1)[0])))
        if self.sample_layers_now:
            self._collect_layers(s)
        self.sample_layers_now = self.measure_grads = False
        self.nonfinite_pending = False
        bad_loss = bool(self.series.train_loss) and not math.isfinite(self.series.train_loss[-1][1])
        new_event = self.series.nonfinite is not None and self.series.nonfinite.get("step") == s
        if (bad_loss or new_event) and self.stop_reason is None:
            self.stop(s)

    def stop(self, s: int) -> None:
        """Stop the run after this step: a non-finite loss, input, gradient or weight."""
        request_stop(self.model)
        self.report_new(("error",))
        order = [*NAN_SOURCES, "nan_loss"]
        nan = sorted((f for f in self.findings if f.id in order), key=lambda f: order.index(f.id))
        self.stop_reason = (f"doctor: {nan[0].message('en')}" if nan else f"doctor: non-finite values at step {s}")
        self.write()

    def _collect_layers(self, s: int) -> None:
        rows, counts = [], {}
        if self._layer_out:
            vals = paddle.stack([t for _, _, t in self._layer_out]).numpy()
            for (name, kind, _), (rms, absmax, dead) in zip(self._layer_out, vals):
                counts[name] = counts.get(name, 0) + 1
                label = name if counts[name] == 1 else f"{name}[{counts[name]}]"
                rows.append({"name": label, "type": kind, "rms": float(rms), "absmax": float(absmax),
                             "dead": None if dead < 0 else float(dead)})
        self._layer_out = []
        self.series.layers, self.series.layers_step = rows, s
        if self._input_rms is not None:
            self.series.input_rms = float(self._input_rms)
        if self._confidence is not None:
            c = float(self._confidence)
            self.series.confidence.append((s, c))
            self.scalar(CONFIDENCE_TAG, c, s)

    def record_grads(self, total: float, clipped: bool | None,
                     per_param: list[tuple[paddle.Tensor, float]] | None) -> None:
        """Called by :class:`GradMonitor` with the measured global norm of the current step."""
        s = self.progress.global_step + 1  # the step in progress
        self.series.grad_norm.append((s, total))
        if clipped is not None:
            self.series.clip["samples"] += 1
            self.series.clip["clipped"] += int(clipped)
        if per_param is not None:
            self.series.grads = [{"name": self._names.get(p.name, p.name), "rms": rms, "ndim": len(p.shape)}
                                 for p, rms in per_param]
            self.series.grads_step = s
        if math.isfinite(total):
            self.scalar(GRAD_NORM_TAG, total, s)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """A doctor scalar in VisualDL; the first failed write is one warning and ends the doctor's VisualDL output."""
        if self.writer is None or self.vdl_off:
            return
        try:
            self.writer.add_scalar(tag, value, step)
        except Exception as e:  # a logger never takes the run down
            self.vdl_off = True
            self.print(f"warning: doctor VisualDL scalars could not be logged ({type(e).__name__}: {e}); "
                       f"they are off for the rest of this run")

    def locate_now(self) -> None:
        """Called by :class:`GradMonitor` inside the non-finite step, before the update."""
        s = self.progress.global_step + 1
        if self.series.nonfinite is not None:
            return  # the first source is the one that matters
        self._replaying = True
        try:
            where = locate_nonfinite(self.model.network, self._last_inputs or (), self._last_loss)
        except Exception as e:  # the diagnosis must never take the run down
            where = {"kind": "unknown", "error": f"{type(e).__name__}: {e}"}
        finally:
            self._replaying = False
        where["step"] = s
        self.series.nonfinite = where
        self.nonfinite_pending = False

    def on_eval_end(self, logs: dict | None = None) -> None:
        """Record the evaluation, print new errors and warnings, rewrite diagnosis.json."""
        e = {"step": int(logs["step"]), "epoch": logs.get("epoch"), "loss": float(logs["loss"]),
             "acc": float(logs["acc"]) if "acc" in logs else None}
        if logs.get("mae") is not None:  # regression: the plateau rule watches the MAE
            e["mae"] = float(logs["mae"])
        prev = self.series.evals[-1]["step"] if self.series.evals else 0
        recent = []
        for st, v in reversed(self.series.train_loss):  # the steps since the previous evaluation
            if st <= prev:
                break
            recent.append((st, v))
        e["train_loss"] = interval_mean(recent, prev, e["step"])
        self.series.evals.append(e)
        self.report_new(("error", "warn"))
        self.write()

    def on_train_end(self, logs: dict | None = None) -> None:
        """Unhook, print the final report, write diagnosis.json and the VisualDL text."""
        self._unwire()
        self.series.finished = True
        self.findings = self.diagnose()
        # what was printed live stays in the summary: at its final severity, or marked as replaced
        shown = [f for f in self.findings if f.severity in self.shown or f.id in self.printed]
        earlier = self.superseded()
        if shown or earlier or self.verbose:
            self.print(self.summary(shown, earlier))
        self.write()
        if self.writer is not None and not self.vdl_off:
            try:
                self.writer.add_text(DIAGNOSIS_TAG, self.summary(self.findings, self.superseded()),
                                     step=max(self.progress.global_step, 0))
            except Exception as e:  # a logger never takes the run down
                self.vdl_off = True
                self.print(f"warning: doctor VisualDL report text could not be logged ({type(e).__name__}: {e})")

    # -- decisions and output
    def diagnose(self) -> list[Finding]:
        """The findings so far: every rule over what has been collected (a rule that raises is reported once
        and skipped from then on)."""
        before = set(self.rule_failures)
        found = diagnose(self.series, self.context, self.rule_failures)
        for name in sorted(set(self.rule_failures) - before):
            self.print(f"warning: doctor rule {name} failed ({self.rule_failures[name]}); "
                       f"that rule is off for the rest of this run, training continues")
        return found

    def summary(self, findings: list[Finding], earlier: list[Finding]) -> str:
        """The end report: the findings, then those printed during the run that no longer hold."""
        text = format_report(findings, self.lang)
        if earlier:
            text += "\n" + UI[self.lang]["earlier"] + "".join(
                "\n  " + f.text(self.lang).replace("\n", "\n  ") for f in earlier)
        return text

    def superseded(self) -> list[Finding]:
        """The findings printed during the run that the final ones no longer hold, each saying what replaced it
        (a finding of the same train/val loss pattern family, else none): the end summary holds all that was said."""
        final = {f.id for f in self.findings}
        patterns = ("still_learning", "overfitting", "data_problem", "bottleneck", "converged", "both_rising")
        out = []
        for fid, f in self.printed.items():
            if fid in final:
                continue
            later = [g.id for g in self.findings if fid in patterns and g.id in patterns
                     or g.id in REPLACED_BY.get(fid, ())]
            out.append(Finding(f.id, f.severity, dict(f.evidence), f.step, f.epoch,
                               superseded_by=later[0] if later else ""))
        return out

    def report_new(self, severities: tuple[str, ...]) -> list[Finding]:
        """Print the findings of these severities not printed before; return them."""
        self.findings = self.diagnose()
        new = [f for f in self.findings if f.severity in severities and f.severity in self.shown
               and f.id not in self.reported]
        for f in new:
            self.reported.add(f.id)
            self.printed[f.id] = f
            self.print("doctor: " + f.text(self.lang))
        return new

    def report(self) -> dict:
        """diagnosis.json's content (at the end with the findings printed earlier that no longer hold)."""
        out = diagnosis_dict(self.findings, self.lang, self.context, self.series)
        earlier = self.superseded() if self.series.finished else []
        if earlier:
            out["earlier_findings"] = [f.to_dict(self.lang) for f in earlier]
        if self.rule_failures:
            out["failed_rules"] = dict(self.rule_failures)
        if self.failure:
            out["doctor_failed"] = self.failure
        return out

    def write(self) -> None:
        """Write diagnosis.json into the run directory (when there is one)."""
        if self.run_dir:
            save_json(self.report(), os.path.join(self.run_dir, "diagnosis.json"))

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the evaluations, the findings already printed, the clip counts."""
        return {"evals": [dict(e) for e in self.series.evals], "reported": sorted(self.reported),
                "clip": dict(self.series.clip)}

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`."""
        self.series.evals = [dict(e) for e in state.get("evals", [])]
        self.reported = set(state.get("reported", []))
        self.series.clip = dict(state.get("clip") or {"samples": 0, "clipped": 0})


def build_doctor(cfg: dict, bundle: Any, network: nn.Layer, progress: Progress, steps_per_epoch: int,
                 run_dir: str | None = None, writer: Any = None, print_fn: Callable[[str], Any] = print,
                 sync_flag: Callable[[bool], bool] | None = None) -> Doctor:
    """The :class:`Doctor` of the ``Doctor`` config section for this run."""
    d = cfg["Doctor"]
    return Doctor(progress, run_context(cfg, bundle, network, steps_per_epoch), run_dir, writer, print_fn,
                  d["lang"], d["sample_every"], d["grad_every"], int(cfg["Global"]["verbose"]), sync_flag)
