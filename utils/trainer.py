"""The training spine: open the run -> build data, model, optimizer -> assemble callbacks -> fit -> finish.

``train(cfg)`` is what ``tools/train.py`` calls. Each phase is a named function over one
:class:`~utils.training.addon.TrainRun`; optional parts (EMA, mixed precision, the doctor,
fine-tuning, data parallel) are :class:`~utils.training.addon.AddOn` objects listed once in
:data:`ADDONS` and asked at fixed points, never named inside the phases.

Imports ``paddle`` at module level: tools import this module after setting the thread count.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from typing import Callable, Iterable

import paddle
from paddle.utils import unique_name

from models.summary import model_summary
from utils.addons.amp import MixedPrecision
from utils.addons.distributed import DataParallel
from utils.addons.ema import WeightAverage
from utils.addons.finetune import FineTune
from utils.build import build_network, init_from_data, network_input_side, select_device, topk_for
from utils.config import dump_config
from utils.data import build_datasets, build_loaders
from utils.doctor.addon import DoctorAddOn
from utils.errors import UserError
from utils.rundir import (
    RunLock,
    check_output_dir,
    close_on_error,
    final_metrics_written,
    new_run_dir,
    resume_changes,
    run_metrics,
    stop_reason,
    write_metrics,
)
from utils.training import callbacks as cb
from utils.training import ranks
from utils.training.addon import SLOTS, AddOn, TrainRun
from utils.training.checkpoint import (
    CheckpointStore,
    check_best,
    load_optimizer,
    load_weights,
    resolve_resume,
    restore_best,
)
from utils.training.checkpointer import Checkpointer, ResumeMidEpoch
from utils.training.console import ConsoleLogger, RunLog
from utils.training.evaluate import LastEval, RegressionMetrics
from utils.training.losses import build_loss
from utils.training.optim import build_lr_scheduler, build_optimizer, current_lr, schedule_warnings
from utils.training.param_groups import apply_param_groups
from utils.training.vdl import build_logger
from utils.training.vdl_log import open_writer

# The add-ons, in the order they are asked at each hook (the weight average wraps the evaluation
# after mixed precision does; the doctor's stop reason comes before data parallel's agreed one).
ADDONS: tuple[type[AddOn], ...] = (MixedPrecision, WeightAverage, DoctorAddOn, FineTune, DataParallel)


def train(cfg: dict, print_fn: Callable[..., None] = print, callbacks: Iterable = ()) -> dict:
    """Train as ``cfg`` says; returns the metrics dict also written to ``metrics.json``.

    ``Global.checkpoints`` (a run directory or checkpoint prefix) resumes that run in its own
    directory: weights, optimizer and LR schedule, epoch and step, early-stopping state.
    ``callbacks``: extra hapi callbacks, added as listeners: they get every hapi hook and
    ``on_eval_end(logs)`` after each validation (``tools/tune.py`` reports to Optuna this way).

    Under ``python -m paddle.distributed.launch --nproc_per_node N`` (see ``utils/addons/distributed.py``)
    every rank trains on its shard with ``DataLoader.batch_size`` images per step (the global
    batch is N times that; the learning rate is not scaled for you); evaluation metrics are those
    of the whole validation set on every rank; rank 0 alone prints and writes the run directory
    (config, checkpoints, metrics.json, VisualDL log, diagnosis.json). The other ranks print one
    line at the end (at ``Global.verbose`` >= 1) with a digest of their final weights. Every rank
    returns the same metrics dict.
    """
    # hapi's train_batch wraps each batch with paddle.to_tensor(tensor), which warns once per run.
    warnings.filterwarnings("ignore", message="To copy construct from a tensor")
    # BatchNorm in train mode warns once per process "we now always track global mean and
    # variance": a notice about Paddle's behaviour, not about this run.
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
    # Parameter and optimizer-accumulator names come from a global counter; a fresh
    # namespace gives every run the same names, so a checkpoint saved by one run loads
    # into another in the same process (the optimizer state is keyed by those names).
    with unique_name.guard():
        run = start_run(cfg, print_fn)
        try:
            addons = [a for a in (cls.create(run) for cls in ADDONS) if a is not None]
            build_data(run)
            build_model(run, addons)
            build_optimization(run)
            open_run_dir(run)
            model = prepare_model(run, addons)
            fit(run, model, assemble_callbacks(run, addons, callbacks))
            return finish(run, addons)
        except BaseException as e:  # Ctrl-C, SIGTERM, an error: metrics.json says so, the lock is freed
            close_on_error(run, e)
            raise
        finally:
            if run.lock is not None:
                run.lock.release()


def _quiet(*args, **kwargs) -> None:
    pass


def start_run(cfg: dict, print_fn: Callable[..., None]) -> TrainRun:
    """Device, ranks, seed, a writable output directory, and the run to resume (when it can be continued)."""
    g = cfg["Global"]
    log = RunLog(print_fn)  # every line also goes to <run>/train.log once the run directory is known
    run = TrainRun(cfg, log, rank_print=print_fn, t_start=time.time())
    log.dir_fn = lambda: run.run_dir
    run.device = select_device(g["device"])
    run.rank, run.world = ranks.init()
    if not run.main:
        run.print_fn = _quiet  # errors still reach each rank's log (--log_dir/workerlog.N) as exceptions
    cb.seed_everything(g["seed"])
    if run.main:
        check_output_dir(cfg)
    if g["checkpoints"]:
        open_resume(run)
    return run


def open_resume(run: TrainRun) -> None:
    """The checkpoint to continue, refused when the run is live, finished, or resumed with a changed recipe.

    A run whose last checkpoint says it finished but which has no final ``metrics.json`` (killed in
    between) is finished: no more training, its metrics written.
    """
    g = run.cfg["Global"]
    resume, state, notice = resolve_resume(g["checkpoints"])  # a torn or damaged latest: the newest whole one
    run.resume, run.state = resume, state
    if notice:
        run.print_fn(f"warning: {notice}")
    run_dir = os.path.dirname(resume)
    ended = state.get("early_stopping", {}).get("stop_reason") or (
        state.get("finished") and state.get("progress", {}).get("epochs_done", 0) >= g["epochs"])
    if ended and final_metrics_written(run_dir):
        if state.get("early_stopping", {}).get("stop_reason"):
            raise UserError(f"{resume}: that run stopped early ({state['early_stopping']['stop_reason']}); start a new "
                            f"run, e.g. with -o Global.pretrained_model={run_dir}/best_model")
        raise UserError(f"{resume}: that run already finished ({state['progress']['epochs_done']} epochs). "
                        f"To train longer, add -o Global.epochs=N with N larger")
    run.finishing = bool(ended)
    if run.finishing:
        run.print_fn(f"note: {run_dir} ended without its final metrics.json: writing them (no more training)")
    was = state.get("data_parallel", {}).get("world_size", 1)
    if was != run.world:
        raise UserError(f"{resume}: that run trained with {was} process{'es' if was > 1 else ''}, this one has {run.world}: "
                        f"the global batch and the steps per epoch would change under the LR schedule. Resume it with "
                        f"{'python tools/train.py' if was == 1 else f'--nproc_per_node {was}'}, or start a new "
                        f"run from its weights with -o Global.pretrained_model={run_dir}/latest")
    changed = resume_changes(run_dir, run.cfg)
    if changed:
        raise UserError(f"--resume {run_dir}: these settings differ from the run's own config.yml and would change "
                        f"its result: {'; '.join(changed)}. Resume without them (only Global.epochs may grow), or start "
                        f"a new run from its weights with -o Global.pretrained_model={run_dir}/latest")
    if run.main:  # last: a refused resume leaves no lock behind
        run.lock = RunLock(run_dir)
        notice = run.lock.acquire()
        if notice:
            run.print_fn(f"note: {notice}")


def build_data(run: TrainRun) -> None:
    """Datasets and this rank's loaders; what the data turned out to be goes into the resolved config."""
    cfg = run.cfg
    d = cfg["Data"]
    # scanning 50,000 image files takes 10-15 s on 2 cores: say what is happening before it
    run.print_fn(f"loading data: {d['name']}" + (f" from {d['data_dir']}" if d.get("data_dir") else "") + " ...")
    run.bundle = bundle = build_datasets(cfg)
    run.train_loader, run.val_loader = build_loaders(cfg, bundle, run.rank, run.world)
    cfg["Data"]["num_classes"] = int(bundle.num_classes)
    cfg["Transforms"]["mean"] = [round(float(m), 6) for m in bundle.mean]
    cfg["Transforms"]["std"] = [round(float(s), 6) for s in bundle.std]
    if bundle.task == "regression":
        # eval and export de-normalize predictions with these (null when the target is not normalized)
        cfg["Data"]["target_mean"] = bundle.target_mean
        cfg["Data"]["target_std"] = bundle.target_std
    run.steps_per_epoch = len(run.train_loader)
    if run.steps_per_epoch == 0:
        raise UserError("the training loader is empty: lower DataLoader.batch_size or set DataLoader.drop_last=false")


def build_model(run: TrainRun, addons: list[AddOn]) -> None:
    """The network of ``Arch``; add-ons adjust it (pretrained weights, freezing); one summary line."""
    g, bundle = run.cfg["Global"], run.bundle
    run.network = build_network(run.cfg, bundle)
    if not run.resume and (n := init_from_data(run.network, bundle, g["seed"])):  # a checkpoint replaces it
        run.print_fn(f"initialised the data-dependent layers from {n} training images")
    o = run.cfg["Optimizer"]  # before the add-ons: a fine-tuning plan multiplies these LR multipliers
    for line in apply_param_groups(run.network, o["param_groups"], o["weight_decay"], o["regularizer"],
                                   decoupled=o["name"] == "AdamW"):
        run.print_fn(line)
    for a in addons:
        a.setup(run)
    side = network_input_side(bundle)
    run.summary = s = model_summary(run.network, [1, bundle.in_channels, side, side])
    flops = f", {s['flops'] / 1e6:.1f} MFLOPs (multiply-adds)" if g["print_flops"] and s.get("flops") else ""
    run.print_fn(f"model {run.cfg['Arch']['name']}: {s['params']:,} parameters ({s['trainable']:,} trainable){flops}")
    if g["verbose"] >= 2:
        run.print_fn(s["table"])


def build_optimization(run: TrainRun) -> None:
    """LR schedule, optimizer and loss; warnings about a schedule that is probably not what was meant."""
    epochs = run.cfg["Global"]["epochs"]
    run.scheduler = build_lr_scheduler(run.cfg, run.steps_per_epoch, epochs)
    run.optimizer = build_optimizer(run.cfg, run.network.parameters(), run.scheduler)
    run.loss_fn = build_loss(run.cfg, run.bundle.num_classes)
    for w in schedule_warnings(run.cfg, epochs):
        run.print_fn(f"warning: {w}")


def open_run_dir(run: TrainRun) -> None:
    """A new run directory (rank 0 names it, every rank learns it), or the resumed one with its weights loaded."""
    cfg = run.cfg
    if run.resume:
        run.run_dir = os.path.dirname(run.resume)
    else:  # rank 0 names it (a timestamp would differ across ranks) and holds its lock
        run.run_dir = ranks.on_main(lambda: new_run_dir(cfg))
        if run.main:
            run.lock = RunLock(run.run_dir)
            run.lock.acquire()
    run.store = CheckpointStore(run.run_dir)
    if run.resume:  # every rank loads the same checkpoint (multi-node: the run directory on every node)
        load_weights(run.network, run.resume)
        load_optimizer(run.optimizer, run.resume)
    if run.main:
        # The run's config says how to train it, not where to resume from: with the resume path
        # kept, `tools/train.py -c RUN/config.yml` (a natural way to repeat a run) would silently
        # continue RUN instead. --resume RUN sets Global.checkpoints itself.
        dump_config({**cfg, "Global": {**cfg["Global"], "checkpoints": None}}, os.path.join(run.run_dir, "config.yml"))


def prepare_model(run: TrainRun, addons: list[AddOn]) -> paddle.Model:
    """``paddle.Model`` over the network (hapi wraps it in DataParallel when world > 1), prepared."""
    extra = {}
    for a in addons:
        extra.update(a.prepare(run))
    run.model = model = paddle.Model(run.network)
    # regression: no hapi metric (Accuracy would argmax one output); eval reports loss/mae/rmse
    metric = None if run.bundle.task == "regression" else paddle.metric.Accuracy(topk=(1,), name="acc")
    model.prepare(run.optimizer, run.loss_fn, metric, **extra)
    return model


def assemble_callbacks(run: TrainRun, addons: list[AddOn], extra: Iterable = ()) -> list:
    """The callback list for ``fit``; the periodic evaluation and the stop-reason sources go into ``run``.

    Order: Progress, add-ons' ``first``, the NaN guard, add-ons' ``step``, the evaluation, the
    listeners (LR stepping, early stopping, checkpoints, console, VisualDL, add-ons' ``listen``,
    ``extra``), hapi's LRScheduler kept idle (we step it: LRStepper), add-ons' ``last``.
    """
    cfg, g = run.cfg, run.cfg["Global"]
    es = dict(cfg["EarlyStopping"])
    if run.val_loader is None:
        run.print_fn("warning: no validation set (Data.val_split is 0 and the data has no val split): "
                     "no evaluation, early stopping or best checkpoint in this run")
        es["enable"] = False
    run.progress = progress = cb.Progress(g["seed"], g["epochs"], run.steps_per_epoch, rank=run.rank)
    stopper = cb.EarlyStopping(es["monitor"], es["mode"], es["patience"], es["min_delta"])
    run.stateful = {"progress": progress, **({"early_stopping": stopper} if es["enable"] else {})}
    for name, obj in run.stateful.items():
        if name in run.state:
            obj.load_state_dict(run.state[name])
    ck = cfg["Checkpoint"]
    run.checkpointer = Checkpointer(run.store, progress, run.stateful, es["monitor"], es["mode"], ck["save_best"],
                                    ck["save_last"], ck["save_every_epochs"], write=run.main,
                                    every_minutes=ck["save_every_minutes"])
    topk = topk_for(cfg, run.bundle.num_classes)
    if run.world > 1:  # each rank evaluates its block; rank 0's logger gets the gathered logits
        vdl = cfg["VisualDL"]
        logits = vdl["enable"] and bool(vdl["sample_images"] or vdl["confidence_histogram"] or vdl["pr_curves"])
        run.eval_source = ranks.ShardedEval(run.network, run.val_loader, topk, cfg["Loss"]["label_smoothing"],
                                            keep_logits=logits, tta=cfg["Eval"]["tta"])
    else:
        regression = RegressionMetrics.from_bundle(cfg, run.bundle) if run.bundle.task == "regression" else None
        run.eval_source = LastEval(run.network, run.val_loader, topk, cfg["Loss"]["label_smoothing"], regression=regression,
                                   tta=cfg["Eval"]["tta"])
    run.eval_fn = run.eval_source
    lr_fn = lambda: current_lr(run.optimizer)  # noqa: E731
    logger = []
    if cfg["VisualDL"]["enable"] and run.main:
        try:
            run.writer = open_writer(run.run_dir)
        except Exception as e:  # an instrument: the run goes on without its curves
            run.print_fn(f"warning: VisualDL is off for this run: its log could not be opened ({type(e).__name__}: {e})")
    if run.writer is not None:
        # add_hparams runs in the logger's on_train_end, before the writer is closed after fit
        logger = [build_logger(cfg, run.writer, progress, lr_fn, run.eval_source, run.bundle,
                               best_fn=lambda: run.checkpointer.best_metrics, warn=run.print_fn)]
    nan_guard = cb.StopOnNaN(progress)
    run.stoppers = [("nan_guard", lambda: nan_guard.reason), ("early_stopping", lambda: stopper.stop_reason)]
    run.local_stop_reason = lambda: stop_reason(run)[0]
    slots = {s: [] for s in SLOTS}
    for a in addons:
        for slot, items in a.callbacks(run).items():
            slots[slot] += items
        run.stoppers.append((a.name, a.stop_reason))
    if run.resume:
        if "checkpointer" in run.state:
            run.checkpointer.load_state_dict(run.state["checkpointer"])
        damaged = ranks.broadcast_object(check_best(run.store) if run.main else None)
        if damaged:  # found now, not when it is restored at the end
            run.checkpointer.forget_best()
            run.print_fn(f"warning: {damaged}")
        run.print_fn(f"resuming {run.run_dir} at epoch {progress.epochs_done + 1}, step {progress.global_step}")
    console = ConsoleLogger(progress, lr_fn, g["log_every_iters"], g["verbose"], run.print_fn, es["monitor"],
                            best_fn=lambda: run.checkpointer.best_metrics)
    if run.val_loader is not None:  # a long evaluation says it started
        run.eval_fn = console.announce(run.eval_fn, len(run.bundle.val), run.eval_source)  # + progress lines
    listeners = [cb.LRStepper(run.scheduler), *([stopper] if es["enable"] else []), run.checkpointer, console,
                 *logger, *slots["listen"], *extra,
                 *([cb.OnEval(lambda logs: write_metrics(run, "running"))] if run.main else [])]
    run.evaluator = evaluator = cb.PeriodicEval(run.eval_fn, progress, g["eval_every_epochs"], g["eval_every_iters"],
                                                listeners)
    run.stateful["evaluation"] = evaluator  # the history survives resumes
    if "evaluation" in run.state:
        evaluator.load_state_dict(run.state["evaluation"])
    # Without a val set the listeners still get their training hooks; nothing calls on_eval_end.
    evaluation = [evaluator] if run.val_loader is not None else []
    epoch_aware = [cb.SetEpoch(progress, run.train_loader)] if hasattr(run.train_loader, "set_epoch") else []
    callbacks = [progress, *epoch_aware, *slots["first"], nan_guard, *slots["step"], *evaluation, *listeners,
                 paddle.callbacks.LRScheduler(by_step=False, by_epoch=False), *slots["last"]]
    return callbacks


def fit(run: TrainRun, model: paddle.Model, callbacks: list) -> None:
    """``model.fit`` over the epochs left (none when only finishing); the VisualDL log is closed whatever happens."""
    g, bundle = run.cfg["Global"], run.bundle
    procs = f", {run.world} processes x {run.cfg['DataLoader']['batch_size']} images per step" if run.world > 1 else ""
    run.print_fn(f"run directory: {run.run_dir}  ({run.device}, {os.environ.get('OMP_NUM_THREADS', '?')} threads{procs}, "
                 f"{len(bundle.train)} train / {len(bundle.val) if bundle.val is not None else 0} val images, "
                 f"{run.steps_per_epoch} steps/epoch)")
    model.stop_training = False  # hapi never resets it between fit() calls
    # hapi's Model._run_one_epoch(..., logs={}) has a mutable default: one dict shared by every
    # fit() in the process, so an earlier run's keys leak into this one's logs (a classification
    # run's 'acc' showed up as train/acc of a later regression run). Empty it before each fit.
    shared_logs = (paddle.Model._run_one_epoch.__defaults__ or (None,))[-1]
    if isinstance(shared_logs, dict):
        shared_logs.clear()
    remaining = 0 if run.finishing else g["epochs"] - run.progress.epochs_done
    t_fit = time.time()
    try:
        if remaining > 0:
            model.fit(resumable_loader(run), epochs=remaining, verbose=0, callbacks=callbacks)
    finally:
        run.fit_time = time.time() - t_fit
        if hasattr(model, "num_iters"):
            del model.num_iters
        if run.writer is not None:
            try:
                run.writer.close()
            except Exception as e:  # a full disk while flushing the log: the run's result stands
                run.print_fn(f"warning: the VisualDL log could not be closed ({type(e).__name__}: {e})")


def resumable_loader(run: TrainRun) -> object:
    """The training loader; resumed from a checkpoint taken inside an epoch, it skips the steps already done."""
    skip = run.progress.resume_step
    return ResumeMidEpoch(run.train_loader, skip, run.state.get("rng")) if skip else run.train_loader


def finish(run: TrainRun, addons: list[AddOn]) -> dict:
    """Restore the best weights, write ``metrics.json`` (rank 0), print the closing lines; returns the metrics."""
    es = run.cfg["EarlyStopping"]
    reason, stopped_by = stop_reason(run)
    restored = False
    if es["enable"] and es["restore_best"] and run.val_loader is not None:
        # rank 0 reads its own file; the others receive the weights (no shared file system needed)
        restored, warning = restore_best(run.network, run.store) if run.main else (None, None)
        restored = ranks.broadcast_object(restored)
        if warning:
            run.print_fn(f"warning: {warning}")
        if restored:
            ranks.broadcast_weights(run.network)
    metrics = run_metrics(run, "stopped" if reason else "finished", reason, stopped_by)
    metrics["restored_best_weights"] = restored
    for a in addons:
        a.finish(run, metrics)
    if run.main:
        write_metrics(run, metrics=metrics)
    best = metrics["best"]
    if reason:
        run.print_fn(f"stopped: {reason}")
    if best:
        mon = es["monitor"]
        run.print_fn(f"best {mon} {best.get(mon, float('nan')):.4f} at epoch {best.get('epoch')}; "
                     f"wall time {metrics['wall_time_s']:.1f}s; run directory {run.run_dir}")
    metrics["run_dir"] = run.run_dir
    return metrics


def read_metrics(run_dir: str) -> dict:
    """The ``metrics.json`` of a run directory."""
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)
