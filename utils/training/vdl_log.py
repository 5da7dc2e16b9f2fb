"""The run's VisualDL log file: find it, open it for writing, read its scalars back.

One run = one log file (the VisualDL server shows only the newest file of a directory), so a
resumed run appends to its own. No Paddle here: ``tools/visualize.py curves`` and the offline
doctor read logs without setting up training.
"""
from __future__ import annotations

import os
import time

LOG_PREFIX = "vdlrecords."


def log_files(run_dir: str) -> list[str]:
    """The run's VisualDL log files, oldest first (the server shows the newest one per directory)."""
    return sorted(os.path.join(run_dir, f) for f in os.listdir(run_dir) if f.startswith(LOG_PREFIX))


def open_writer(run_dir: str):
    """A ``LogWriter`` on the run's log file: its existing one on resume, so the run stays one log."""
    from visualdl import LogWriter

    existing = log_files(run_dir)
    name = os.path.basename(existing[-1]) if existing else f"{LOG_PREFIX}{int(time.time())}.log"
    return LogWriter(logdir=run_dir, file_name=name, flush_secs=10)


def read_scalars(files: list[str], tags: set[str] | None = None) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)] sorted by step} of the scalars in ``files`` (all tags, or ``tags``).

    A step logged twice (a resumed run appends to its log) keeps the later value.
    """
    from visualdl import LogReader

    merged = {}
    for f in files:
        reader = LogReader(file_path=f)
        for tag in reader.get_tags().get("scalar", []):
            if tags is None or tag in tags:
                merged.setdefault(tag, {}).update((int(r.id), float(r.value)) for r in reader.get_data("scalar", tag))
    return {tag: sorted(d.items()) for tag, d in merged.items() if d}
