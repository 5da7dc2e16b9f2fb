"""Checkpoints in PaddleClas layout: ``<name>.pdparams`` (weights), ``.pdopt`` (optimizer with
its LR schedule), ``.pdstates`` (JSON: epoch, global step, early-stopping and best-metric state).

A checkpoint is whole or absent. :meth:`CheckpointStore.save` commits in four steps:

1. the weights and the optimizer are written to temporaries (``<file>.tmp<pid>``), synced and
   hashed: a failure here (a full disk, an exception in ``state_dict``) leaves the previous
   checkpoint whole;
2. ``<name>.pdstates``, the commit marker, is removed: from here on ``name`` is absent;
3. the temporaries are renamed over ``.pdparams`` / ``.pdopt`` (``os.replace`` is atomic);
4. ``.pdstates`` is written (temporary, then rename) with a manifest: the size and SHA-256 of
   each file (``"files"``) and of the state itself (``"state_sha256"``).

A kill anywhere leaves either the previous checkpoint whole or none under that name, never
epoch-k weights beside an epoch-(k-1) optimizer. :func:`verify` checks a checkpoint against its
manifest; :func:`resolve_resume` falls back to the newest whole checkpoint of the run. Checkpoints
written before the manifest existed are accepted when their files exist and load.
"""
from __future__ import annotations

import json
import os
import re

import paddle

from utils.errors import UserError
from utils.training.files import (
    file_digest,
    fsync_file,
    one_line,
    remove_file,
    remove_stale_temporaries,
    save_json,
    state_checksum,
    strict_json,
    temp_name,
)

SUFFIXES = (".pdparams", ".pdopt", ".pdstates")
MANIFEST_KEYS = ("files", "state_sha256")  # store metadata in .pdstates, not training state
_NAME = re.compile(r"^(latest|best_model|epoch_\d+)$")  # checkpoints a run resumes from (not the EMA files)
ADVICE = ("use another checkpoint of the run: --resume RUN takes the newest whole one, "
          "tools take one with --checkpoint latest|best_model|epoch_N")


class CheckpointStore:
    """Reads and writes named checkpoints in one run directory.

    Opening a store removes the stale temporaries of killed writers (``removed`` lists them).
    """

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.removed = remove_stale_temporaries(run_dir)

    def prefix(self, name: str) -> str:
        """Path of checkpoint ``name`` without its suffix (``RUN/best_model``)."""
        return os.path.join(self.run_dir, name)

    def save(self, name: str, network: paddle.nn.Layer, optimizer: paddle.optimizer.Optimizer | None = None,
             state: dict | None = None) -> list[str]:
        """Commit checkpoint ``name``: weights (``network`` is anything with ``state_dict()``), optimizer, then
        ``.pdstates`` with the manifest. Returns the JSON paths of ``state`` whose non-finite floats became null."""
        state = dict(state or {})
        clash = [k for k in MANIFEST_KEYS if k in state]
        if clash:
            raise ValueError(f"checkpoint state may not use the reserved keys {clash}")
        p = self.prefix(name)
        parts = {".pdparams": network.state_dict}
        if optimizer is not None:
            parts[".pdopt"] = optimizer.state_dict
        staged, files = {}, {}
        try:
            for suffix, get in parts.items():
                staged[suffix] = tmp = temp_name(p + suffix)
                paddle.save(get(), tmp)
                fsync_file(tmp)
                files[suffix] = file_digest(tmp)
            remove_file(p + ".pdstates")  # the commit marker: `name` is absent until the end of this block
            for suffix, tmp in staged.items():
                os.replace(tmp, p + suffix)
            if optimizer is None:
                remove_file(p + ".pdopt")  # an older optimizer would not go with these weights
            clean, nulled = strict_json(state)
            clean["files"] = files
            clean["state_sha256"] = state_checksum(clean)
            save_json(clean, p + ".pdstates")
        finally:
            for tmp in staged.values():
                remove_file(tmp)
        return nulled

    def exists(self, name: str) -> bool:
        """True when checkpoint ``name``'s weights are whole (see :func:`verify`)."""
        return verify(self.prefix(name), optimizer=False) is None


# ---------------------------------------------------------------------------------- verification
def _read_state(prefix: str) -> tuple[dict | None, str | None]:
    """(the parsed ``.pdstates``, None) or (None, why it is unusable)."""
    base = os.path.basename(prefix) + ".pdstates"
    path = prefix + ".pdstates"
    if not os.path.exists(path):
        return None, f"{base} is missing (the save did not finish)"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{base} is unreadable ({one_line(e)})"
    if not text.strip():
        return None, f"{base} is empty"
    try:
        state = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"{base} is not valid JSON ({e.msg}, line {e.lineno} column {e.colno}): truncated or damaged"
    if not isinstance(state, dict):
        return None, f"{base} holds a JSON {type(state).__name__}, not a checkpoint state"
    if any(k in state for k in MANIFEST_KEYS):
        files = state.get("files")
        if not isinstance(files, dict) or not all(isinstance(v, dict) and {"size", "sha256"} <= set(v) for v in files.values()):
            return None, f"{base} has a damaged manifest"
        try:
            ok = state.get("state_sha256") == state_checksum(state)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            return None, f"{base} does not match its checksum (damaged)"
    return state, None


def _load_problem(path: str) -> tuple[object, str | None]:
    """(what ``paddle.load`` read, None) or (None, why the file is unusable)."""
    base = os.path.basename(path)
    if not os.path.exists(path):
        return None, f"{base} is missing"
    if os.path.getsize(path) == 0:
        return None, f"{base} is empty"
    try:
        obj = paddle.load(path)
    except Exception as e:  # paddle.load raises ValueError, EOFError, UnpicklingError... on a damaged file
        return None, f"{base} is unreadable ({one_line(e)}): truncated or damaged"
    if not isinstance(obj, dict):
        return None, f"{base} holds a {type(obj).__name__}, not a state dict"
    return obj, None


def _file_problem(prefix: str, suffix: str, want: dict) -> str | None:
    base = os.path.basename(prefix) + suffix
    path = prefix + suffix
    if not os.path.exists(path):
        return f"{base} is missing"
    size = os.path.getsize(path)
    if size != want["size"]:
        return (f"{base} is empty" if size == 0 else
                f"{base} is {size} bytes, the checkpoint's manifest says {want['size']} (truncated or replaced)")
    if file_digest(path)["sha256"] != want["sha256"]:
        return f"{base} does not match its checksum (damaged)"
    return None


def _verify(prefix: str, optimizer: bool = True) -> tuple[dict | None, str | None]:
    state, reason = _read_state(prefix)
    if reason and not optimizer and not os.path.exists(prefix + ".pdstates"):
        _, reason = _load_problem(prefix + ".pdparams")  # weights alone (a download, another tool's save): must load
        return ({}, None) if reason is None else (None, reason)
    if reason:
        return None, reason
    name = os.path.basename(prefix)
    need = (".pdparams", ".pdopt") if optimizer else (".pdparams",)
    files = state.get("files")
    if files is None:  # written before the manifest: the files must exist and load
        for suffix in need:
            _, reason = _load_problem(prefix + suffix)
            if reason:
                return None, reason
        return state, None
    for suffix in need:
        if suffix not in files:
            return None, f"{name} was saved without {'optimizer state' if suffix == '.pdopt' else 'weights'}"
    for suffix in need:
        reason = _file_problem(prefix, suffix, files[suffix])
        if reason:
            return None, reason
    return state, None


def verify(prefix: str, optimizer: bool = True) -> str | None:
    """None when checkpoint ``prefix`` is whole; otherwise a short reason (``latest.pdopt is missing``).

    Whole: its ``.pdstates`` reads and matches its checksum, and each file the manifest lists has
    the recorded size and SHA-256. ``optimizer=False`` checks the weights only (evaluation,
    restoring the best weights); a ``.pdparams`` with no ``.pdstates`` beside it is then a plain
    weights file, whole when it loads. A checkpoint without a manifest (written before it existed)
    is whole when its files exist and load.
    """
    return _verify(prefix, optimizer)[1]


def _without_manifest(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in MANIFEST_KEYS}


def checkpoint_names(run_dir: str) -> list[str]:
    """Names of the resumable checkpoints with any file in ``run_dir``: latest, epoch_N, best_model."""
    try:
        found = {f.rsplit(".", 1)[0] for f in os.listdir(run_dir) if f.endswith(SUFFIXES)}
    except OSError:
        return []
    return sorted((n for n in found if _NAME.match(n)), key=_preference)


def _preference(name: str) -> tuple:
    """Among checkpoints of one step: latest, then epoch_N (highest N first), then best_model."""
    if name == "latest":
        return (0, 0)
    if name.startswith("epoch_"):
        return (1, -int(name[6:]))
    return (2, 0)


def _step(state: dict) -> int:
    progress = state.get("progress")
    try:
        return int(progress.get("global_step", 0)) if isinstance(progress, dict) else 0
    except (TypeError, ValueError):
        return 0


def _has_files(prefix: str) -> bool:
    return any(os.path.exists(prefix + s) for s in SUFFIXES)


def _strip_suffix(path: str) -> str:
    for suffix in SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


# ---------------------------------------------------------------------------------- resolving
def resolve_checkpoint(path: str, name: str = "latest") -> str:
    """A run directory or a checkpoint prefix/file -> checkpoint prefix (its weights file exists). Raises UserError."""
    if os.path.isdir(path):
        prefix = os.path.join(path, name)
        if not os.path.exists(prefix + ".pdparams"):
            have = sorted({f.rsplit(".", 1)[0] for f in os.listdir(path) if f.endswith(".pdparams")})
            raise UserError(f"{path}: no {name}.pdparams in this run directory"
                            + (f" (checkpoints here: {', '.join(have)})" if have else " (no checkpoints here: did the run save any?)"))
        return prefix
    path = _strip_suffix(path)
    if not os.path.exists(path + ".pdparams"):
        raise UserError(f"checkpoint not found: {path}.pdparams (pass a run directory or a checkpoint prefix such as output/x/20260101-120000/latest)")
    return path


def open_checkpoint(path: str, name: str = "best_model") -> str:
    """:func:`resolve_checkpoint`, then its weights verified: the prefix, or a UserError naming the
    damage and the whole checkpoints of the run to use instead (``--checkpoint NAME``)."""
    prefix = resolve_checkpoint(path, name)
    reason = verify(prefix, optimizer=False)
    if reason is None:
        return prefix
    run_dir = os.path.dirname(prefix) or "."
    others = [n for n in checkpoint_names(run_dir) if n != os.path.basename(prefix)
              and verify(os.path.join(run_dir, n), optimizer=False) is None]
    hint = (f"use another checkpoint with --checkpoint {others[0]} (whole here: {', '.join(others)})" if others
            else f"no other whole checkpoint in {run_dir}")
    raise UserError(f"{prefix} is damaged ({reason}): {hint}")


def resolve_resume(path: str) -> tuple[str, dict, str | None]:
    """The checkpoint to resume from: (prefix, its state, a one-line notice or None).

    ``path`` is a run directory (``latest`` is taken) or a checkpoint prefix/file. When that
    checkpoint is not whole (a missing ``.pdopt`` or ``.pdstates`` included), the newest whole one of
    the run among latest, epoch_N and best_model (by ``progress.global_step``) is taken and the
    notice says what was wrong and which one is used.

    Raises:
        UserError: no such path, no checkpoint, or none whole (each listed with its reason).
    """
    if os.path.isdir(path):
        run_dir, first = path, "latest"
    else:
        prefix = _strip_suffix(path)
        if not _has_files(prefix):
            resolve_checkpoint(path)  # raises its 'checkpoint not found' message
        run_dir, first = os.path.dirname(prefix) or ".", os.path.basename(prefix)
    order = [first, *[n for n in checkpoint_names(run_dir) if n != first]]
    if order == [first] and not _has_files(os.path.join(run_dir, first)):
        resolve_checkpoint(run_dir, first)  # raises its 'no checkpoints here' message
    problems, whole = {}, []
    for n in order:
        p = os.path.join(run_dir, n)
        state, reason = _verify(p) if _has_files(p) else (None, f"no {n} checkpoint")
        if reason:
            problems[n] = reason
        elif n == first:
            return p, _without_manifest(state), None
        else:
            whole.append((n, state))
    if not whole:
        listed = "; ".join(f"{n}: {r}" for n, r in problems.items())
        raise UserError(f"{run_dir}: no whole checkpoint to resume from ({listed}); "
                        f"start a new run with -c {os.path.join(run_dir, 'config.yml')}")
    name, state = max(whole, key=lambda w: (_step(w[1]), [-x for x in _preference(w[0])]))
    progress = state.get("progress") if isinstance(state.get("progress"), dict) else {}
    notice = (f"{os.path.join(run_dir, first)} is not usable ({problems[first]}); resuming from {name} instead "
              f"(epoch {progress.get('epochs_done', 0)} done, step {_step(state)})")
    return os.path.join(run_dir, name), _without_manifest(state), notice


def _trainer_written_problem(prefix: str) -> str | None:
    """:func:`verify` for a checkpoint the trainer wrote: its ``.pdstates`` must be there (a plain
    weights file is fine for the tools, but here a missing one means a save that did not finish)."""
    if not os.path.exists(prefix + ".pdstates"):
        return f"{os.path.basename(prefix)}.pdstates is missing (the save did not finish)"
    return verify(prefix, optimizer=False)


def check_best(store: CheckpointStore) -> str | None:
    """At resume: a warning line when ``best_model`` is there but damaged, else None.

    The spine then calls ``Checkpointer.forget_best()`` so the next evaluation writes a new one.
    """
    prefix = store.prefix("best_model")
    if not _has_files(prefix):
        return None
    reason = _trainer_written_problem(prefix)
    if reason is None:
        return None
    return f"{prefix} is damaged ({reason}): the next evaluation replaces it with the best weights from here on"


def restore_best(network: paddle.nn.Layer, store: CheckpointStore) -> tuple[bool, str | None]:
    """Load ``best_model``'s weights into ``network`` when whole: (restored, warning or None). Never raises
    for a missing or damaged file: the network then keeps its last weights and the warning says so."""
    prefix = store.prefix("best_model")
    if not _has_files(prefix):
        return False, None
    reason = _trainer_written_problem(prefix)
    if reason is None:
        try:
            load_weights(network, prefix)
            return True, None
        except UserError as e:
            reason = str(e)
    return False, f"{prefix} not restored ({reason}): the final weights are the last epoch's"


# ---------------------------------------------------------------------------------- loading
def _checked_load(prefix: str, suffix: str) -> dict:
    """``paddle.load`` of ``prefix + suffix``, checked against the manifest when there is one."""
    path = prefix + suffix
    state, _ = _read_state(prefix)
    files = (state or {}).get("files") or {}
    reason = _file_problem(prefix, suffix, files[suffix]) if suffix in files else None
    obj = None
    if reason is None:
        obj, reason = _load_problem(path)
    if reason:
        raise UserError(f"{path}: {reason}; {ADVICE}")
    return obj


def load_weights(network: paddle.nn.Layer, prefix: str) -> None:
    """Load ``prefix.pdparams`` strictly: every parameter must be present with its shape.

    Raises:
        UserError: the file is missing, empty, damaged (its manifest checksum) or does not fit the model.
    """
    state = _checked_load(prefix, ".pdparams")
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    bad = [f"{k} {list(state[k].shape)} vs model {list(own[k].shape)}" for k in own
           if k in state and hasattr(state[k], "shape") and list(state[k].shape) != list(own[k].shape)]
    if missing or bad:
        detail = "; ".join((["missing: " + ", ".join(missing[:5])] if missing else []) + (["shape mismatch: " + ", ".join(bad[:5])] if bad else []))
        raise UserError(f"{prefix}.pdparams does not fit the model ({detail}): was it trained with another Arch or num_classes?")
    network.set_state_dict(state)


def load_state(prefix: str) -> dict:
    """The training state in ``prefix.pdstates`` (without the manifest); {} when there is no such file.

    Raises:
        UserError: the file is empty, not JSON, or does not match its checksum.
    """
    if not os.path.exists(prefix + ".pdstates"):
        return {}
    state, reason = _read_state(prefix)
    if reason:
        raise UserError(f"{prefix}.pdstates: {reason}; {ADVICE}")
    return _without_manifest(state)


def load_optimizer(optimizer: paddle.optimizer.Optimizer, prefix: str) -> bool:
    """Load ``prefix.pdopt`` into ``optimizer`` (with its LR schedule); returns True.

    Raises:
        UserError: the file is missing (a resume would silently restart the optimizer), empty or damaged.
    """
    optimizer.set_state_dict(_checked_load(prefix, ".pdopt"))
    return True
