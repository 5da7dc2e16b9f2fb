"""Running a study: open (or continue) it, run each trial as a training run, print a line per trial.

Each trial is an ordinary training run (:func:`utils.trainer.train`, in this process) with the
trial's values applied as ``-o`` overrides, in ``<output_dir>/<config>/tune_<study>/trial_<n>/``:
its own VisualDL log, resolved ``config.yml`` and checkpoints, so any trial can be re-run or
resumed alone with ``tools/train.py``.
"""
from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from utils.config import load_config
from utils.errors import UserError
from utils.trainer import train
from utils.tune.console import TrialConsole, terminal
from utils.tune.pruning import TrialFailed, TrialReporter, failure_reason
from utils.tune.results import write_results
from utils.tune.space import check_grid, grid_size, param_overrides
from utils.tune.space_file import applies, fit_arch
from utils.tune.storage import default_storage, make_pruner, make_sampler, open_storage, redact
from utils.tune.study_setup import TuneSetup

if TYPE_CHECKING:
    import optuna

# The same UserError from this many trials in a row is not about the parameters (missing data,
# a bad override): stop the study instead of failing every remaining trial the same way.
MAX_SAME_ERRORS = 3


def open_study(setup: TuneSetup, seed: int | None = None, startup_trials: int | None = None) -> optuna.Study:
    """Create or load the study; checks that a loaded one was made for this config and metric."""
    import optuna  # heavy: imported when a study opens

    storage = open_storage(setup.storage_url)
    direction = "maximize" if setup.mode == "max" else "minimize"
    try:
        study_id = storage.get_study_id_from_name(setup.study_name)
    except KeyError:
        study_id = None
    n_prior = len(storage.get_all_trials(study_id, deepcopy=False)) if study_id is not None else 0
    config_name = setup.cfg["_meta"]["config_name"]
    if study_id is not None:
        attrs = storage.get_study_user_attrs(study_id)
        if attrs.get("config_name") not in (None, config_name):
            raise UserError(f"study '{setup.study_name}' in {redact(setup.storage_url)} was made for config "
                            f"'{attrs['config_name']}', not '{config_name}': choose another --study")
        if (attrs.get("monitor"), attrs.get("mode")) not in ((None, None), (setup.monitor, setup.mode)):
            raise UserError(f"study '{setup.study_name}' optimizes {attrs['monitor']} ({attrs['mode']}) but the config "
                            f"now monitors {setup.monitor} ({setup.mode}): set EarlyStopping.monitor/mode back, "
                            f"or choose another --study")
    elif setup.storage_url == default_storage(setup.study_dir) and _has_trial_runs(setup.study_dir):
        # Checked for the default SQLite file only: workers sharing a server create the study concurrently.
        raise UserError(f"{setup.study_dir} holds trial runs of a study that {redact(setup.storage_url)} does not "
                        f"have: choose another --study, or the --storage that study used")
    # A seeded sampler replays its first proposals in every process: offset the seed by the
    # trials already in the study so a continued run proposes new values. Workers sharing a
    # database may start at the same moment (same trial count): without --seed they draw fresh entropy.
    if seed is None and setup.storage_url != default_storage(setup.study_dir):
        sampler_seed = None
    else:
        sampler_seed = (setup.cfg["Global"]["seed"] if seed is None else seed) + n_prior
    sampler = make_sampler(setup.sampler, setup.space, sampler_seed, startup_trials)
    pruner = make_pruner(setup.pruner, setup.cfg, setup.space, startup_trials)
    study = optuna.create_study(storage=storage, study_name=setup.study_name, direction=direction,
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    if study_id is None:
        study.set_user_attr("config_name", config_name)
        study.set_user_attr("config", setup.config_path)
        study.set_user_attr("monitor", setup.monitor)
        study.set_user_attr("mode", setup.mode)
    return study


def _has_trial_runs(study_dir: str) -> bool:
    return os.path.isdir(study_dir) and any(d.startswith("trial_") for d in os.listdir(study_dir))


def grid_remaining(study: optuna.Study, setup: TuneSetup) -> int | None:
    """Grid points not yet finished in this study (GridSampler's own bookkeeping)."""
    if setup.sampler != "grid":
        return None
    grid = check_grid(setup.space)
    done = {t.system_attrs.get("grid_id") for t in study.get_trials(deepcopy=False)
            if t.state.is_finished() and "grid_id" in t.system_attrs}
    return grid_size(grid) - len(done - {None})


class _Objective:
    """Runs one trial: suggest, train with the reporter, decide the state.

    The trial's values reach VisualDL's HParams view through the trainer: they are ``-o``
    overrides, and :func:`utils.training.vdl.run_hparams` adds every overridden key.
    """

    def __init__(self, setup: TuneSetup, train_print_fn: Callable[..., Any],
                 started: Callable[[int], None] = lambda n: None) -> None:
        self.setup = setup
        self.train_print = train_print_fn
        self.started = started
        self.last_errors = []

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna  # heavy: imported when a study opens

        s = self.setup
        self.started(trial.number)
        # Every key is suggested (the grid sampler needs each point's full coordinates); with
        # Arch.name searched, the Arch arguments the trial's model does not take are not applied.
        suggested = {key: spec.suggest(trial) for key, spec in s.space.items()}
        model = suggested.get("Arch.name")
        params = {k: v for k, v in suggested.items() if model is None or applies(k, model)}
        name = f"trial_{trial.number}"
        run_dir = os.path.join(s.study_dir, name)
        trial.set_user_attr("config_params", params)
        trial.set_user_attr("overrides", s.overrides)
        trial.set_user_attr("run_dir", run_dir)
        trial.set_user_attr("steps", 0)
        reporter = TrialReporter(trial, s.monitor)
        try:
            cfg = load_config(s.config_path, [*s.overrides, *param_overrides(params), f"Global.run_name={name}",
                                              f"Global.output_dir={os.path.dirname(s.study_dir)}"])
            # The run goes to <output_dir>/<config>/tune_<study>/trial_<n>: the trainer joins
            # output_dir, the config name and the run name.
            cfg["_meta"]["config_name"] = os.path.basename(s.study_dir)
            if model is not None:
                fit_arch(cfg)
            metrics = train(cfg, print_fn=self.train_print, callbacks=[reporter])
        except UserError as e:
            trial.set_user_attr("steps", reporter.steps)
            return self._error(trial, str(e), e)
        except KeyboardInterrupt:
            trial.set_user_attr("steps", reporter.steps)
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C); resume the run alone with "
                                               f"python tools/train.py --resume {run_dir}")
            raise
        except Exception as e:  # noqa: BLE001  a crash for one combination of values must not end a long study
            trial.set_user_attr("steps", reporter.steps)
            self.train_print(traceback.format_exc().rstrip())
            return self._error(trial, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}", e)
        self.last_errors = []
        trial.set_user_attr("steps", int(metrics["global_step"]))
        reason = failure_reason(metrics, reporter)
        if reporter.pruned_at and not reason:
            p = reporter.pruned_at
            trial.set_user_attr("fail_reason", f"pruned at evaluation {p['eval']} (epoch {p['epoch']}, step {p['step']}): "
                                               f"{s.monitor} {p['value']:.4f}")
            raise optuna.TrialPruned(trial.user_attrs["fail_reason"])
        if reason:
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailed(reason)
        value = float(metrics["best"][s.monitor])
        return value

    def _error(self, trial: optuna.Trial, message: str, exc: BaseException) -> NoReturn:
        """Record a trial's error as FAIL; the same error 3 times in a row ends the study with it."""
        trial.set_user_attr("fail_reason", message)
        self.last_errors.append(message)
        if len(self.last_errors) >= MAX_SAME_ERRORS and len(set(self.last_errors[-MAX_SAME_ERRORS:])) == 1:
            if isinstance(exc, UserError):
                raise UserError(f"{MAX_SAME_ERRORS} trials in a row failed with: {message}") from None
            raise exc
        raise TrialFailed(message)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO and a failed trial with its traceback at WARNING: we print
    our own one line per trial instead."""
    import optuna  # heavy: imported when a study opens

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def run_study(setup: TuneSetup, n_trials: int | None = None, seed: int | None = None, timeout: float | None = None,
              startup_trials: int | None = None, print_fn: Callable[..., Any] = print,
              train_print_fn: Callable[..., Any] | None = None, enqueue: Iterable[dict[str, Any]] = (),
              verbose: bool = True) -> dict[str, Any]:
    """Run ``n_trials`` more trials of the study (continuing it if it exists), then write the results.

    Args:
        setup: from :func:`utils.tune.prepare`.
        n_trials: trials to run in this process; None = 20, or the unfinished grid points for
            the grid sampler; 0 = only (re)write the results.
        seed: sampler seed (default ``Global.seed``; with a storage URL given, fresh entropy), offset
            by the trials already in the study.
        timeout: stop starting new trials after this many seconds.
        startup_trials: TPE's random start-up trials and the median pruner's warm-up trials
            (Optuna's defaults 10 and 5 when None).
        print_fn: console output of the tuner.
        train_print_fn: console output of the trainer in each trial (default: print_fn, indented,
            when ``verbose``; otherwise kept, and a failed trial's last lines printed under it).
        enqueue: parameter dicts (config values) to try first, e.g. for tests.
        verbose: every trial's training log (True), or one line per trial and, on a terminal,
            a status line for the running trial (False; ``tools/tune.py`` without ``--verbose``).

    Returns:
        ``{"study": optuna.Study, "results": dict from write_results, "ran": trials run now}``.
    """
    with _quiet_optuna():
        study = open_study(setup, seed, startup_trials)
        before = len(study.trials)
        remaining = grid_remaining(study, setup)
        if remaining is not None:
            # GridSampler would start over on visited points once every point has run.
            if remaining == 0 and n_trials != 0:
                print_fn(f"grid complete: every grid point of study '{setup.study_name}' has run")
            n_trials = remaining if n_trials is None else min(n_trials, remaining)
        elif n_trials is None:
            n_trials = 20
        for params in enqueue:
            study.enqueue_trial({k: setup.space[k].encoded_choices()[setup.space[k].choices.index(v)]
                                 if setup.space[k].type == "categorical" else v for k, v in params.items()})
        print_fn(f"study '{setup.study_name}' ({setup.sampler} sampler, "
                 f"{setup.pruner if isinstance(setup.pruner, str) else type(setup.pruner).__name__} pruner, "
                 f"{'maximize' if setup.mode == 'max' else 'minimize'} {setup.monitor}): {before} trials so far, "
                 f"running {n_trials} more; storage {redact(setup.storage_url)}; runs in {setup.study_dir}")
        live = terminal() if (print_fn is print and not verbose) else None
        console = TrialConsole(print_fn, n_trials, setup.monitor, verbose=verbose, live=live)
        objective = _Objective(setup, train_print_fn or console.train_line, console.trial_started)
        try:
            if n_trials:
                # No gc_after_trial: a full gc.collect() after each trial cost 0.23 s with Paddle loaded
                # (13% of a 5-epoch MLP trial on digits); Python's own collector frees the cycles.
                study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(TrialFailed,),
                               callbacks=[console.trial_finished])
        finally:
            results = write_results(study, setup, print_fn)
    return {"study": study, "results": results, "ran": len(study.trials) - before}
