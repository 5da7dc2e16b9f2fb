"""Exponential moving average (EMA) of the weights, evaluated and checkpointed beside the raw ones.

* :class:`ModelEMA`: float32 shadow copies of every floating tensor of the network's
  ``state_dict`` -- the parameters AND the BatchNorm running statistics (``_mean``/``_variance``
  are parameters with ``stop_gradient=True`` in Paddle, not buffers). After an optimizer step,
  ``shadow += (1 - d) * (w - shadow)``; with ``warmup`` the decay of the n-th update (n from 0)
  is ``min(decay, (1 + n) / (10 + n))`` as in PaddleClas and TensorFlow's ``num_updates``, so the
  first averages follow the weights closely. The difference form keeps a frozen tensor bit-exact.
  :meth:`ModelEMA.apply_to` swaps the averages into the network (evaluation, saving) and puts
  the raw values back bit for bit.
* :class:`EMACallback`: updates every ``EMA.every_iters`` steps (skipping a step whose loss is
  not finite), evaluates both (``eval_fn`` wrapped by :meth:`EMACallback.wrap_eval`: the raw
  metrics keep their names, the EMA's get an ``ema_`` prefix, logged as ``eval_ema/<metric>``),
  and turns the run's Checkpointer into an :class:`EMACheckpointer`.
* :class:`EMACheckpointer`: at each evaluation ``best_model`` takes whichever of raw / EMA is
  better on the monitored metric, recorded as ``"weights": "ema"|"raw"`` in the best metrics
  (``acc``, ``loss``... are then those of the saved weights; ``raw_*`` and ``ema_*`` both stay).
  Every other checkpoint writes the averages beside it: ``ema.pdparams``/``.pdstates`` for
  ``latest``, ``epoch_N_ema.*`` for ``epoch_N``; a resume loads them, so the EMA continues exactly.
* Data parallel: the weights are identical on every rank after each step, so every rank's
  average is too, except the BatchNorm statistics (each rank's follow its shard): their averages
  are all-reduced wherever the trainer averages the running statistics (epoch end, before an
  evaluation). EMA is linear, so that equals the EMA of the rank-averaged statistics. Rank 0 writes.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Callable, Iterator

import numpy as np
import paddle
from paddle.callbacks import Callback

from utils.config import check_ema_decay, check_ema_every_iters
from utils.errors import ConfigError
from utils.training.addon import AddOn, TrainRun
from utils.training.callbacks import BestTracker, Progress, metric_value
from utils.training.checkpoint import CheckpointStore, load_state, verify
from utils.training.checkpointer import Checkpointer
from utils.training.ranks import average_tensors, changing_tensors, is_distributed, is_float

NOT_METRICS = ("epoch", "step", "samples", "eval_time")


def warmup_decay(decay: float, n: int, warmup: bool = True) -> float:
    """Decay of the update that follows ``n`` earlier ones."""
    return min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay


class ModelEMA:
    """Shadow (float32) averages of a network's floating ``state_dict`` tensors.

    Args:
        network: the ``paddle.nn.Layer`` (not the DataParallel wrapper).
        decay: in (0, 1); the average spans ~1 / (1 - decay) updates.
        warmup: decay of update n is ``min(decay, (1 + n) / (10 + n))``.
    """

    def __init__(self, network: paddle.nn.Layer, decay: float = 0.999, warmup: bool = True) -> None:
        self.network = network
        self.decay = check_ema_decay(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        with paddle.no_grad():
            self.shadow = {k: t.detach().astype("float32").clone()
                           for k, t in network.state_dict().items() if is_float(t)}

    def current_decay(self) -> float:
        """Decay the next update will use."""
        return warmup_decay(self.decay, self.updates, self.warmup)

    @paddle.no_grad()
    def update(self) -> None:
        """One step of the average towards the network's current values."""
        d = self.current_decay()
        live = self.network.state_dict()
        for k, s in self.shadow.items():
            w = live[k]
            w = w if w.dtype == s.dtype else w.astype(s.dtype)
            s.set_value(s + (w - s) * (1.0 - d))
        self.updates += 1

    @contextlib.contextmanager
    def apply_to(self, network: paddle.nn.Layer | None = None) -> Iterator[paddle.nn.Layer]:
        """Within the block the network holds the averages; afterwards its own values, bit for bit."""
        net = self.network if network is None else network
        live = net.state_dict()
        with paddle.no_grad():
            backup = {k: live[k].clone() for k in self.shadow}
            for k, s in self.shadow.items():
                live[k].set_value(s if live[k].dtype == s.dtype else s.astype(live[k].dtype))
        try:
            yield net
        finally:
            with paddle.no_grad():
                for k, b in backup.items():
                    live[k].set_value(b)

    def state_dict(self) -> dict:
        """The averages, under the network's own names (loadable as its weights)."""
        live = self.network.state_dict()
        out = dict(self.shadow)
        out.update({k: v for k, v in live.items() if k not in self.shadow})  # integer tensors, if any
        return out

    def load_state_dict(self, state: dict, updates: int | None = None) -> None:
        """Averages from a state dict (as :meth:`state_dict` writes it); ``updates``: the count to continue from."""
        missing = [k for k in self.shadow if k not in state]
        if missing:
            raise ConfigError(f"EMA weights do not fit the model (missing {', '.join(missing[:5])})")
        with paddle.no_grad():
            for k, s in self.shadow.items():
                v = state[k]
                v = v if isinstance(v, paddle.Tensor) else paddle.to_tensor(np.asarray(v))
                s.set_value(v.astype(s.dtype))
        if updates is not None:
            self.updates = int(updates)

    def finite(self) -> bool:
        """True when every average is finite."""
        return all(bool(paddle.isfinite(s).all()) for s in self.shadow.values())

    def running_stat_names(self) -> list[str]:
        """Names of the averaged tensors that are running statistics (BatchNorm mean/variance, buffers)."""
        ids = {id(t) for t in changing_tensors(self.network)}
        return [k for k, t in self.network.state_dict().items() if id(t) in ids and k in self.shadow]

    def average_running_stats(self) -> None:
        """Data parallel: the averaged BatchNorm statistics become their mean over ranks (float64 sums)."""
        if is_distributed():
            average_tensors([self.shadow[k] for k in self.running_stat_names()])


def ema_name(name: str) -> str:
    """File name of the averages saved with checkpoint ``name``: ``ema`` for latest, ``<name>_ema`` otherwise."""
    return "ema" if name == "latest" else f"{name}_ema"


class _Holder:
    def __init__(self, ema: ModelEMA) -> None:
        self.ema = ema

    def state_dict(self) -> dict:
        return self.ema.state_dict()


class EMACallback(Callback):
    """Updates the EMA after the optimizer steps; evaluation wrapper and checkpoint hooks.

    Place it after ``Progress`` and before ``PeriodicEval`` in the callback list. ``progress`` may
    come later, from the Checkpointer given to :meth:`attach`.
    """

    def __init__(self, ema: ModelEMA, progress: Progress | None = None, every_iters: int = 1,
                 store: CheckpointStore | None = None, write: bool = True) -> None:
        super().__init__()
        self.ema = ema
        self.progress = progress
        self.every_iters = check_ema_every_iters(every_iters)
        self.store = store
        self.write = write
        self.resumed_from = None

    # ------------------------------------------------------------------ training
    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(np.asarray(loss).reshape(-1)[0])):
            return  # the NaN guard stops the run; keep the averages clean
        if self.progress.global_step % self.every_iters == 0:
            self.ema.update()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.ema.average_running_stats()  # before the epoch-end evaluation and checkpoints

    # ------------------------------------------------------------------ evaluation
    def wrap_eval(self, eval_fn: Callable[[], dict]) -> Callable[[], dict]:
        """``eval_fn`` that evaluates the EMA first, then the raw weights (whose logits ``eval_fn`` keeps)."""
        def evaluate_both():
            self.ema.average_running_stats()
            with self.ema.apply_to():
                averaged = dict(eval_fn())
            out = dict(eval_fn())
            out.update({f"ema_{k}": v for k, v in averaged.items() if k not in NOT_METRICS})
            return out
        evaluate_both.inner = eval_fn
        return evaluate_both

    # ------------------------------------------------------------------ checkpoints
    def attach(self, checkpointer: Checkpointer) -> EMACheckpointer:
        """The run's Checkpointer as an :class:`EMACheckpointer` (same state), with this EMA in its stateful dict."""
        new = EMACheckpointer.__new__(EMACheckpointer)
        new.__dict__.update(checkpointer.__dict__)
        new.ema_cb = self
        new.stateful["ema"] = self
        if self.progress is None:
            self.progress = checkpointer.progress
        if self.store is None:
            self.store = checkpointer.store
        return new

    def save(self, name: str) -> None:
        """Write the averages that go with checkpoint ``name`` (rank 0, finite averages only)."""
        if self.write and self.store is not None and self.ema.finite():
            self.store.save(ema_name(name), _Holder(self.ema), None, {"ema": self.state_dict()})

    def state_dict(self) -> dict:
        return {"decay": self.ema.decay, "warmup": self.ema.warmup, "every_iters": self.every_iters,
                "updates": self.ema.updates, "global_step": self.progress.global_step}

    def load_state_dict(self, state: dict) -> None:
        pass  # the averages and their count come from the EMA file, read by resume()

    def resume(self, prefix: str, state: dict | None) -> str | None:
        """Load the averages saved with checkpoint ``prefix``; returns a warning line or None."""
        name = os.path.basename(prefix)
        path = os.path.join(os.path.dirname(prefix), ema_name(name))
        want = (state or {}).get("ema")
        if want is None:
            return f"{prefix}: the checkpoint has no EMA: the average starts from the resumed weights"
        problem = verify(path, optimizer=False) if os.path.exists(path + ".pdparams") else "missing"
        if problem and problem != "missing":  # torn or damaged: a fresh average, not bad weights
            return f"{path}: {problem}: the EMA starts from the resumed weights"
        saved = load_state(path).get("ema") if not problem else None
        if not saved or saved.get("updates") != want.get("updates") or saved.get("global_step") != want.get("global_step"):
            return (f"{path}.pdparams missing or not from the same step as {name}: "
                    f"the EMA starts from the resumed weights")
        self.ema.load_state_dict(paddle.load(path + ".pdparams"), updates=saved["updates"])
        self.resumed_from = path
        return None

    # ------------------------------------------------------------------ report
    def report(self, metrics: dict, monitor: str, mode: str, print_fn: Callable[..., None] = print) -> dict:
        """``metrics['ema']``: which weights were better at the best evaluation, the best of each; one line."""
        base = monitor[4:] if monitor.startswith("ema_") else monitor
        hist = metrics.get("history") or []
        tr_raw, tr_ema = BestTracker(mode), BestTracker(mode)
        for h in hist:
            if base in h:
                tr_raw.update(float(h[base]))
            if f"ema_{base}" in h:
                tr_ema.update(float(h[f"ema_{base}"]))
        best = metrics.get("best") or {}
        info = {"decay": self.ema.decay, "warmup": self.ema.warmup, "every_iters": self.every_iters,
                "updates": self.ema.updates, "monitor": base, "best_weights": best.get("weights"),
                f"best_raw_{base}": tr_raw.best, f"best_ema_{base}": tr_ema.best}
        metrics["ema"] = info
        if tr_raw.best is not None and tr_ema.best is not None:
            better = best.get("weights") or "raw"
            print_fn(f"EMA (decay {self.ema.decay:g}): best {base} raw {tr_raw.best:.4f}, EMA {tr_ema.best:.4f}; "
                     f"best_model holds the {'EMA' if better == 'ema' else 'raw'} weights")
        return info


class EMACheckpointer(Checkpointer):
    """A :class:`utils.training.callbacks.Checkpointer` whose ``best_model`` is the better of raw and EMA weights.

    Built by :meth:`EMACallback.attach` from the run's Checkpointer.
    """

    def on_eval_end(self, logs: dict | None = None) -> None:
        mon = self.monitor
        base = mon[4:] if mon.startswith("ema_") else mon
        raw_v = metric_value(logs, base, "EarlyStopping.monitor")
        ema_v = logs.get(f"ema_{base}")
        use_ema = ema_v is not None and math.isfinite(float(ema_v)) and (
            not math.isfinite(raw_v)
            or (float(ema_v) > raw_v if self.tracker.mode == "max" else float(ema_v) < raw_v))
        value = float(ema_v) if use_ema else raw_v
        if self.tracker.update(value):
            self.best_metrics = chosen_metrics(logs, use_ema)
            if self.save_best:
                if use_ema:
                    with self.ema_cb.ema.apply_to():
                        self._save("best_model")
                else:
                    self._save("best_model")

    def _save(self, name: str, finished: bool = False) -> bool:
        if name != "best_model":
            self.ema_cb.save(name)  # before the checkpoint: its .pdstates (written last) marks both complete
        return super()._save(name, finished)


def chosen_metrics(logs: dict, use_ema: bool) -> dict:
    """Best-metrics record: the chosen weights' metrics under the plain names, ``raw_*``/``ema_*`` kept."""
    out = {}
    raw = {k: v for k, v in logs.items() if not k.startswith("ema_")}
    ema = {k[4:]: v for k, v in logs.items() if k.startswith("ema_")}
    out.update(raw)
    for k, v in ema.items():
        if k not in NOT_METRICS:
            out[f"raw_{k}"] = raw.get(k)
            out[f"ema_{k}"] = v
            if use_ema:
                out[k] = v
    out["weights"] = "ema" if use_ema else "raw"
    return out


def build_ema(cfg: dict, network: paddle.nn.Layer, store: CheckpointStore | None = None, write: bool = True,
              resume: str | None = None, state: dict | None = None,
              print_fn: Callable[..., None] = print) -> EMACallback | None:
    """The run's :class:`EMACallback` from ``cfg['EMA']`` (None when disabled); on resume, its averages loaded."""
    e = cfg["EMA"]
    if not e["enable"]:
        return None
    cb = EMACallback(ModelEMA(network, e["decay"], e["warmup"]), None, e["every_iters"], store, write)
    if resume:
        warning = cb.resume(resume, state)
        if warning:
            print_fn(f"warning: {warning}")
    return cb


class WeightAverage(AddOn):
    """The ``EMA`` section as an add-on: the average is built on the loaded (or resumed) weights,
    evaluated beside the raw ones, and chosen for ``best_model`` when better."""

    name = "ema"

    @classmethod
    def create(cls, run: TrainRun) -> WeightAverage | None:
        return cls() if run.cfg["EMA"]["enable"] else None

    def prepare(self, run: TrainRun) -> dict:
        # every rank keeps the same average; rank 0 writes
        self.callback = build_ema(run.cfg, run.network, run.store, write=run.main, resume=run.resume,
                                  state=run.state, print_fn=run.print_fn)
        return {}

    def callbacks(self, run: TrainRun) -> dict[str, list]:
        run.checkpointer = self.callback.attach(run.checkpointer)  # best_model = better of raw/EMA
        run.eval_fn = self.callback.wrap_eval(run.eval_fn)
        return {"step": [self.callback]}

    def finish(self, run: TrainRun, metrics: dict) -> None:
        es = run.cfg["EarlyStopping"]
        self.callback.report(metrics, es["monitor"], es["mode"], run.print_fn)
