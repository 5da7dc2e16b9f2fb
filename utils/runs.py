"""Open a finished (or running) training run from what a user types on the command line.

Tools that look at a run (``tools/eval.py``, ``tools/visualize.py``) accept a run directory
(``output/gmlp_digits/20260101-120000``), a checkpoint prefix in one (``RUN/best_model``) or a
checkpoint file (``RUN/best_model.pdparams``). :func:`open_run` turns any of these into the run
directory, the config the run was trained with and the checkpoint prefix, with one-line
:class:`~utils.errors.UserError` messages for every wrong path.

Paddle is not imported at module level: :func:`open_run` reads the config first and sets the
thread count from ``Global.num_threads``, which must happen before Paddle is imported.
"""
import dataclasses
import os
from typing import Optional

from utils.errors import UserError

CHECKPOINT_SUFFIXES = (".pdparams", ".pdopt", ".pdstates")


@dataclasses.dataclass
class Run:
    """A run opened by :func:`open_run`.

    Attributes:
        run_dir: the run directory.
        cfg: the resolved config (the run's ``config.yml``, or ``-c``), overrides applied.
        config_path: the file ``cfg`` was read from.
        checkpoint: checkpoint prefix (``RUN/best_model``), or None when not asked for.
    """
    run_dir: str
    cfg: dict
    config_path: str
    checkpoint: Optional[str] = None


def _strip_suffix(path):
    for suffix in CHECKPOINT_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def run_dir_of(path):
    """The run directory of a run directory, checkpoint prefix or checkpoint file.

    Raises:
        UserError: nothing at ``path`` (neither a directory nor a checkpoint).
    """
    if os.path.isdir(path):
        return path
    prefix = _strip_suffix(path)
    if os.path.exists(path) or os.path.exists(prefix + ".pdparams"):
        # dirname of a bare 'best_model' is '' (the current directory).
        return os.path.dirname(prefix) or "."
    raise UserError(f"{path}: no such run directory or checkpoint (pass a run directory such as "
                    f"output/gmlp_digits/<timestamp>, or a checkpoint in one such as <run>/best_model)")


def open_config(path, overrides=()):
    """Load a config and set Paddle's CPU threads from its ``Global.num_threads``.

    The threads must be set before Paddle is imported (see ``utils.trainer.configure_threads``),
    so tools call this (or :func:`open_run`) first.

    Raises:
        UserError: no such file, or an invalid config.
    """
    from utils.config import load_config
    from utils.trainer import configure_threads

    if not os.path.isfile(path):
        raise UserError(f"-c {path}: no such config file (configs are in configs/, e.g. configs/cnn_digits.yml)")
    cfg = load_config(path, overrides)
    configure_threads(cfg["Global"]["num_threads"])
    return cfg


def open_run(path, checkpoint="best_model", config=None, overrides=(), need_checkpoint=True):
    """Resolve a run directory or checkpoint path into a :class:`Run`.

    Sets Paddle's CPU threads from the config's ``Global.num_threads`` (a no-op once Paddle is
    imported), so a tool calls this before anything that imports Paddle.

    Args:
        path: run directory, checkpoint prefix (``RUN/best_model``) or checkpoint file
            (``RUN/best_model.pdparams``).
        checkpoint: checkpoint name used when ``path`` is a directory (``best_model``,
            ``latest``, ``epoch_N``); ignored when ``path`` names a checkpoint itself.
        config: config file to use instead of ``RUN/config.yml``.
        overrides: ``Section.key=value`` strings applied to the config.
        need_checkpoint: resolve the checkpoint (a UserError when it is missing); False for
            tools that only need the config.

    Returns:
        A :class:`Run`.

    Raises:
        UserError: no such path, no config.yml (and no ``-c``), no such checkpoint.
    """
    run_dir = run_dir_of(path)
    cfg_path = config or os.path.join(run_dir, "config.yml")
    if not config and not os.path.isfile(cfg_path):
        raise UserError(f"{run_dir}: no config.yml; pass the training config with -c")
    cfg = open_config(cfg_path, overrides)
    prefix = None
    if need_checkpoint:
        from utils.checkpoint import resolve_checkpoint

        prefix = resolve_checkpoint(path, checkpoint)
    return Run(run_dir=run_dir, cfg=cfg, config_path=cfg_path, checkpoint=prefix)
