"""Data parallel: ``python -m paddle.distributed.launch --nproc_per_node N tools/train.py -c ...``.

The launcher starts N copies of the script (gloo on CPU, NCCL on GPUs); ``paddle.Model`` wraps the
network in ``DataParallel`` itself (gradients are averaged across ranks in backward). The spine
knows ranks only through ``utils/training/ranks.py`` (the sharded loaders and evaluation, rank 0
writing); this add-on, enabled when the world size is above 1, adds the callbacks that keep the
ranks in step:

* the data: hapi's ``fit`` shards only a ``Dataset`` it is given, not a ``DataLoader``, so
  ``utils.data.build_loaders`` builds the train loader on a ``DistributedBatchSampler`` and the
  validation loader on this rank's contiguous block (``utils.data.shard_range``: no padding, so
  no sample counted twice); :class:`EpochShuffle` sets the sampler's epoch to ``seed + epoch``
  (the sampler shuffles with ``RandomState(epoch)``: the same permutation on every rank, disjoint
  shards, and a resumed run repeats the order);
* :class:`SyncTrainLogs`: the logged training loss/accuracy are the means over ranks, and the
  BatchNorm running statistics are averaged at every epoch end and before every evaluation, so
  checkpoints and evaluations use the same buffers on every rank;
* :class:`AgreeStop`: a stop requested on any rank (NaN loss, the doctor, early stopping, a user
  callback) stops every rank after the same batch. Without it the rank that goes on pairs its
  next collectives with the wrong ones of the stopped rank (seen: rank 0 aborts on a gloo
  "Connection reset by peer"). The doctor's non-finite check is agreed the same way inside the
  optimizer step (``utils.doctor`` GradMonitor, ``sync_flag``), so every rank skips that update.

Cost per training step with world > 1: besides the gradient all-reduce, two or three all-reduces
of one or two numbers (~0.5 ms each with gloo on this 2-core CPU).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
from paddle.callbacks import Callback

from utils.errors import UserError
from utils.training.addon import AddOn, TrainRun
from utils.training.callbacks import request_stop
from utils.training.ranks import all_gather_object, all_reduce_sum, any_rank, average_buffers, state_digest, world_size

if TYPE_CHECKING:
    import paddle

    from utils.training.callbacks import Progress


class EpochShuffle(Callback):
    """``sampler.set_epoch(seed + epoch)`` at each epoch start (after :class:`Progress` set the epoch).

    ``DistributedBatchSampler`` shuffles with ``np.random.RandomState(self.epoch)`` and counts its
    epoch from 0 on its own: without this every run would shuffle alike whatever ``Global.seed``,
    and a resumed run would restart the order at epoch 0.
    """

    def __init__(self, sampler: paddle.io.DistributedBatchSampler, progress: Progress, seed: int) -> None:
        super().__init__()
        self.sampler = sampler
        self.progress = progress
        self.seed = int(seed)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.sampler.set_epoch((self.seed + self.progress.epoch) % (2**32))


class SyncTrainLogs(Callback):
    """Mean training loss and accuracy over ranks in the step's logs; BatchNorm buffers averaged at epoch end.

    Placed before every callback that reads ``logs['loss']`` (the NaN guard, the console, VisualDL,
    the doctor): they all see the loss of the global batch, identical on every rank, so a
    non-finite loss stops every rank at the same step. One all-reduce of two numbers per step.
    The epoch-end averaging comes before the evaluation and the checkpoints of that epoch end.
    """

    def __init__(self, network: paddle.nn.Layer) -> None:
        super().__init__()
        self.network = network

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        if not logs or "loss" not in logs:
            return
        loss = float(np.asarray(logs["loss"]).reshape(-1)[0])
        acc = logs.get("acc")
        acc_v = float(np.asarray(acc).reshape(-1)[0]) if acc is not None else 0.0
        total = all_reduce_sum([loss, acc_v]) / world_size()
        logs["loss"] = [float(total[0])]
        if acc is not None:
            logs["acc"] = float(total[1])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        average_buffers(self.network)


class AgreeStop(Callback):
    """Stop every rank when any rank asked to stop; the last callback, after every other one decided.

    ``reason_fn`` returns this rank's reason (or None); the agreed reason is the first one in rank
    order, so rank 0 can write it even when another rank decided; when some ranks asked without a
    reason (a user callback) and others did not ask, the reason names the first that asked. One
    all-reduce of one number per step and per epoch end.
    """

    def __init__(self, reason_fn: Callable[[], str | None] = lambda: None) -> None:
        super().__init__()
        self.reason_fn = reason_fn
        self.reason = None
        self.stopped = False

    def _agree(self) -> None:
        if self.stopped:
            return
        asked = bool(self.model.stop_training)
        if any_rank(asked):
            self.stopped = True
            votes = all_gather_object((asked, self.reason_fn()))
            # from the votes alone, so the same on every rank
            self.reason = next((reason for _, reason in votes if reason), None)
            if self.reason is None and not all(a for a, _ in votes):
                first = next(r for r, (a, _) in enumerate(votes) if a)
                self.reason = f"rank {first} asked to stop"
            request_stop(self.model)

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        self._agree()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._agree()


class _Static:
    """A fixed dict saved with every checkpoint (``state_dict``/``load_state_dict`` like the callbacks)."""

    def __init__(self, state: dict) -> None:
        self.state = dict(state)

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        pass  # the resumed run's own values stand (the spine checked them against the checkpoint's)


class DataParallel(AddOn):
    """Enabled when the launcher started more than one process: the callbacks that keep ranks in step."""

    name = "data_parallel"

    @classmethod
    def create(cls, run: TrainRun) -> DataParallel | None:
        if run.world <= 1:
            return None
        if run.cfg["Global"]["task"] == "regression":
            raise UserError("Global.task: regression runs in one process for now (its metrics are not all-reduced): "
                            "start it with python tools/train.py, without paddle.distributed.launch")
        return cls()

    def callbacks(self, run: TrainRun) -> dict[str, list]:
        run.stateful["data_parallel"] = _Static({"world_size": run.world})
        self.agree = AgreeStop(run.local_stop_reason)
        # after Progress (it sets the epoch), before anything that reads the step's loss
        first = [EpochShuffle(run.train_loader.batch_sampler, run.progress, run.cfg["Global"]["seed"]),
                 SyncTrainLogs(run.network)]
        return {"first": first, "last": [self.agree]}

    def stop_reason(self) -> str | None:
        return self.agree.reason

    def finish(self, run: TrainRun, metrics: dict) -> None:
        g = run.cfg["Global"]
        metrics.update(world_size=run.world, global_batch_size=run.world * run.cfg["DataLoader"]["batch_size"])
        if g["verbose"] >= 1:
            # one line per rank (each in its --log_dir/workerlog.N): the same digest on every rank = the same weights
            run.rank_print(f"rank {run.rank}/{run.world}: epochs_run {metrics['epochs_run']} global_step "
                           f"{run.progress.global_step} stopped_early {metrics['stopped_early']} "
                           f"weights {state_digest(run.network)}")
