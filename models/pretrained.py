"""Pretrained weights for fine-tuning: load the tensors of a file that match the model by name and shape.

Used by the models that take ``pretrained=`` (``models/vision.py``) and by ``Global.pretrained_model``.
A run directory means its ``best_model``; what loaded, what kept its init and why is a :class:`LoadReport`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

import paddle

from utils.errors import UserError


def _shape(t: paddle.Tensor) -> list[int]:
    return [int(d) for d in t.shape]


def _preview(names: Iterable[str], n: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


class LoadReport:
    """What :func:`load_matching` did, by name and shape.

    Attributes:
        source: the file read.
        loaded: model tensors set from the file.
        missing: model tensors the file does not have (they keep their init).
        unexpected: file tensors the model does not have (ignored).
        mismatched: ``(name, checkpoint shape, model shape)`` of same-named tensors whose shapes
            differ (the model's keeps its init): a new head for another ``num_classes``, an adapted stem.
        excluded: tensors that matched but were left out on purpose (``FineTune.pretrained_exclude``).

    Unpacks as the old ``(loaded, skipped)`` pair: ``loaded, skipped = load_matching(...)``.
    """

    def __init__(self, source: str, loaded: Iterable[str], missing: Iterable[str], unexpected: Iterable[str],
                 mismatched: Iterable[tuple[str, list[int], list[int]]], excluded: Iterable[str] = ()) -> None:
        self.source = source
        self.loaded = list(loaded)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)
        self.excluded = list(excluded)

    @property
    def not_loaded(self) -> list[str]:
        """Model tensors left at their init: mismatched, missing and excluded."""
        return [n for n, _, _ in self.mismatched] + self.missing + self.excluded

    @property
    def skipped(self) -> list[str]:
        """One string per model tensor that was not loaded, saying why."""
        return ([f"{n}: checkpoint {c} vs model {m}" for n, c, m in self.mismatched]
                + [f"{n} (not in the checkpoint)" for n in self.missing]
                + [f"{n} (excluded)" for n in self.excluded])

    def __iter__(self) -> Iterator[list[str]]:
        """``loaded, skipped = report``."""
        return iter((self.loaded, self.skipped))

    def summary(self, label: str = "pretrained") -> str:
        """One line: counts, and the names of the tensors that kept their init."""
        total = len(self.loaded) + len(self.not_loaded)
        parts = []
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} shape mismatch(es) kept their init "
                         f"({_preview(n for n, _, _ in self.mismatched)})")
        if self.missing:
            parts.append(f"{len(self.missing)} not in the checkpoint ({_preview(self.missing)})")
        if self.excluded:
            parts.append(f"{len(self.excluded)} excluded ({_preview(self.excluded)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} checkpoint tensor(s) unused ({_preview(self.unexpected)})")
        return (f"{label}: loaded {len(self.loaded)}/{total} tensors from {self.source}"
                + ("; " + "; ".join(parts) if parts else " (all matched)"))

    def details(self) -> list[str]:
        """One line per tensor that was not loaded or not used, e.g. ``fc.bias: checkpoint [97] vs model [10]``."""
        return ([f"  shape mismatch  {n}: checkpoint {c} vs model {m}" for n, c, m in self.mismatched]
                + [f"  missing in the checkpoint  {n}" for n in self.missing]
                + [f"  excluded  {n}" for n in self.excluded]
                + [f"  unexpected in the checkpoint  {n}" for n in self.unexpected])

    def __repr__(self) -> str:
        return (f"LoadReport(loaded={len(self.loaded)}, missing={len(self.missing)}, "
                f"unexpected={len(self.unexpected)}, mismatched={len(self.mismatched)}, excluded={len(self.excluded)})")


def pretrained_file(path: str, key: str = "Global.pretrained_model") -> str:
    """A run directory (its best_model), checkpoint prefix or .pdparams file -> the .pdparams path.

    Raises:
        UserError: one line naming ``key`` when there is no such file.
    """
    if os.path.isdir(path):
        prefix = os.path.join(path, "best_model")
        if not os.path.exists(prefix + ".pdparams"):
            have = sorted({f.rsplit(".", 1)[0] for f in os.listdir(path) if f.endswith(".pdparams")})
            raise UserError(f"{key}: {path}: no best_model.pdparams in this run directory"
                            + (f" (checkpoints here: {', '.join(have)})" if have else " (no checkpoints here: did the run save any?)"))
        path = prefix
    file = path if path.endswith(".pdparams") else path + ".pdparams"
    if not os.path.isfile(file):
        raise UserError(f"{key}: file not found: {file} (give a .pdparams file, its prefix or a run directory)")
    return file


def load_matching(network: paddle.nn.Layer, path: str, exclude: Callable[[str], bool] | None = None,
                  key: str = "Global.pretrained_model", state: dict | None = None, apply: bool = True) -> LoadReport:
    """Load the tensors of ``path`` whose names and shapes match the model's (fine-tuning).

    Args:
        network: the model.
        path: ``.pdparams`` file, its prefix, or a run directory (its ``best_model``).
        exclude: optional predicate on a model tensor name: True = leave it at its init even if it matches.
        key: config key named in errors.
        state: an already loaded (and possibly adapted) state dict to use instead of reading ``path``.
        apply: False = only compute the report (what would load), leave the model untouched.

    Returns:
        A :class:`LoadReport` (unpacks as ``loaded, skipped``).

    Raises:
        UserError: one line when the file does not exist, is not a parameter file, or has no
            tensor that matches the model by name and shape.
    """
    if state is None:
        file = pretrained_file(path, key)
        try:
            state = paddle.load(file)
        except Exception as e:  # a truncated or foreign file: say which, not a pickle traceback
            raise UserError(f"{key}: cannot read {file}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    else:
        file = path
    if not isinstance(state, dict):
        raise UserError(f"{key}: {file} is not a parameter file (expected a dict of tensors, got {type(state).__name__})")
    state = {k: v for k, v in state.items() if hasattr(v, "shape")}
    own = network.state_dict()
    loaded, missing, mismatched, excluded = [], [], [], []
    for k, v in own.items():
        if k not in state:
            missing.append(k)
        elif _shape(state[k]) != _shape(v):
            mismatched.append((k, _shape(state[k]), _shape(v)))
        elif exclude is not None and exclude(k):
            excluded.append(k)
        else:
            loaded.append(k)
    unexpected = [k for k in state if k not in own]
    if not loaded and not excluded:
        hint = (f"checkpoint names like {_preview(state, 2)}; model names like {_preview(own, 2)}" if state
                else "the file holds no tensors")
        raise UserError(f"{key}: none of the {len(state)} tensors in {file} matches the model by name and shape "
                        f"({hint}): was it saved from another Arch.name?")
    for k in loaded if apply else ():
        value = state[k]
        if not isinstance(value, paddle.Tensor):
            value = paddle.to_tensor(value)
        if value.dtype != own[k].dtype:
            value = value.astype(own[k].dtype)
        own[k].set_value(value)  # per tensor: set_state_dict warns once per tensor it does not get
    return LoadReport(file, loaded, missing, unexpected, mismatched, excluded)
