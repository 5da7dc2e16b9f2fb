"""Hyperparameter search with Optuna over any config keys: ``tools/tune.py``'s logic.

A *search space* is a small YAML file, one dotted config key per entry::

    Optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
    Optimizer.name: {type: categorical, choices: [SGD, AdamW]}
    Arch.depth: {type: int, low: 2, high: 6}

Modules, in the order a study uses them:

* ``space``: :class:`ParamSpec`, one searched key (suggest, grid, overrides, edge warnings);
* ``space_file``: :func:`load_space` reads a space file and checks every key against the
  config schema and the model factories before anything runs;
* ``storage``: the study database (``study.db`` in the study directory, or a PostgreSQL URL
  several workers share), the sampler and the pruner by name;
* ``study_setup``: :func:`prepare` resolves the command line into a :class:`TuneSetup`;
* ``pruning``: :class:`TrialReporter`, the hapi callback reporting each validation to Optuna;
* ``study``: :func:`run_study` runs each trial as an ordinary training run;
* ``results``: ``trials.csv``, ``trials.md`` and ``best_config.yml`` in the study directory.

Importing this package imports paddle (the model registry, and :class:`TrialReporter` is a hapi
callback): tools set the thread count first. Optuna is imported only when a study opens.
"""
from utils.tune.pruning import TrialFailed, TrialReporter, failure_reason
from utils.tune.results import format_value, trial_rows, write_best_config, write_results
from utils.tune.space import ParamSpec, check_grid, edge_warnings, grid_size, param_overrides, yaml_text
from utils.tune.space_file import load_space, read_space_file
from utils.tune.storage import (
    PRUNERS,
    SAMPLERS,
    default_storage,
    evaluations_per_run,
    make_pruner,
    make_sampler,
    open_storage,
    redact,
)
from utils.tune.study import grid_remaining, open_study, run_study
from utils.tune.study_setup import TuneSetup, prepare

__all__ = [
    "PRUNERS", "SAMPLERS", "ParamSpec", "TrialFailed", "TrialReporter", "TuneSetup", "check_grid", "default_storage",
    "edge_warnings", "evaluations_per_run", "failure_reason", "format_value", "grid_remaining", "grid_size",
    "load_space", "make_pruner", "make_sampler", "open_storage", "open_study", "param_overrides", "prepare",
    "read_space_file", "redact", "run_study", "trial_rows", "write_best_config", "write_results", "yaml_text",
]
