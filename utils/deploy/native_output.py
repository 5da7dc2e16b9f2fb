"""Hiding known-harmless lines that Paddle's C++ side writes straight to a file descriptor.

Python's ``sys.stdout``/``sys.stderr`` redirection does not reach them, so the descriptor
itself is swapped for a temporary file while the call runs, and the kept lines are written
back afterwards.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def drop_native_lines(fd: int, pattern: str) -> Iterator[None]:
    """Hide lines containing ``pattern`` that C++ code writes to file descriptor ``fd`` (1 or 2); keep the rest.

    Two known-harmless lines from Paddle 3.3.1's C++ side, which Python cannot silence:
    jit.save logs "Paddle static graph(PIR) not support input out tensor for now!!!!!" (glog,
    fd 2) for softmax and elementwise ops in the traced forward -- the saved program is
    correct, the parity check compares it; and with oneDNN on, the first run of a model with
    a mean over channels prints "ReduceMeanCheckIfOneDNNSupport" to stdout, once per op,
    into the middle of infer.py's table.
    """
    stream = sys.stdout if fd == 1 else sys.stderr
    try:
        stream.flush()
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # no real descriptor (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), fd)
        try:
            yield
        finally:
            try:
                stream.flush()
            finally:
                os.dup2(saved, fd)
                os.close(saved)
            buf.seek(0)
            kept = [ln for ln in buf.read().decode("utf-8", "replace").splitlines(True) if pattern not in ln]
            if kept:
                stream.write("".join(kept))
