"""Checkpoints in PaddleClas layout: ``<name>.pdparams`` (weights), ``.pdopt`` (optimizer with
its LR schedule), ``.pdstates`` (JSON: epoch, global step, early-stopping and best-metric state).

Every file is written to a temporary name in the same directory and renamed over the old
one (``os.replace`` is atomic on POSIX), so a run killed mid-write leaves the previous
checkpoint intact. The ``.pdstates`` file is renamed last: its presence marks a checkpoint
whose weights and optimizer are complete.
"""
from __future__ import annotations

import json
import os

import paddle

from utils.errors import UserError

SUFFIXES = (".pdparams", ".pdopt", ".pdstates")


def _atomic(path, write):
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_json(obj: object, path: str) -> None:
    """Write JSON atomically."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=float)
    _atomic(path, write)


class CheckpointStore:
    """Reads and writes named checkpoints in one run directory."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def prefix(self, name: str) -> str:
        """Path of checkpoint ``name`` without its suffix (``RUN/best_model``)."""
        return os.path.join(self.run_dir, name)

    def save(self, name: str, network: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer | None = None,
             state: dict | None = None) -> None:
        """Write ``name``'s weights (``network`` is anything with ``state_dict()``), optimizer and state, state last."""
        p = self.prefix(name)
        _atomic(p + ".pdparams", lambda t: paddle.save(network.state_dict(), t))
        if optimizer is not None:
            _atomic(p + ".pdopt", lambda t: paddle.save(optimizer.state_dict(), t))
        save_json(state or {}, p + ".pdstates")

    def exists(self, name: str) -> bool:
        """True when checkpoint ``name`` is complete (its weights and its ``.pdstates`` are there)."""
        return os.path.exists(self.prefix(name) + ".pdstates") and os.path.exists(self.prefix(name) + ".pdparams")


def resolve_checkpoint(path: str, name: str = "latest") -> str:
    """A run directory or a checkpoint prefix/file -> checkpoint prefix. Raises UserError."""
    if os.path.isdir(path):
        prefix = os.path.join(path, name)
        if not os.path.exists(prefix + ".pdparams"):
            have = sorted({f.rsplit(".", 1)[0] for f in os.listdir(path) if f.endswith(".pdparams")})
            raise UserError(f"{path}: no {name}.pdparams in this run directory"
                            + (f" (checkpoints here: {', '.join(have)})" if have else " (no checkpoints here: did the run save any?)"))
        return prefix
    for suffix in SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    if not os.path.exists(path + ".pdparams"):
        raise UserError(f"checkpoint not found: {path}.pdparams (pass a run directory or a checkpoint prefix such as output/x/20260101-120000/latest)")
    return path


def load_weights(network: paddle.nn.Layer, prefix: str) -> None:
    """Load ``prefix.pdparams`` strictly: every parameter must be present with its shape."""
    state = paddle.load(prefix + ".pdparams")
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    bad = [f"{k} {list(state[k].shape)} vs model {list(own[k].shape)}" for k in own
           if k in state and list(state[k].shape) != list(own[k].shape)]
    if missing or bad:
        detail = "; ".join((["missing: " + ", ".join(missing[:5])] if missing else []) + (["shape mismatch: " + ", ".join(bad[:5])] if bad else []))
        raise UserError(f"{prefix}.pdparams does not fit the model ({detail}): was it trained with another Arch or num_classes?")
    network.set_state_dict(state)


def load_state(prefix: str) -> dict:
    """The ``.pdstates`` JSON of checkpoint ``prefix``; {} when there is none."""
    path = prefix + ".pdstates"
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_optimizer(optimizer: paddle.optimizer.Optimizer, prefix: str) -> bool:
    """Load ``prefix.pdopt`` into ``optimizer`` (with its LR schedule); False when there is no such file."""
    if os.path.exists(prefix + ".pdopt"):
        optimizer.set_state_dict(paddle.load(prefix + ".pdopt"))
        return True
    return False
