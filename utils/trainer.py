"""The training run: config -> data -> model -> ``paddle.Model.fit`` with our callbacks.

Functions, not an engine class: each step is reachable from tests and other tools.
``train(cfg)`` is what ``tools/train.py`` calls.
"""
import json
import os
import time
import warnings

from utils.build import build_network, network_input_side, new_run_dir, select_device, topk_for  # noqa: F401  (build_network: tests record the network the spine builds)
from utils.errors import UserError


def _record_data(cfg, bundle):
    """Write what the data turned out to be into the resolved config (reproducible from it alone)."""
    cfg["Data"]["num_classes"] = int(bundle.num_classes)
    cfg["Transforms"]["mean"] = [round(float(m), 6) for m in bundle.mean]
    cfg["Transforms"]["std"] = [round(float(s), 6) for s in bundle.std]
    if getattr(bundle, "task", "classification") == "regression":
        # eval and export de-normalize predictions with these (null when the target is not normalized)
        cfg["Data"]["target_mean"] = bundle.target_mean
        cfg["Data"]["target_std"] = bundle.target_std


def _quiet(*args, **kwargs):
    pass


def train(cfg, print_fn=print, callbacks=()):
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
    import paddle
    from paddle.utils import unique_name

    # hapi's train_batch wraps each batch with paddle.to_tensor(tensor), which warns once per run.
    warnings.filterwarnings("ignore", message="To copy construct from a tensor")
    # BatchNorm in train mode warns once per process "we now always track global mean and
    # variance": a notice about Paddle's behaviour, not about this run.
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")

    # Parameter and optimizer-accumulator names come from a global counter; a fresh
    # namespace gives every run the same names, so a checkpoint saved by one run loads
    # into another in the same process (the optimizer state is keyed by those names).
    with unique_name.guard():
        return _train(cfg, print_fn, paddle, callbacks)


def _train(cfg, print_fn, paddle, extra_callbacks=()):
    from models.summary import model_summary
    from utils.addons import distributed as dp
    from utils.config import dump_config
    from utils.data import build_datasets, build_loaders
    from utils.training import callbacks as cb
    from utils.training.checkpoint import CheckpointStore, load_optimizer, load_state, load_weights, resolve_checkpoint, save_json
    from utils.training.optim import build_loss, build_lr_scheduler, build_optimizer, current_lr, schedule_warnings

    g = cfg["Global"]
    t_start = time.time()
    device = select_device(g["device"])
    rank, world = dp.init()
    main = rank == 0
    rank_print = print_fn  # the one line every rank prints at the end
    if not main:
        print_fn = _quiet  # errors still reach each rank's log (--log_dir/workerlog.N) as exceptions
    cb.seed_everything(g["seed"])

    resume = resolve_checkpoint(g["checkpoints"]) if g["checkpoints"] else None
    state = load_state(resume) if resume else {}
    if state.get("finished") and state.get("progress", {}).get("epochs_done", 0) >= g["epochs"]:
        raise UserError(f"{resume}: that run already finished ({state['progress']['epochs_done']} epochs). "
                        f"To train longer, add -o Global.epochs=N with N larger")
    if resume and state.get("early_stopping", {}).get("stop_reason"):
        raise UserError(f"{resume}: that run stopped early ({state['early_stopping']['stop_reason']}); "
                        f"start a new run, e.g. with -o Global.pretrained_model={os.path.dirname(resume)}/best_model")
    if resume:
        was = state.get("data_parallel", {}).get("world_size", 1)
        if was != world:
            raise UserError(f"{resume}: that run trained with {was} process{'es' if was > 1 else ''}, this one has {world}: the global "
                            f"batch and the steps per epoch would change under the LR schedule. Resume it with "
                            f"{'python tools/train.py' if was == 1 else f'--nproc_per_node {was}'}, or start a new "
                            f"run from its weights with -o Global.pretrained_model={os.path.dirname(resume)}/latest")

    bundle = build_datasets(cfg)
    regression = bundle.task == "regression"
    if regression and world > 1:
        raise UserError("Global.task: regression runs in one process for now (its metrics are not all-reduced): "
                        "start it with python tools/train.py, without paddle.distributed.launch")
    train_loader, val_loader = build_loaders(cfg, bundle, rank, world)
    _record_data(cfg, bundle)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise UserError("the training loader is empty: lower DataLoader.batch_size or set DataLoader.drop_last=false")

    network = build_network(cfg, bundle)
    # --- fine-tuning (utils/addons/finetune.py): Global.pretrained_model (not on resume) with its report,
    # FineTune.freeze / lr_mult (before the optimizer and DataParallel see the parameters); the
    # two-stage callback rides with the extra callbacks (it follows the global epoch, so resumes need no state).
    from utils.addons.finetune import setup_finetune

    finetune_cb = setup_finetune(cfg, network, print_fn, resume_state=state if resume else None)
    if finetune_cb is not None:
        extra_callbacks = [*extra_callbacks, finetune_cb]
    # --- end fine-tuning
    side = network_input_side(bundle)
    summary = model_summary(network, [1, bundle.in_channels, side, side])
    flops = f", {summary['flops'] / 1e6:.1f} MFLOPs (multiply-adds)" if g["print_flops"] and summary.get("flops") else ""
    print_fn(f"model {cfg['Arch']['name']}: {summary['params']:,} parameters ({summary['trainable']:,} trainable){flops}")
    if g["verbose"] >= 2:
        print_fn(summary["table"])

    scheduler = build_lr_scheduler(cfg, steps_per_epoch, g["epochs"])
    optimizer = build_optimizer(cfg, network.parameters(), scheduler)
    loss_fn = build_loss(cfg, bundle.num_classes)
    for w in schedule_warnings(cfg, g["epochs"]):
        print_fn(f"warning: {w}")

    # Rank 0 creates the run directory (a timestamp name would differ across ranks) and tells the others.
    run_dir = os.path.dirname(resume) if resume else dp.on_main(lambda: new_run_dir(cfg))
    store = CheckpointStore(run_dir)
    if resume:  # every rank loads the same checkpoint (multi-node: the run directory on every node)
        load_weights(network, resume)
        load_optimizer(optimizer, resume)
    if main:
        # The run's config says how to train it, not where to resume from: with the resume path
        # kept, `tools/train.py -c RUN/config.yml` (a natural way to repeat a run) would silently
        # continue RUN instead. --resume RUN sets Global.checkpoints itself.
        dump_config({**cfg, "Global": {**g, "checkpoints": None}}, os.path.join(run_dir, "config.yml"))

    topk = topk_for(cfg, bundle.num_classes)
    # --- EMA (utils/addons/ema.py) and mixed precision (utils/addons/amp.py): AMP.level goes to model.prepare
    # (GPU only; on CPU a one-line warning and float32). The EMA averages the weights loaded above
    # (or, on resume, continues from <checkpoint>'s ema file); every rank keeps the same average,
    # rank 0 writes. Hooks below: prepare(amp_configs), checkpointer (best of raw/EMA, ema.pdparams),
    # the evaluation (both weights), the callback list (updates) and the final report.
    from utils.addons.amp import amp_configs_for
    from utils.addons.amp import wrap_eval as amp_eval
    from utils.addons.ema import build_ema

    amp_configs, amp_warning = amp_configs_for(cfg, device)
    if amp_warning:
        print_fn(f"warning: {amp_warning}")
    ema = build_ema(cfg, network, store, write=main, resume=resume, state=state, print_fn=print_fn)
    # --- end EMA
    model = paddle.Model(network)  # with world > 1 hapi wraps the network in DataParallel here
    # regression: no hapi metric (Accuracy would argmax one output); eval reports loss/mae/rmse
    model.prepare(optimizer, loss_fn, None if regression else paddle.metric.Accuracy(topk=(1,), name="acc"),
                  amp_configs=amp_configs)

    progress = cb.Progress(g["seed"], g["epochs"], steps_per_epoch, rank=rank)
    es_cfg = dict(cfg["EarlyStopping"])
    if val_loader is None:
        print_fn("warning: no validation set (Data.val_split is 0 and the data has no val split): "
                 "no evaluation, early stopping or best checkpoint in this run")
        es_cfg["enable"] = False
    stopper = cb.EarlyStopping(es_cfg["monitor"], es_cfg["mode"], es_cfg["patience"], es_cfg["min_delta"])
    stateful = {"progress": progress}
    if es_cfg["enable"]:
        stateful["early_stopping"] = stopper
    if world > 1:
        stateful["data_parallel"] = _Static({"world_size": world})
    ck = cfg["Checkpoint"]
    checkpointer = cb.Checkpointer(store, progress, stateful, es_cfg["monitor"], es_cfg["mode"],
                                   ck["save_best"], ck["save_last"], ck["save_every_epochs"], write=main)
    if ema is not None:  # EMA hook: best_model = better of raw/EMA; ema.pdparams beside latest
        checkpointer = ema.attach(checkpointer)
    if resume:
        for name, obj in stateful.items():
            if name in state:
                obj.load_state_dict(state[name])
        if "checkpointer" in state:
            checkpointer.load_state_dict(state["checkpointer"])
        print_fn(f"resuming {run_dir} at epoch {progress.epochs_done + 1}, step {progress.global_step}")

    lr_fn = lambda: current_lr(optimizer)  # noqa: E731
    listeners = [cb.LRStepper(scheduler)]
    if es_cfg["enable"]:
        listeners.append(stopper)
    listeners += [checkpointer, cb.ConsoleLogger(progress, lr_fn, g["log_every_iters"], g["verbose"], print_fn)]
    # --- VisualDL (utils/training/vdl.py): scalars; histograms, prediction images, confidence and PR curves
    # as the VisualDL section says. The evaluation keeps its logits for them: one val pass per eval.
    from utils.training.evaluate import LastEval
    from utils.training.vdl import build_logger, open_writer

    vdl = cfg["VisualDL"]
    if world > 1:  # each rank evaluates its block; rank 0's logger gets the gathered logits
        wants_logits = vdl["enable"] and bool(vdl["sample_images"] or vdl["confidence_histogram"] or vdl["pr_curves"])
        eval_fn = dp.ShardedEval(network, val_loader, topk, cfg["Loss"]["label_smoothing"], keep_logits=wants_logits)
    else:
        from utils.training.evaluate import RegressionMetrics

        eval_fn = LastEval(network, val_loader, topk, cfg["Loss"]["label_smoothing"],
                           regression=RegressionMetrics.from_bundle(cfg, bundle) if regression else None)
    writer = None
    if vdl["enable"] and main:
        writer = open_writer(run_dir)
        # add_hparams runs in the logger's on_train_end, before the writer is closed below
        listeners.append(build_logger(cfg, writer, progress, lr_fn, eval_fn, bundle,
                                      best_fn=lambda: checkpointer.best_metrics))
    # --- end VisualDL
    # --- training doctor (utils/doctor/): findings live, diagnosis.json written at each eval and at the end
    doctor = None
    if cfg["Doctor"]["enable"]:
        from utils.doctor import build_doctor

        # every rank runs it (its stop decisions must agree); rank 0 alone prints and writes
        doctor = build_doctor(cfg, bundle, network, progress, steps_per_epoch, run_dir if main else None, writer,
                              print_fn, sync_flag=dp.any_rank if world > 1 else None)
        if resume and "doctor" in state:
            doctor.load_state_dict(state["doctor"])
        stateful["doctor"] = doctor  # saved with every checkpoint (the Checkpointer holds this dict)
        listeners.append(doctor)
    # --- end training doctor
    listeners += list(extra_callbacks)
    eval_fn = amp_eval(ema.wrap_eval(eval_fn) if ema is not None else eval_fn, amp_configs)  # EMA/AMP hook
    evaluator = cb.PeriodicEval(eval_fn, progress,
                                g["eval_every_epochs"], g["eval_every_iters"], listeners)
    nan_guard = cb.StopOnNaN(progress)
    # Without a val set the listeners still get their training hooks; nothing calls on_eval_end.
    evaluation = [evaluator] if val_loader is not None else []
    agree = None
    parallel = []
    if world > 1:
        # after Progress (it sets the epoch), before anything that reads the step's loss
        parallel = [dp.EpochShuffle(train_loader.batch_sampler, progress, g["seed"]), dp.SyncTrainLogs(network)]
        agree = dp.AgreeStop(lambda: nan_guard.reason or stopper.stop_reason or (doctor.stop_reason if doctor else None))
    callbacks = [progress, *parallel, nan_guard, *([ema] if ema is not None else []), *evaluation, *listeners,
                 paddle.callbacks.LRScheduler(by_step=False, by_epoch=False)]  # we step it: LRStepper
    if agree is not None:
        callbacks.append(agree)  # last: after every callback that may ask to stop

    procs = f", {world} processes x {cfg['DataLoader']['batch_size']} images per step" if world > 1 else ""
    print_fn(f"run directory: {run_dir}  ({device}, {os.environ.get('OMP_NUM_THREADS', '?')} threads{procs}, "
             f"{len(bundle.train)} train / {len(bundle.val) if bundle.val is not None else 0} val images, {steps_per_epoch} steps/epoch)")
    model.stop_training = False  # hapi never resets it between fit() calls
    # hapi's Model._run_one_epoch(..., logs={}) has a mutable default: one dict shared by every
    # fit() in the process, so an earlier run's keys leak into this one's logs (a classification
    # run's 'acc' showed up as train/acc of a later regression run). Empty it before each fit.
    shared_logs = (paddle.Model._run_one_epoch.__defaults__ or (None,))[-1]
    if isinstance(shared_logs, dict):
        shared_logs.clear()
    remaining = g["epochs"] - progress.epochs_done
    t_fit = time.time()
    try:
        if remaining > 0:
            model.fit(train_loader, epochs=remaining, verbose=0, callbacks=callbacks)
    finally:
        fit_time = time.time() - t_fit
        if hasattr(model, "num_iters"):
            del model.num_iters
        if writer is not None:
            writer.close()

    stop_reason = (nan_guard.reason or stopper.stop_reason or (doctor.stop_reason if doctor else None)  # doctor: NaN input/weights
                   or (agree.reason if agree else None))
    restored = False
    if es_cfg["enable"] and es_cfg["restore_best"]:
        # rank 0 reads its own file; the others receive the weights (no shared file system needed)
        restored = dp.broadcast_object(store.exists("best_model") if main else None)
        if restored:
            if main:
                load_weights(network, store.prefix("best_model"))
            dp.broadcast_weights(network)
    last_eval = evaluator.history[-1] if evaluator.history else None
    metrics = {
        "config": cfg["_meta"]["config_path"],
        "model": cfg["Arch"]["name"],
        "epochs_run": progress.epochs_done if not stop_reason else progress.epoch + 1,
        "global_step": progress.global_step,
        "stopped_early": bool(stop_reason),
        "stop_reason": stop_reason,
        "final": last_eval,
        "best": checkpointer.best_metrics,
        "restored_best_weights": restored,
        "wall_time_s": round(time.time() - t_start, 2),
        "fit_time_s": round(fit_time, 2),
        "eval_time_s": round(sum(h["eval_time"] for h in evaluator.history), 2),
        "params": summary["params"],
        "flops": summary.get("flops"),
        "history": evaluator.history,
    }
    if world > 1:
        metrics.update(world_size=world, global_batch_size=world * cfg["DataLoader"]["batch_size"])
    if ema is not None:  # EMA hook: metrics['ema'] and one line saying which weights were better
        ema.report(metrics, es_cfg["monitor"], es_cfg["mode"], print_fn)
    if main:
        save_json(metrics, os.path.join(run_dir, "metrics.json"))
    best = checkpointer.best_metrics or {}
    if stop_reason:
        print_fn(f"stopped: {stop_reason}")
    if best:
        mon = es_cfg["monitor"]
        print_fn(f"best {mon} {best.get(mon, float('nan')):.4f} at epoch {best.get('epoch')}; "
                 f"wall time {metrics['wall_time_s']:.1f}s; run directory {run_dir}")
    if world > 1 and g["verbose"] >= 1:
        # one line per rank (each in its --log_dir/workerlog.N): the same digest on every rank = the same weights
        rank_print(f"rank {rank}/{world}: epochs_run {metrics['epochs_run']} global_step {progress.global_step} "
                   f"stopped_early {metrics['stopped_early']} weights {dp.state_digest(network)}")
    metrics["run_dir"] = run_dir
    return metrics


class _Static:
    """A fixed dict saved with every checkpoint (``state_dict``/``load_state_dict`` like the callbacks)."""

    def __init__(self, state):
        self.state = dict(state)

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, state):
        pass  # the resumed run's own values stand (checked against the checkpoint's before)


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)
