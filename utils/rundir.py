"""The run directory: a new one per launch, owned by one live process, a resume checked against it.

* :func:`check_output_dir`: before any work, ``Global.output_dir`` must be creatable and writable
  (a read-only or missing parent is one line before the data loads, not a traceback an epoch later).
* :func:`new_run_dir`: ``<output_dir>/<config name>/<timestamp or run_name>``, created with
  ``os.mkdir``, which is atomic: of several launches in the same second each gets its own
  directory (``<timestamp>``, ``<timestamp>-2``, ...), none loses its run to another.
* :class:`RunLock`: ``<run>/.lock`` (pid, host, start time), created with ``O_EXCL``. A second
  writer, or ``--resume`` of a run that is still training, is refused with the process that holds
  it; a lock left by a process that is gone (killed, crashed) is taken over with a notice.
* :func:`resume_changes`: the keys whose change would alter the result of a resumed run (data,
  split, seed, batch size, model, optimizer, schedule, loss): ``--resume`` with any of them
  changed is refused with the list. ``Global.epochs`` may grow (train longer).
* ``metrics.json`` on every exit path (:func:`write_metrics` at each evaluation and at the end,
  :func:`close_on_error` after Ctrl-C, SIGTERM or an error), with a ``status``; a run whose final
  one is missing (:func:`final_metrics_written`) is finished by ``--resume``.

No Paddle here: it runs before the thread count is set.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile
import time

import yaml

from utils.errors import UserError
from utils.training.addon import TrainRun
from utils.training.files import pid_alive, save_json, strict_json

LOCK = ".lock"

# What a resume may not change: whole sections, and single keys of the others. Keys the run
# wrote into its config.yml from the data (class count, mean/std, target statistics) are left
# out: a config given with -c has `auto` there.
GUARDED_SECTIONS = ("Arch", "Optimizer", "LRScheduler", "Loss", "FineTune", "EMA")
GUARDED_KEYS = {
    "Global": ("seed", "task", "pretrained_model"),
    "Data": None,  # every key but the recorded ones below
    "DataLoader": ("batch_size", "shuffle", "drop_last", "batched"),
    "Transforms": ("train", "eval"),
    "AMP": ("level",),
    "Eval": ("tta",),  # best and early stopping compare evaluations: one kind of them per run
}
RECORDED = {("Data", "num_classes"), ("Data", "target_mean"), ("Data", "target_std"), ("Data", "download"),
            ("Data", "preload")}


def check_output_dir(cfg: dict) -> None:
    """Create ``Global.output_dir`` if needed and make sure a file can be written there; UserError otherwise."""
    out = cfg["Global"]["output_dir"]
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"Global.output_dir {out}: cannot write there ({e.strerror or e}): choose another "
                        f"with -o Global.output_dir=DIR") from None


def new_run_dir(cfg: dict) -> str:
    """``<output_dir>/<config name>/<timestamp or run_name>``, created now; refuses a non-empty ``run_name``."""
    g = cfg["Global"]
    parent = os.path.join(g["output_dir"], cfg["_meta"]["config_name"])
    os.makedirs(parent, exist_ok=True)
    if g["run_name"]:
        run_dir = os.path.join(parent, g["run_name"])
        if os.path.isdir(run_dir) and os.listdir(run_dir):
            raise UserError(f"run directory {run_dir} already exists and is not empty: choose another "
                            f"-o Global.run_name, or continue it with --resume {run_dir}")
        os.makedirs(run_dir, exist_ok=True)
        return run_dir
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for k in range(1, 1000):
        run_dir = os.path.join(parent, stamp if k == 1 else f"{stamp}-{k}")
        try:
            os.mkdir(run_dir)  # atomic: exactly one launch creates each name
            return run_dir
        except FileExistsError:
            continue
    raise UserError(f"{parent}: 999 runs started in the same second; set -o Global.run_name")


class RunLock:
    """``<run>/.lock`` held by this process while it writes the run directory."""

    def __init__(self, run_dir: str) -> None:
        self.path = os.path.join(run_dir, LOCK)
        self.held = False

    def acquire(self) -> str | None:
        """Take the lock; returns a notice when a stale lock was taken over. UserError when a live process holds it."""
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
        notice = None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.owner()
                if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == me["host"]:
                    self.held = True
                    return None
                if owner is not None and owner.get("host") != me["host"]:
                    raise UserError(f"{os.path.dirname(self.path)} is locked by process {owner.get('pid')} on "
                                    f"{owner.get('host')} (since {owner.get('started')}): if that run is no longer "
                                    f"alive, delete {self.path}") from None
                if owner is not None and pid_alive(int(owner.get("pid", -1))):
                    raise UserError(f"{os.path.dirname(self.path)} is in use by process {owner['pid']} "
                                    f"(started {owner.get('started')}): wait for it to end or stop it; two "
                                    f"processes writing one run would tear its checkpoints") from None
                who = f"process {owner['pid']}" if owner else "an unreadable lock"
                notice = f"took over the lock of {who}, which is no longer running"
                os.remove(self.path)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return notice
        raise UserError(f"{self.path}: could not take the lock (another process took it at the same moment)")

    def owner(self) -> dict | None:
        """The holder recorded in the lock file, or None when it cannot be read."""
        try:
            with open(self.path, encoding="utf-8") as f:
                owner = json.load(f)
            return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if self.held:
            self.held = False
            owner = self.owner()
            if owner is None or owner.get("pid") == os.getpid():
                try:
                    os.remove(self.path)
                except OSError:
                    pass


def resume_changes(run_dir: str, cfg: dict) -> list[str]:
    """``Section.key: saved -> now`` for each key that may not change on resume (empty when none did)."""
    path = os.path.join(run_dir, "config.yml")
    try:
        with open(path, encoding="utf-8") as f:
            saved = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"--resume: cannot read {path} ({e}): the run's config is needed to check the resume") from None
    out = []
    for sec in sorted(set(GUARDED_SECTIONS) | set(GUARDED_KEYS)):
        old, new = saved.get(sec) or {}, cfg.get(sec) or {}
        keys = GUARDED_KEYS.get(sec) or sorted(set(old) | set(new))
        for k in keys:
            if (sec, k) in RECORDED:
                continue
            a, b = old.get(k), new.get(k)
            if sec == "Data" and k == "data_dir" and a and b:
                a, b = os.path.abspath(a), os.path.abspath(b)
            if a != b:
                out.append(f"{sec}.{k}: {a!r} -> {b!r}")
    return out


def final_metrics_written(run_dir: str) -> bool:
    """True when the run's ``metrics.json`` is a final one (older runs wrote it only at the end: no status)."""
    try:
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
            status = json.load(f).get("status", "finished")
    except (OSError, ValueError, AttributeError):
        return False
    return status in FINAL_STATUSES


FINAL_STATUSES = ("finished", "stopped")  # also: running (written at each evaluation), interrupted, failed


def stop_reason(run: TrainRun) -> tuple[str | None, str | None]:
    """(why the run stopped, which part stopped it: nan_guard, early_stopping or an add-on's name), or (None, None)."""
    for name, fn in run.stoppers:
        reason = fn()
        if reason:
            return reason, name
    return None, None


def run_metrics(run: TrainRun, status: str, reason: str | None = None, stopped_by: str | None = None) -> dict:
    """The ``metrics.json`` content at this point of the run (any phase: missing parts are empty)."""
    cfg, p = run.cfg, run.progress
    history = run.evaluator.history if run.evaluator is not None else []
    epochs_run = 0 if p is None else p.epochs_done if (not reason or run.finishing) else p.epoch + 1
    return {
        "config": cfg["_meta"]["config_path"],
        "model": cfg["Arch"]["name"],
        "status": status,
        "epochs_run": epochs_run,
        "global_step": p.global_step if p is not None else 0,
        "stopped_early": bool(reason),
        "stop_reason": reason,
        "stopped_by": stopped_by,
        "final": history[-1] if history else None,
        "best": run.checkpointer.best_metrics if run.checkpointer is not None else None,
        "restored_best_weights": False,
        "wall_time_s": round(time.time() - run.t_start, 2),
        "fit_time_s": round(run.fit_time, 2),
        "eval_time_s": round(sum(h["eval_time"] for h in history), 2),
        "params": run.summary.get("params"),
        "flops": run.summary.get("flops"),
        "history": history,
    }


def write_metrics(run: TrainRun, status: str = "running", metrics: dict | None = None) -> None:
    """Write ``<run>/metrics.json`` atomically (``metrics``, or the run's metrics now with ``status``).

    Strict JSON: a NaN or infinite value is written as null, and ``non_finite`` lists where.
    """
    metrics = metrics if metrics is not None else run_metrics(run, status)
    nulled = strict_json(metrics)[1]
    save_json({**metrics, "non_finite": nulled} if nulled else metrics, os.path.join(run.run_dir, "metrics.json"))


def close_on_error(run: TrainRun, error: BaseException) -> None:
    """After Ctrl-C, SIGTERM or an error: ``metrics.json`` with ``interrupted``/``failed``, and how to resume."""
    if not (run.main and run.run_dir and os.path.isdir(run.run_dir)):
        return
    interrupted = isinstance(error, KeyboardInterrupt)
    try:
        metrics = run_metrics(run, "interrupted" if interrupted else "failed", *stop_reason(run))
        metrics["error"] = (str(error).splitlines() or [type(error).__name__])[0] or type(error).__name__
        write_metrics(run, metrics=metrics)
    except Exception as e:  # a full disk: say so, keep the original error
        run.print_fn(f"warning: could not write {run.run_dir}/metrics.json ({type(e).__name__}: {e})")
    if interrupted and run.store is not None and run.store.exists("latest"):
        run.print_fn(f"interrupted at step {run.progress.global_step if run.progress else 0}; continue from the last "
                     f"checkpoint with: python tools/train.py --resume {run.run_dir}")
