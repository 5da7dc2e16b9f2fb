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

No Paddle here: it runs before the thread count is set.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile

import yaml

from utils.errors import UserError

LOCK = ".lock"

# What a resume may not change: whole sections, and single keys of the others. Keys the run
# wrote into its config.yml from the data (class count, mean/std, target statistics) are left
# out: a config given with -c has `auto` there.
GUARDED_SECTIONS = ("Arch", "Optimizer", "LRScheduler", "Loss", "FineTune", "EMA")
GUARDED_KEYS = {
    "Global": ("seed", "task", "pretrained_model"),
    "Data": None,  # every key but the recorded ones below
    "DataLoader": ("batch_size", "shuffle", "drop_last"),
    "Transforms": ("train", "eval"),
    "AMP": ("level",),
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


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
                if owner is not None and _alive(int(owner.get("pid", -1))):
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
