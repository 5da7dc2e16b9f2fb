"""Files written whole: atomic writes (temporary, fsync, rename), SHA-256 digests, strict JSON,
and the temporaries a killed writer leaves behind.

No Paddle here: ``metrics.json`` and ``.pdstates`` are plain JSON written through :func:`save_json`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from typing import Callable

import numpy as np

TEMP_NAME = re.compile(r"^.+\.tmp(\d+)$")


def temp_name(path: str) -> str:
    """The temporary this process writes ``path`` through (``<path>.tmp<pid>``)."""
    return f"{path}.tmp{os.getpid()}"


def remove_file(path: str) -> None:
    """Remove ``path`` if it exists."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def fsync_file(path: str) -> None:
    """Flush ``path`` to the disk (a rename after a crash must not publish an empty file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(path: str) -> dict:
    """``{size, sha256}`` of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"size": os.path.getsize(path), "sha256": h.hexdigest()}


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)``, then fsync and rename over ``path``: the old file or the new one, never half of one."""
    tmp = temp_name(path)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        remove_file(tmp)


def one_line(e: BaseException) -> str:
    """An exception as one short line for an error message."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:120]}" if text else type(e).__name__


def _json_key(k: object) -> str:
    if isinstance(k, str):
        return k
    return json.dumps(k) if isinstance(k, (bool, int, float)) or k is None else str(k)


def strict_json(obj: object) -> tuple[object, list[str]]:
    """``obj`` as plain JSON values (str keys, NumPy scalars and arrays converted), non-finite floats
    as None; returns it and the JSON paths that were nulled (``history[3].loss``)."""
    nulled = []

    def walk(x, where):
        if x is None or isinstance(x, (str, bool)):
            return x
        if isinstance(x, (int, np.integer)) and not isinstance(x, np.bool_):
            return int(x)
        if isinstance(x, np.bool_):
            return bool(x)
        if isinstance(x, dict):
            return {_json_key(k): walk(v, f"{where}.{_json_key(k)}" if where else _json_key(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, np.ndarray):
            return walk(x.tolist(), where)
        x = float(x)  # floats, NumPy floats, one-element tensors
        if math.isfinite(x):
            return x
        nulled.append(where or "$")
        return None

    return walk(obj, ""), nulled


def save_json(obj: object, path: str) -> list[str]:
    """Write strict JSON atomically: non-finite floats become ``null``. Returns the nulled JSON paths."""
    clean, nulled = strict_json(obj)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(clean, f, indent=2, allow_nan=False)
    atomic_write(path, write)
    return nulled


def state_checksum(state: dict) -> str:
    """SHA-256 of a state dict's canonical JSON, without its own ``state_sha256``."""
    body = {k: v for k, v in state.items() if k != "state_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` (of this machine) is running."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(run_dir: str) -> list[str]:
    """Remove ``*.tmp<pid>`` files of ``run_dir`` left by killed writers; returns their names.

    A temporary is stale when its process is gone, or when it is older than the newest
    ``.pdstates`` (a process id reused since then does not keep it).
    """
    try:
        names = os.listdir(run_dir)
    except OSError:
        return []
    stamps = [os.path.getmtime(os.path.join(run_dir, n)) for n in names if n.endswith(".pdstates")]
    newest = max(stamps, default=None)
    removed = []
    for n in names:
        m = TEMP_NAME.match(n)
        path = os.path.join(run_dir, n)
        if not m or not os.path.isfile(path):
            continue
        try:
            stale = not pid_alive(int(m.group(1))) or (newest is not None and os.path.getmtime(path) < newest)
            if stale:
                os.remove(path)
                removed.append(n)
        except OSError:
            pass  # another rank removed it first
    return removed
