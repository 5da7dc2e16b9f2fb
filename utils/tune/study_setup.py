"""The command line resolved into everything a study needs: :class:`TuneSetup` and :func:`prepare`.

:func:`prepare` loads and checks the config and the search space before any database or
training, so a typo fails in a second; the study and its results both read the setup.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from utils.config import load_config
from utils.errors import UserError, did_you_mean
from utils.tune.space import ParamSpec, check_grid
from utils.tune.space_file import load_space
from utils.tune.storage import PRUNERS, SAMPLERS, default_storage

if TYPE_CHECKING:
    import optuna


@dataclasses.dataclass
class TuneSetup:
    """Everything a study needs, resolved from the command line."""

    config_path: str
    space_path: str
    overrides: list[str]
    cfg: dict
    space: dict[str, ParamSpec]
    study_name: str
    study_dir: str
    storage_url: str
    sampler: str
    pruner: str | optuna.pruners.BasePruner
    monitor: str
    mode: str


def prepare(config_path: str, space_path: str, overrides: Sequence[str] = (), study_name: str | None = None,
            storage: str | None = None, sampler: str = "tpe",
            pruner: str | optuna.pruners.BasePruner = "median") -> TuneSetup:
    """Load the config and the space and check both, before any database or training.

    Returns:
        A :class:`TuneSetup`.
    """
    cfg = load_config(config_path, list(overrides))
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler '{sampler}'{did_you_mean(sampler, SAMPLERS)}; choose one of {', '.join(SAMPLERS)}")
    if isinstance(pruner, str) and pruner not in PRUNERS:
        raise UserError(f"unknown pruner '{pruner}'{did_you_mean(pruner, PRUNERS)}; choose one of {', '.join(PRUNERS)}")
    space = load_space(space_path, cfg)
    if sampler == "grid":
        check_grid(space)
    name = study_name or os.path.splitext(os.path.basename(space_path))[0]
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise UserError(f"--study {name!r}: use a plain name (letters, digits, '-', '_'); it names a directory")
    config_name = cfg["_meta"]["config_name"]
    study_dir = os.path.join(cfg["Global"]["output_dir"], config_name, f"tune_{name}")
    return TuneSetup(config_path, space_path, list(overrides), cfg, space, name, study_dir,
                     storage or default_storage(study_dir), sampler, pruner,
                     cfg["EarlyStopping"]["monitor"], cfg["EarlyStopping"]["mode"])
