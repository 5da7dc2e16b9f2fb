"""Where a study lives and how it proposes and prunes: storage URL, sampler and pruner by name.

The study lives in ``study.db`` (SQLite) in the study directory unless a storage URL is given,
so re-running the same command continues it; a PostgreSQL URL lets several processes or
machines work on one study. Optuna (and SQLAlchemy with it) is imported inside the functions
that need it, so importing this module stays cheap.
"""
from __future__ import annotations

import importlib.util
import os
import random
import time
import warnings
from typing import TYPE_CHECKING, Any

from utils.errors import UserError, did_you_mean
from utils.tune.space import ParamSpec, check_grid

if TYPE_CHECKING:
    import optuna

SAMPLERS = ("tpe", "random", "grid", "qmc")
PRUNERS = ("median", "hyperband", "none")
# A PostgreSQL server that does not answer fails the study this fast (psycopg2's connect_timeout).
DB_CONNECT_TIMEOUT_S = 5


def default_storage(study_dir: str) -> str:
    """SQLite in the study directory: re-running the same command finds and continues the study."""
    return "sqlite:///" + os.path.abspath(os.path.join(study_dir, "study.db"))


def redact(url: str) -> str:
    """The storage URL with its password hidden (it goes to the console and trials.md)."""
    try:
        from sqlalchemy.engine import make_url  # heavy, comes with optuna: imported on use

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password field we can find
        return url.split("@")[-1] if "@" in url else url


def _rdb_storage(optuna: Any, sqlalchemy: Any, url: str, kwargs: dict, attempts: int = 5) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``, retried when another worker is creating the same tables right now.

    Two workers started together on an empty PostgreSQL database both run CREATE TABLE; the
    slower one fails with 'duplicate key value violates unique constraint
    "pg_type_typname_nsp_index"' (seen in 1 of 4 runs of tests/test_tune_postgres.py). The
    tables exist by the time it retries, so a second attempt succeeds.
    """
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * 0.5)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's ``RDBStorage`` for ``url`` (``sqlite:///...``, ``postgresql://user:pw@host/db``, ...).

    Connects at once, so an unreachable database is a one-line UserError before any training.

    Raises:
        UserError: bad URL, missing driver, or the database cannot be reached.
    """
    # optuna and SQLAlchemy are heavy: imported when a study opens
    import optuna
    import sqlalchemy
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise UserError(f"--storage {url!r}: not a database URL; use e.g. sqlite:///path/study.db or "
                        f"postgresql://user:password@host:5432/dbname") from None
    if parsed.drivername == "postgresql" and _has_module("psycopg2") and not _has_module("psycopg"):
        # SQLAlchemy 2.1 made psycopg 3 the driver of a bare postgresql:// URL; requirements.txt
        # installs psycopg2-binary, so name it unless psycopg 3 is there.
        parsed = parsed.set(drivername="postgresql+psycopg2")
        url = parsed.render_as_string(hide_password=False)
    kwargs = {}
    if parsed.get_backend_name() == "postgresql":
        # psycopg2 waits for the OS TCP timeout (minutes) on a host that drops packets.
        kwargs["connect_args"] = {"connect_timeout": DB_CONNECT_TIMEOUT_S}
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
    try:
        return _rdb_storage(optuna, sqlalchemy, url, kwargs)
    except ImportError:
        raise UserError(f"--storage {redact(url)}: the database driver is not installed "
                        f"(PostgreSQL: pip install psycopg2-binary, as in requirements.txt)") from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise UserError(f"--storage {redact(url)}: unknown database scheme '{parsed.drivername}'; "
                        f"use sqlite:///... or postgresql://...") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        first = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise UserError(f"cannot reach the study database {redact(url)}: {first} "
                        f"(is the server running and the host, port, user and password right?)") from None


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def make_sampler(name: str, space: dict[str, ParamSpec], seed: int | None,
                 startup_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by name: tpe, random, grid or qmc."""
    import optuna  # heavy: imported when a study opens

    if name == "tpe":
        kw = {} if startup_trials is None else {"n_startup_trials": startup_trials}
        return optuna.samplers.TPESampler(seed=seed, **kw)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(check_grid(space), seed=seed)
    if name == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Categorical parameters go to its independent (random) sampler: expected, not news.
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise UserError(f"unknown sampler '{name}'{did_you_mean(name, SAMPLERS)}; choose one of {', '.join(SAMPLERS)}")


def evaluations_per_run(cfg: dict) -> int | None:
    """How many validations a full run makes (the pruners' resource), or None when it varies."""
    g = cfg["Global"]
    if g["eval_every_iters"]:
        return None
    every = g["eval_every_epochs"]
    return sum(1 for e in range(g["epochs"]) if e + 1 == g["epochs"] or (every and (e + 1) % every == 0))


def make_pruner(name: str | optuna.pruners.BasePruner, cfg: dict, space: dict[str, ParamSpec],
                startup_trials: int | None = None) -> optuna.pruners.BasePruner:
    """An Optuna pruner by name: median (default), hyperband or none.

    Trials report at their k-th validation (step k): the same point of training in every
    trial of a study unless the space changes the evaluation schedule.
    """
    import optuna  # heavy: imported when a study opens

    if not isinstance(name, str):
        return name  # a pruner object (tests script one)
    if name == "median":
        # Optuna's defaults: no pruning before 5 trials have finished; compare from the first eval.
        return optuna.pruners.MedianPruner(n_startup_trials=5 if startup_trials is None else startup_trials)
    if name == "hyperband":
        varies = {"Global.epochs", "Global.eval_every_epochs", "Global.eval_every_iters"} & set(space)
        n = None if varies else evaluations_per_run(cfg)
        # reduction 3 (Hyperband's paper): each rung keeps the best third of the trials.
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=n or "auto", reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner '{name}'{did_you_mean(name, PRUNERS)}; choose one of {', '.join(PRUNERS)}")
